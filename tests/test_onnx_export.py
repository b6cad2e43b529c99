"""The ONNX student: onnxruntime's logits equal the PyTorch student's, end to end through evaluate.py's
export and ptdistill-predict, without importing torch; bad scans and bad models get clear errors."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import compose_config, fabricated_student_checkpoint
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ptdistill.bench.batches import lidar_like_batch
from ptdistill.config import model_config
from ptdistill.data.collate import collate
from ptdistill.deploy.format import FORMAT_KEY, ONNX_FORMAT
from ptdistill.deploy.onnx_predict import load_onnx
from ptdistill.deploy.onnx_student import batch_inputs, export_onnx, student_metadata
from ptdistill.errors import UserError
from ptdistill.tasks.export import export_student
from ptdistill.tasks.predict import main

ROOT = Path(__file__).resolve().parents[1]
MAX_RELATIVE_ERROR = 1e-4
MIN_AGREEMENT = 0.9999

pytestmark = pytest.mark.usefixtures("one_thread")


def student(name: str, num_classes: int, in_channels: int = 4, seed: int = 0) -> torch.nn.Module:
    """A student of conf/model/<name>.yaml, away from its initialisation: BatchNorm statistics and the
    seg head perturbed, so that its logits vary across points and classes."""
    config = OmegaConf.to_container(model_config(name, in_channels, num_classes).model.student, resolve=True)
    torch.manual_seed(seed)
    model = instantiate(config)
    for name_, buffer in model.named_buffers():
        if name_.endswith(("running_mean", "running_var")):
            buffer.uniform_(0.5, 1.5)
    torch.nn.init.normal_(model.seg_head.weight, std=3.0)
    return model.eval()


def assert_same_logits(predictor, model, batch):
    with torch.inference_mode():
        expected = model(batch)["logits"].numpy()
    got = predictor.logits(batch_inputs(batch, predictor.spec))
    assert got.shape == expected.shape
    error = np.abs(got - expected).max() / np.abs(expected).max()
    agreement = (got.argmax(1) == expected.argmax(1)).mean()
    assert error <= MAX_RELATIVE_ERROR and agreement >= MIN_AGREEMENT, (error, agreement)
    return expected


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny student (conf/model/ptv3_tiny.yaml, 10 classes, 128-point patches) and its ONNX export."""
    model = student("ptv3_tiny", num_classes=10)
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx",
                       student_metadata({"_target_": "x"}, [f"c{i}" for i in range(10)], 0.05, None))
    return model, load_onnx(path)


@pytest.mark.parametrize("points, seed", [(90, 1), (700, 2), (2500, 3), (6000, 4)])
def test_onnxruntime_equals_the_torch_student(tiny, points, seed):
    """Point counts around and across the patch size: one short patch at every level (90), short patches
    at the coarse levels only, full patches everywhere; the graph was traced on another scan."""
    model, predictor = tiny
    batch = lidar_like_batch(num_points=points, grid_size=0.05, seed=seed)
    logits = assert_same_logits(predictor, model, batch)
    assert logits.std(axis=0).min() > 0.01  # logits that vary from point to point


@pytest.fixture(scope="module")
def tiny_standard(tiny, tmp_path_factory):
    """The tiny student exported with standard ops only (attention="onnx": MatMul + Softmax in 8 slices)."""
    model, predictor = tiny
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny_standard.onnx",
                       student_metadata({}, predictor.class_names, 0.05, None), attention="onnx")
    return model, load_onnx(path)


@pytest.mark.parametrize("points, seed", [(90, 1), (2500, 3)])
def test_the_standard_ops_graph_equals_the_torch_student(tiny, tiny_standard, points, seed):
    model, predictor = tiny_standard
    assert_same_logits(predictor, model, lidar_like_batch(num_points=points, grid_size=0.05, seed=seed))
    domains = {path: {node.domain for node in onnx.load(str(path)).graph.node}
               for path in (tiny[1].path, predictor.path)}
    assert domains[predictor.path] <= {"", "ai.onnx"} and "com.microsoft" in domains[tiny[1].path]


def test_several_scans_in_one_batch(tiny):
    """Scans of at least a patch each share one run; a short scan beside them is refused (patches of one
    length per level is what the graph reshapes)."""
    model, predictor = tiny
    scans = [lidar_like_batch(num_points=n, grid_size=0.05, seed=n) for n in (1500, 2300)]
    samples = [{"coord": s["coord"].numpy(), "grid_coord": s["grid_coord"].numpy(), "feat": s["feat"].numpy(),
                "segment": np.zeros(len(s["coord"]), np.int64), "name": "s"} for s in scans]
    assert_same_logits(predictor, model, collate(samples))
    short = lidar_like_batch(num_points=50, grid_size=0.05, seed=0)
    samples.append({"coord": short["coord"].numpy(), "grid_coord": short["grid_coord"].numpy(),
                    "feat": short["feat"].numpy(), "segment": np.zeros(50, np.int64), "name": "short"})
    with pytest.raises(ValueError, match="one length"):
        batch_inputs(collate(samples), predictor.spec)


@pytest.mark.slow
def test_onnxruntime_equals_the_torch_student_on_a_large_scan(tiny):
    model, predictor = tiny
    assert_same_logits(predictor, model, lidar_like_batch(num_points=30000, grid_size=0.05, seed=5))


@pytest.mark.slow
def test_paper_student(tmp_path):
    """The paper's 2.78M-parameter student (conf/model/ptv3.yaml, 1024-point patches) at ~5k points."""
    model = student("ptv3", num_classes=16)
    assert sum(p.numel() for p in model.parameters()) == 2_777_344
    path = export_onnx(model, tmp_path / "paper.onnx", student_metadata({}, [str(i) for i in range(16)], 0.05, None))
    assert_same_logits(load_onnx(path), model, lidar_like_batch(num_points=5000, grid_size=0.05, seed=6))


# --- end to end: evaluate.py task=export export.format=onnx, then ptdistill-predict ---------------

@pytest.fixture(scope="module")
def scan() -> np.ndarray:
    """(N, 4) float32 x, y, z, strength: a small ring-pattern scan, several points per 0.3 m voxel."""
    batch = lidar_like_batch(num_points=1500, grid_size=0.02, seed=3)
    return torch.cat([batch["coord"], batch["feat"][:, 3:]], dim=1).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A fabricated train.py checkpoint of the tiny student, exported both ways: (cfg, student.onnx, student.pt)."""
    tmp_path = tmp_path_factory.mktemp("export")
    cfg = compose_config(tmp_path, "task=export", "export.format=onnx", f"export.path={tmp_path}/student.onnx",
                         config="evaluate")
    fabricated_student_checkpoint(cfg, tmp_path / "last.ckpt")
    cfg.ckpt_path = str(tmp_path / "last.ckpt")
    onnx_path = export_student(cfg)
    torch_cfg = copy.deepcopy(cfg)
    torch_cfg.export.format, torch_cfg.export.path = "torch", str(tmp_path / "student.pt")
    return cfg, onnx_path, export_student(torch_cfg)


def predict_cli(*args) -> int:
    return main([str(arg) for arg in args])


def test_export_writes_the_metadata(exported):
    cfg, path, _ = exported
    assert path.suffix == ".onnx" and path.is_file()
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta[FORMAT_KEY] == ONNX_FORMAT == "ptdistill-onnx/1"
    assert json.loads(meta["ptdistill.class_names"]) == list(cfg.dataset.class_names)
    assert float(meta["ptdistill.grid_size"]) == cfg.dataset.grid_size
    assert json.loads(meta["ptdistill.learning_map_inv"]) == {str(k): v for k, v in
                                                              cfg.dataset.learning_map_inv.items()}
    config = json.loads(meta["ptdistill.model_config"])
    assert config["_target_"] == "ptdistill.models.ptv3.segmentor.PTv3Segmentor"
    assert config["enc_channels"] == list(cfg.model.student.enc_channels) and "checkpoint" not in config
    predictor = load_onnx(path)
    assert predictor.learning_map_inv == dict(cfg.dataset.learning_map_inv)
    assert predictor.class_names == list(cfg.dataset.class_names) and predictor.grid_size == cfg.dataset.grid_size


def test_onnx_predictions_equal_the_torch_artifacts(exported, scan, tmp_path):
    _, onnx_path, torch_path = exported
    ring = np.arange(len(scan), dtype=np.float32)[:, None] % 32
    scan.tofile(tmp_path / "000000.bin")  # SemanticKITTI: x, y, z, remission
    np.concatenate([scan[:, :3], scan[:, 3:] * 255, ring], axis=1).astype(np.float32).tofile(tmp_path / "a.pcd.bin")
    np.save(tmp_path / "points.npy", scan.astype(np.float64))
    for name in ("000000.bin", "a.pcd.bin", "points.npy"):
        assert predict_cli(tmp_path / name, "--model", torch_path, "--out", tmp_path / f"{name}.torch.npy") == 0
        assert predict_cli(tmp_path / name, "--model", onnx_path, "--out", tmp_path / f"{name}.label",
                           "--threads", 1) == 0
        expected = np.load(tmp_path / f"{name}.torch.npy")
        assert len(expected) == len(scan) and len(np.unique(expected)) > 1
        np.testing.assert_array_equal(np.fromfile(tmp_path / f"{name}.label", dtype=np.uint32), expected)


def test_export_refuses_a_bad_format_or_path(exported):
    cfg = copy.deepcopy(exported[0])
    cfg.export.format = "tflite"
    with pytest.raises(UserError, match="export.format='tflite'"):
        export_student(cfg)
    cfg.export.format, cfg.export.path = "onnx", "student.pt"
    with pytest.raises(UserError, match="must end in .onnx"):
        export_student(cfg)
    cfg.export.format, cfg.export.path = "torch", "student.onnx"
    with pytest.raises(UserError, match="needs export.format=onnx"):
        export_student(cfg)
    cfg.export.format, cfg.export.onnx_attention = "onnx", "flash"
    with pytest.raises(UserError, match="export.onnx_attention='flash'"):
        export_student(cfg)


def test_export_format_defaults_to_torch(tmp_path):
    assert compose_config(tmp_path, "task=export", config="evaluate").export.format == "torch"


BAD_SCANS = {
    "NaN point": ("nan.npy", lambda scan, path: np.save(path, np.where(np.arange(len(scan))[:, None] == 7, np.nan,
                                                                         scan)), "NaN"),
    "no points": ("empty.bin", lambda scan, path: path.write_bytes(b""), "empty scan"),
    "truncated .bin": ("000000.bin", lambda scan, path: path.write_bytes(scan.tobytes()[:-6]), "not a multiple"),
    "x, y, z only": ("xyz.npy", lambda scan, path: np.save(path, scan[:, :3]), "x, y, z only"),
    "missing file": ("absent.bin", lambda scan, path: None, "does not exist"),
}


@pytest.mark.parametrize("case", BAD_SCANS)
def test_bad_scans_get_a_clear_error(case, exported, scan, tmp_path, capsys):
    _, onnx_path, _ = exported
    name, write, message = BAD_SCANS[case]
    write(scan, tmp_path / name)
    assert predict_cli(tmp_path / name, "--model", onnx_path, "--out", tmp_path / "labels.label") == 1
    error = capsys.readouterr().err
    assert error.startswith("ptdistill-predict: error:") and name in error and message in error
    assert not (tmp_path / "labels.label").exists()


def _rewrite_format(source: Path, target: Path, value: str | None) -> Path:
    model = onnx.load(str(source))
    props = [(p.key, p.value) for p in model.metadata_props if p.key != FORMAT_KEY]
    if value is not None:
        props.append((FORMAT_KEY, value))
    del model.metadata_props[:]
    for key, val in props:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, val
    onnx.save(model, str(target))
    return target


def _junk(path: Path) -> Path:
    path.write_bytes(b"not a model")
    return path


def _foreign_onnx(path: Path) -> Path:
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "other",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 4])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 4])])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)], ir_version=9), str(path))
    return path


BAD_MODELS = {
    "not ONNX": (lambda tmp, good: _junk(tmp / "junk.onnx"), "cannot read"),
    "another ONNX model": (lambda tmp, good: _foreign_onnx(tmp / "other.onnx"), "not a ptdistill ONNX student"),
    "no format": (lambda tmp, good: _rewrite_format(good, tmp / "plain.onnx", None), "not a ptdistill ONNX student"),
    "newer format": (lambda tmp, good: _rewrite_format(good, tmp / "newer.onnx", "ptdistill-onnx/2"),
                     "newer than this ptdistill reads"),
    "missing": (lambda tmp, good: tmp / "absent.onnx", "does not exist"),
}


@pytest.mark.parametrize("case", BAD_MODELS)
def test_bad_models_get_a_clear_error(case, exported, scan, tmp_path, capsys):
    _, onnx_path, _ = exported
    make, message = BAD_MODELS[case]
    model = make(tmp_path, onnx_path)
    scan.tofile(tmp_path / "000000.bin")
    assert predict_cli(tmp_path / "000000.bin", "--model", model, "--out", tmp_path / "labels.label") == 1
    error = capsys.readouterr().err
    assert error.startswith("ptdistill-predict: error:") and model.name in error and message in error
    assert not (tmp_path / "labels.label").exists()


def test_onnx_path_refuses_another_device(exported, scan, tmp_path, capsys):
    _, onnx_path, _ = exported
    scan.tofile(tmp_path / "000000.bin")
    assert predict_cli(tmp_path / "000000.bin", "--model", onnx_path, "--out", tmp_path / "l.label",
                       "--device", "cuda") == 1
    assert "runs on the CPU" in capsys.readouterr().err and not (tmp_path / "l.label").exists()


def test_cli_predicts_without_torch(exported, scan, tmp_path):
    """The console script in a fresh interpreter where `import torch` fails: labels equal the torch
    artifact's, a bad scan gets its one-line error, and torch was never imported."""
    _, onnx_path, torch_path = exported
    scan.tofile(tmp_path / "000000.bin")
    (tmp_path / "bad.bin").write_bytes(scan.tobytes()[:-1])
    assert predict_cli(tmp_path / "000000.bin", "--model", torch_path, "--out", tmp_path / "torch.npy") == 0
    script = (
        "import sys; sys.modules['torch'] = None; "  # any import of torch now raises ImportError
        "from ptdistill.deploy.cli import main; "
        f"ok = main([{str(tmp_path / '000000.bin')!r}, '--model', {str(onnx_path)!r}, '--out', "
        f"{str(tmp_path / 'l.label')!r}]); "
        f"bad = main([{str(tmp_path / 'bad.bin')!r}, '--model', {str(onnx_path)!r}, '--out', "
        f"{str(tmp_path / 'b.label')!r}]); "
        "del sys.modules['torch']; "
        "stack = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'hydra', 'omegaconf', 'lightning'}); "
        "print(ok, bad, stack)"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.stdout.strip().splitlines()[-1] == "0 1 []", result.stderr
    assert "Traceback" not in result.stderr and "bad.bin" in result.stderr
    np.testing.assert_array_equal(np.fromfile(tmp_path / "l.label", dtype=np.uint32), np.load(tmp_path / "torch.npy"))
    assert not (tmp_path / "b.label").exists()
