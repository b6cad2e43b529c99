"""Per-point labels of one LiDAR scan from an exported torch student, without the training stack.

    ptdistill-predict SCAN --model ARTIFACT --out LABELS [--device cpu]

The console script is `ptdistill.deploy.cli:main` (also `main` here): it sends an `.onnx` model to
`ptdistill.deploy.onnx_predict` (onnxruntime, no torch) and anything else here. Scan and label files:
`ptdistill.deploy.scan` (re-exported here). The scan is grid-sampled as in evaluation, the student
labels every voxel, and every original point gets its voxel's label (the class index, 0-based, in
the artifact's `class_names` order).

ARTIFACT (written by `python evaluate.py task=export`) is a weights-only torch file: the student's
class (from an allow-list) and constructor arguments, its state dict, class names and grid size.
Not torch.export or TorchScript: PTv3's forward is data-dependent Python (input
checks, `unique`, neighbour search by `searchsorted`, split sizes and patch layouts from `.tolist()`),
which torch.export cannot trace (`GuardOnDataDependentSymNode` at the first check) and TorchScript
cannot compile (dataclasses, cached neighbour maps). So the artifact rebuilds the model from this
package's plain-PyTorch code, which imports neither Hydra nor Lightning. (The ONNX export,
`ptdistill.deploy.onnx_student`, moves that index work out of the graph into numpy instead.)
"""

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ptdistill.checkpoint_io import read_torch_file
from ptdistill.data.collate import collate
from ptdistill.data.transforms import Compose, ConcatFeatures, GridSample
from ptdistill.deploy.cli import main
from ptdistill.deploy.scan import (
    LABEL_DTYPES,
    NUSCENES_INTENSITY_MAX,
    SCAN_FIELDS,
    label_dtype,
    read_scan,
    write_labels,
)
from ptdistill.errors import UserError
from ptdistill.models.ptv3.segmentor import PTv3Segmentor

__all__ = ["ARTIFACT_FORMAT", "LABEL_DTYPES", "MODEL_CLASSES", "NUSCENES_INTENSITY_MAX", "SCAN_FIELDS", "Student",
           "build_student", "label_dtype", "load_artifact", "main", "predict", "predict_file", "read_scan",
           "write_labels"]

ARTIFACT_FORMAT = "ptdistill-student/1"
# The only classes an artifact may name: loading never imports or runs anything else.
MODEL_CLASSES = {"ptdistill.models.ptv3.segmentor.PTv3Segmentor": PTv3Segmentor}


@dataclass
class Student:
    """An exported student, ready to predict."""

    model: nn.Module
    class_names: list[str]
    grid_size: float

    @property
    def in_channels(self) -> int:
        return self.model.backbone.in_channels


def load_artifact(path: str | Path, device: str = "cpu") -> Student:
    """Read an artifact with `weights_only=True` and rebuild its model in eval mode."""
    artifact = read_torch_file(path, "model artifact", map_location=device)
    if not isinstance(artifact, dict) or artifact.get("format") != ARTIFACT_FORMAT:
        raise UserError(f"{path} is not a ptdistill student artifact ({ARTIFACT_FORMAT}); "
                        "write one with `python evaluate.py task=export ckpt_path=...`")
    return build_student(artifact, path, device)


def build_student(artifact: dict, path: str | Path, device: str = "cpu") -> Student:
    """The eval-mode student of an artifact's content (`export.student_artifact`); `path` names it in errors."""
    model_class = MODEL_CLASSES.get(artifact["model_class"])
    if model_class is None:
        raise UserError(f"{path} names model class {artifact['model_class']!r}, not one of {sorted(MODEL_CLASSES)}")
    if artifact["model_args"].get("in_channels") not in (3, 4):
        raise UserError(f"{path}: the student must read 3 or 4 input channels (x, y, z [, strength]), "
                        f"not {artifact['model_args'].get('in_channels')}")
    try:
        model = model_class(**artifact["model_args"])
        model.load_state_dict(artifact["state_dict"])
    except (TypeError, ValueError, RuntimeError) as error:
        raise UserError(f"{path}: its model arguments or state dict do not build a student: {error}") from None
    return Student(model.to(device).eval(), list(artifact["class_names"]), float(artifact["grid_size"]))


@torch.inference_mode()
def predict(student: Student, coord: np.ndarray, strength: np.ndarray | None) -> np.ndarray:
    """labels (N,) int64 for every point, through the grid-sampling inverse, as in evaluation.

    coord (N, 3), strength (N, 1) or None; the student's input is x, y, z (+ strength when it has 4 channels).
    """
    uses_strength = student.in_channels == 4
    if uses_strength and strength is None:
        raise ValueError("strength: the student reads x, y, z and strength, got None")
    sample = {
        "coord": coord,
        "strength": np.zeros((len(coord), 1), np.float32) if strength is None else strength,  # carried, unused
        "segment": np.full(len(coord), -1, dtype=np.int64),  # unlabelled
        "name": "scan",
    }
    transform = Compose([GridSample(student.grid_size, train=False),
                         ConcatFeatures(("coord", "strength") if uses_strength else ("coord",))])
    batch = collate([transform(sample, np.random.default_rng(0))])  # evaluation grid sampling draws nothing
    device = next(student.model.parameters()).device
    batch = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}
    logits = student.model(batch)["logits"]  # (N_voxels, K)
    return logits.argmax(dim=1)[batch["inverse"]].cpu().numpy()


def predict_file(student: Student, path: str | Path) -> np.ndarray:
    """labels (N,) of every point of the scan file `path` (see the module docstring)."""
    coord, strength = read_scan(path, student.in_channels)
    return predict(student, coord, strength)


if __name__ == "__main__":
    sys.exit(main())
