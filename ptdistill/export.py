"""`evaluate.py task=export`: the trained student as a self-contained artifact for `ptdistill-predict`.

    python evaluate.py task=export ckpt_path=STUDENT.ckpt dataset=NAME [export.path=student.pt]

The artifact is a weights-only torch file (the format and why it is not torch.export or TorchScript:
`ptdistill.predict`). The grid size comes from the dataset config, which must match the checkpoint's
classes.
"""

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor

from ptdistill.errors import UserError
from ptdistill.evaluation import checkpoint_model
from ptdistill.predict import ARTIFACT_FORMAT, MODEL_CLASSES, load_artifact

log = logging.getLogger(__name__)

BUILD_ONLY_ARGS = ("checkpoint", "trust_checkpoint")  # construction-time file loading; the artifact holds the weights


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
    model_config, weights, hparams = checkpoint_model(cfg.ckpt_path)
    if hparams["num_classes"] != cfg.dataset.num_classes:
        raise UserError(f"checkpoint {cfg.ckpt_path} predicts {hparams['num_classes']} classes, "
                        f"dataset={cfg.dataset.name} has {cfg.dataset.num_classes}: pass the dataset it was trained on")
    out = Path(cfg.export.path or Path(cfg.paths.output_dir) / "student.pt")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(student_artifact(model_config, weights, hparams["class_names"], cfg.dataset.grid_size), out)
    student = load_artifact(out)
    params = sum(p.numel() for p in student.model.parameters())
    log.info("Wrote %s: %s, %d parameters, %d classes, grid %.3g m", out, type(student.model).__name__, params,
             len(student.class_names), student.grid_size)
    print(f"wrote {out}; predict with: ptdistill-predict SCAN --model {out} --out LABELS.label")
    return out
