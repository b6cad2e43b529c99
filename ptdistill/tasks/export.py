"""`evaluate.py task=export`: the trained student as a self-contained artifact for `ptdistill-predict`.

    python evaluate.py task=export ckpt_path=STUDENT.ckpt dataset=NAME [export.format=torch|onnx] [export.path=...]

- `export.format=torch` (default): `student.pt`, a weights-only torch file (the format and why it is
  not torch.export or TorchScript: `ptdistill.tasks.predict`);
- `export.format=onnx`: `student.onnx`, the eval forward as an ONNX graph (opset 18, dynamic point
  counts) that onnxruntime runs without torch after numpy preprocessing (`ptdistill.deploy`;
  `export.onnx_attention`: onnxruntime's fused attention kernel, or standard ops for other runtimes). Its
  metadata_props hold the format version, class names, grid size, the dataset's learning_map_inv
  (when it has one), the model config and the graph's input spec (`ptdistill.deploy.format`). The
  export is checked against the PyTorch student on a synthetic scan before it is reported written.
  Needs `pip install 'ptdistill[onnx]'`.

The grid size is the one the checkpoint was trained at; the dataset config must match its classes.
"""

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from ptdistill.checkpoint_io import checkpoint_model, trained_grid_size
from ptdistill.errors import UserError
from ptdistill.tasks.predict import ARTIFACT_FORMAT, MODEL_CLASSES, build_student, load_artifact

log = logging.getLogger(__name__)

BUILD_ONLY_ARGS = ("checkpoint", "trust_checkpoint")  # construction-time file loading; the artifact holds the weights
FORMATS = {"torch": ".pt", "onnx": ".onnx"}  # export.format -> file suffix
ONNX_CHECK_TOLERANCE = 1e-4  # max |logit difference| / max |logit|
ONNX_CHECK_AGREEMENT = 0.9999  # argmax agreement


def student_artifact(model_config: dict, state_dict: dict[str, Tensor], class_names: list[str],
                     grid_size: float) -> dict:
    """The artifact's content: plain types and tensors only, so `torch.load(weights_only=True)` reads it."""
    target = model_config.get("_target_")
    if target not in MODEL_CLASSES:
        raise UserError(f"cannot export model class {target!r}; exportable: {sorted(MODEL_CLASSES)}")
    args = {k: v for k, v in model_config.items() if k != "_target_" and k not in BUILD_ONLY_ARGS}
    return {
        "format": ARTIFACT_FORMAT,
        "model_class": target,
        "model_args": args,
        "state_dict": state_dict,
        "class_names": list(class_names),
        "grid_size": float(grid_size),
    }


def export_student(cfg: DictConfig) -> Path:
    """Write the artifact of `cfg.ckpt_path` and check that it loads back."""
    if not cfg.ckpt_path:
        raise UserError("evaluate.py task=export needs ckpt_path=PATH (a train.py checkpoint)")
    export_format = cfg.export.get("format", "torch")
    if export_format not in FORMATS:
        raise UserError(f"export.format={export_format!r}: choose one of {sorted(FORMATS)}")
    suffix = FORMATS[export_format]
    out = Path(cfg.export.path or Path(cfg.paths.output_dir) / f"student{suffix}")
    if (out.suffix == ".onnx") != (export_format == "onnx"):  # ptdistill-predict picks the runtime by the suffix
        raise UserError(f"export.path={out} with export.format={export_format}: " + (
            "an ONNX export must end in .onnx" if export_format == "onnx" else
            "a .onnx path needs export.format=onnx (a torch artifact must not end in .onnx)"))
    model_config, weights, hparams = checkpoint_model(cfg.ckpt_path)
    if hparams["num_classes"] != cfg.dataset.num_classes:
        raise UserError(f"checkpoint {cfg.ckpt_path} predicts {hparams['num_classes']} classes, "
                        f"dataset={cfg.dataset.name} has {cfg.dataset.num_classes}: pass the dataset it was trained on")
    grid_size = trained_grid_size(hparams, cfg.dataset.grid_size, cfg.ckpt_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if export_format == "onnx":
        return export_onnx_student(cfg, student_artifact(model_config, weights, hparams["class_names"], grid_size), out)
    torch.save(student_artifact(model_config, weights, hparams["class_names"], grid_size), out)
    student = load_artifact(out)
    params = sum(p.numel() for p in student.model.parameters())
    log.info("Wrote %s: %s, %d parameters, %d classes, grid %.3g m", out, type(student.model).__name__, params,
             len(student.class_names), student.grid_size)
    print(f"wrote {out}; predict with: ptdistill-predict SCAN --model {out} --out LABELS.label")
    return out


def export_onnx_student(cfg: DictConfig, artifact: dict, out: Path) -> Path:
    """Write `student.onnx` from an artifact's content and check it against the PyTorch student."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError("export.format=onnx needs onnx and onnxruntime: pip install 'ptdistill[onnx]'") from None
    from ptdistill.deploy.onnx_student import ATTENTION, check_export, export_onnx, student_metadata

    student = build_student(artifact, cfg.ckpt_path)
    learning_map_inv = cfg.dataset.get("learning_map_inv")
    if learning_map_inv is not None:
        learning_map_inv = OmegaConf.to_container(learning_map_inv, resolve=True)
    model_config = {"_target_": artifact["model_class"], **_plain(artifact["model_args"])}
    metadata = student_metadata(model_config, student.class_names, student.grid_size, learning_map_inv)
    attention = cfg.export.get("onnx_attention", "ort")
    if attention not in ATTENTION:
        raise UserError(f"export.onnx_attention={attention!r}: choose one of {list(ATTENTION)}")
    export_onnx(student.model, out, metadata, attention=attention)
    for points in cfg.export.get("onnx_check_points", [3000]):
        error, agreement = check_export(student.model, out, int(points))
        if not (error <= ONNX_CHECK_TOLERANCE and agreement >= ONNX_CHECK_AGREEMENT):
            out.unlink()
            raise RuntimeError(f"the ONNX export differs from the PyTorch student on a synthetic scan of {points} "
                               f"voxels: relative logit error {error:.3g} (at most {ONNX_CHECK_TOLERANCE:g}), argmax "
                               f"agreement {agreement:.4%} (at least {ONNX_CHECK_AGREEMENT:.2%}); removed {out}")
        log.info("On a %d-voxel synthetic scan, onnxruntime's logits are within %.2g (relative) of the PyTorch "
                 "student's; argmax agreement %.4f%%", points, error, 100 * agreement)
    params = sum(p.numel() for p in student.model.parameters())
    log.info("Wrote %s: ONNX opset %d, %d parameters, %d classes, grid %.3g m", out, _opset(out), params,
             len(student.class_names), student.grid_size)
    print(f"wrote {out}; predict with: ptdistill-predict SCAN --model {out} --out LABELS.label")
    return out


def _plain(value):
    """A JSON-ready copy of config values (OmegaConf containers, tuples, numpy scalars)."""
    if isinstance(value, (DictConfig,)) or OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
