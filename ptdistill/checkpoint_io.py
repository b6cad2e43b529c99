"""Reading checkpoint files: the one place that calls `torch.load`, and what a train.py checkpoint holds.

Files from elsewhere are untrusted: `torch.load` runs with `weights_only=True`, and a file that needs
full unpickling is refused unless the caller trusts it. A missing, corrupt or refused file is one
UserError line.
"""

import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ptdistill.errors import UserError

log = logging.getLogger(__name__)


def read_torch_file(path: str | Path, what: str = "checkpoint", map_location: str = "cpu", trust: bool = False,
                    trust_option: str | None = None) -> Any:
    """The content of the torch file `path`, which errors call `what`; `trust_option` names the setting
    that trusts a file that needs full unpickling, when the caller has one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as error:
        if not zipfile.is_zipfile(path):  # torch.save writes zip archives
            raise UserError(f"{what} {path} is not a readable torch file: {error}") from None
        hint = f" Pass {trust_option}=True only for a file you trust." if trust_option else ""
        raise UserError(f"{what} {path} holds objects that need full unpickling, which can run arbitrary code; "
                        f"it was refused.{hint}") from None
    except Exception as error:  # torch raises several types for corrupt files
        raise UserError(f"{what} {path} is not a readable torch file: {error}") from None


def load_checkpoint(path: str | Path) -> dict:
    """A train.py checkpoint (weights-only)."""
    checkpoint = read_torch_file(path)
    if "hyper_parameters" not in checkpoint or "model" not in checkpoint["hyper_parameters"]:
        raise UserError(f"{path} is not a ptdistill train.py checkpoint (no model config inside)")
    return checkpoint


def checkpoint_model(path: str | Path) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """The trained model of a train.py checkpoint (the student of a distillation run): its config
    (with `_target_`), its state dict and the module's hyperparameters."""
    checkpoint = load_checkpoint(path)
    hparams = checkpoint["hyper_parameters"]
    prefix = "model."  # the LightningModule's attribute
    weights = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    return dict(hparams["model"]), weights, hparams


def trained_grid_size(hparams: dict, configured: float, checkpoint: str | Path) -> float:
    """The voxel size (m) a checkpoint was trained at, warning when it is not the `configured` one; for a
    checkpoint from before it was stored, the configured one."""
    trained = hparams.get("grid_size")
    if trained is None:
        log.warning("checkpoint %s does not record its grid size: using dataset.grid_size=%g; pass the one it "
                    "was trained at", checkpoint, configured)
        return float(configured)
    if trained != configured:
        log.warning("checkpoint %s was trained at grid %g m: using that, not dataset.grid_size=%g",
                    checkpoint, trained, configured)
    return float(trained)
