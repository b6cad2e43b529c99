"""The exported student predicts what the eager student predicts; the predict CLI and its bad input."""

import copy
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config, fabricated_student_checkpoint
from hydra.utils import instantiate

from ptdistill.bench.batches import lidar_like_batch
from ptdistill.data.collate import collate
from ptdistill.errors import UserError
from ptdistill.tasks.export import export_student
from ptdistill.tasks.predict import load_artifact, main

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def scan() -> np.ndarray:
    """(N, 4) float32 x, y, z, strength: a small ring-pattern scan, several points per 0.3 m voxel."""
    batch = lidar_like_batch(num_points=1500, grid_size=0.02, seed=3)
    return torch.cat([batch["coord"], batch["feat"][:, 3:]], dim=1).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A fabricated train.py checkpoint of the tiny student, exported; its BatchNorm statistics and seg head
    are perturbed so that it is not at its initialisation and labels points differently."""
    tmp_path = tmp_path_factory.mktemp("export")
    cfg = compose_config(tmp_path, "task=export", f"export.path={tmp_path}/student.pt", config="evaluate")
    model = fabricated_student_checkpoint(cfg, tmp_path / "last.ckpt")
    cfg.ckpt_path = str(tmp_path / "last.ckpt")
    return cfg, export_student(cfg), model


def eager_labels(cfg, model, points: np.ndarray) -> np.ndarray:
    """The eager student through the dataset's own evaluation transform and collate."""
    sample = {"coord": points[:, :3].copy(), "strength": points[:, 3:].copy(),
              "segment": np.full(len(points), -1), "name": "scan"}
    batch = collate([instantiate(cfg.dataset.datamodule.eval_transform)(sample, np.random.default_rng(0))])
    with torch.inference_mode():
        return model(batch)["logits"].argmax(1)[batch["inverse"]].numpy()


def predict_cli(*args) -> int:
    return main([str(arg) for arg in args])


def test_artifact_predicts_what_the_eager_student_predicts(exported, scan, tmp_path):
    cfg, artifact, model = exported
    student = load_artifact(artifact)
    assert student.class_names == list(cfg.dataset.class_names) and student.grid_size == cfg.dataset.grid_size
    expected = eager_labels(cfg, model, scan)
    assert len(np.unique(expected)) > 1  # a constant labelling would prove little

    scan.tofile(tmp_path / "000000.bin")  # SemanticKITTI: x, y, z, remission
    assert predict_cli(tmp_path / "000000.bin", "--model", artifact, "--out", tmp_path / "000000.label") == 0
    np.testing.assert_array_equal(np.fromfile(tmp_path / "000000.label", dtype=np.uint32), expected)

    ring = np.arange(len(scan), dtype=np.float32)[:, None] % 32
    nuscenes = np.concatenate([scan[:, :3], scan[:, 3:] * 255, ring], axis=1)  # intensity 0-255, ring
    nuscenes.astype(np.float32).tofile(tmp_path / "scan.pcd.bin")
    assert predict_cli(tmp_path / "scan.pcd.bin", "--model", artifact, "--out", tmp_path / "scan.npy") == 0
    np.testing.assert_array_equal(np.load(tmp_path / "scan.npy"), expected)

    np.save(tmp_path / "points.npy", scan.astype(np.float64))
    assert predict_cli(tmp_path / "points.npy", "--model", artifact, "--out", tmp_path / "points.npy.label") == 0
    np.testing.assert_array_equal(np.fromfile(tmp_path / "points.npy.label", dtype=np.uint32), expected)


def test_artifact_is_weights_only_and_names_an_allowed_class(exported, tmp_path):
    _, artifact, _ = exported
    content = torch.load(artifact, weights_only=True)
    content["model_class"] = "os.system"
    torch.save(content, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="not one of"):
        load_artifact(tmp_path / "evil.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a ptdistill student artifact"):
        load_artifact(tmp_path / "other.pt")


def test_export_refuses_a_checkpoint_of_another_dataset(exported):
    cfg = copy.deepcopy(exported[0])
    cfg.dataset.num_classes += 1
    with pytest.raises(UserError, match="classes"):
        export_student(cfg)
    cfg.ckpt_path = None
    with pytest.raises(UserError, match="needs ckpt_path"):
        export_student(cfg)


BAD_SCANS = {
    "truncated .bin": ("000000.bin", lambda scan, path: path.write_bytes(scan.tobytes()[:-6]), "not a multiple"),
    "SemanticKITTI records as .pcd.bin": ("a.pcd.bin", lambda scan, path: scan[:7].tofile(path), "not a multiple"),
    "wrong extension": ("scan.ply", lambda scan, path: scan.tofile(path), "unknown scan type"),
    "NaN point": ("nan.npy", lambda scan, path: np.save(path, np.where(np.arange(len(scan))[:, None] == 7, np.nan,
                                                                         scan)), "NaN"),
    "bad .npy shape": ("flat.npy", lambda scan, path: np.save(path, scan[:, :2]), r"\(N, 3\) or \(N, 4\)"),
    "x, y, z only": ("xyz.npy", lambda scan, path: np.save(path, scan[:, :3]), "x, y, z only"),
    "missing file": ("absent.bin", lambda scan, path: None, "does not exist"),
}


@pytest.mark.parametrize("case", BAD_SCANS)
def test_bad_scans_get_a_clear_error(case, exported, scan, tmp_path, capsys):
    _, artifact, _ = exported
    name, write, message = BAD_SCANS[case]
    write(scan, tmp_path / name)
    assert predict_cli(tmp_path / name, "--model", artifact, "--out", tmp_path / "labels.label") == 1
    error = capsys.readouterr().err
    assert error.startswith("ptdistill-predict: error:") and name in error
    assert re.search(message, error)
    assert not (tmp_path / "labels.label").exists()


def test_bad_output_or_model_gets_a_clear_error(exported, scan, tmp_path, capsys):
    _, artifact, _ = exported
    scan.tofile(tmp_path / "000000.bin")
    assert predict_cli(tmp_path / "000000.bin", "--model", artifact, "--out", tmp_path / "labels.txt") == 1
    assert "unknown label file type '.txt'" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    assert predict_cli(tmp_path / "000000.bin", "--model", tmp_path / "junk.pt", "--out", tmp_path / "l.label") == 1
    assert "junk.pt" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_runs_without_hydra_or_lightning(exported, scan, tmp_path):
    """The console script's `main`, in a fresh interpreter: no training stack, and no traceback on bad input."""
    _, artifact, _ = exported
    scan.tofile(tmp_path / "000000.bin")
    (tmp_path / "bad.bin").write_bytes(scan.tobytes()[:-1])
    script = (
        "import sys; from ptdistill.tasks.predict import main; "
        f"ok = main([{str(tmp_path / '000000.bin')!r}, '--model', {str(artifact)!r}, '--out', "
        f"{str(tmp_path / 'l.label')!r}]); "
        f"bad = main([{str(tmp_path / 'bad.bin')!r}, '--model', {str(artifact)!r}, '--out', "
        f"{str(tmp_path / 'b.label')!r}]); "
        "stack = sorted({m.split('.')[0] for m in sys.modules} & {'hydra', 'omegaconf', 'lightning', "
        "'pytorch_lightning', 'lightning_fabric'}); "
        "print(ok, bad, stack)"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "0 1 []", result.stderr
    assert "Traceback" not in result.stderr and "bad.bin" in result.stderr
    assert len(np.fromfile(tmp_path / "l.label", dtype=np.uint32)) == len(scan)


def test_export_voxelises_at_the_grid_the_checkpoint_was_trained_at(exported, tiny_config, tmp_path):
    cfg = copy.deepcopy(exported[0])
    checkpoint = torch.load(cfg.ckpt_path, weights_only=False)
    checkpoint["hyper_parameters"]["grid_size"] = trained = 2 * cfg.dataset.grid_size
    torch.save(checkpoint, tmp_path / "trained.ckpt")
    cfg.ckpt_path, cfg.export.path = str(tmp_path / "trained.ckpt"), str(tmp_path / "student.pt")
    assert load_artifact(export_student(cfg)).grid_size == trained  # not the config's
    for stage in ("teacher", "student", "distill"):  # every train.py checkpoint records it
        train_cfg = tiny_config(f"stage={stage}", "dataset.grid_size=0.25")
        assert instantiate(train_cfg.stage.module).hparams.grid_size == 0.25
