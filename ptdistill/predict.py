"""Per-point labels of one LiDAR scan from an exported student, without the training stack.

    ptdistill-predict SCAN --model ARTIFACT --out LABELS [--device cpu]

SCAN: a SemanticKITTI `.bin` (float32 x, y, z, remission), a nuScenes `.pcd.bin` (float32 x, y, z,
intensity 0-255, ring; strength = intensity / 255) or a `.npy` array (N, 3) or (N, 4) (x, y, z
[, strength]). The scan is grid-sampled as in evaluation, the student labels every voxel, and every
original point gets its voxel's label. LABELS: `.label` (uint32, SemanticKITTI's layout) or `.npy`
(int64), holding the class index (0-based, in the artifact's `class_names` order).

ARTIFACT (written by `python evaluate.py task=export`) is a weights-only torch file: the student's
class (from an allow-list) and constructor arguments, its state dict, class names and grid size.
Not torch.export or TorchScript: PTv3's forward is data-dependent Python (input
checks, `unique`, neighbour search by `searchsorted`, split sizes and patch layouts from `.tolist()`),
which torch.export cannot trace (`GuardOnDataDependentSymNode` at the first check) and TorchScript
cannot compile (dataclasses, cached neighbour maps). So the artifact rebuilds the model from this
package's plain-PyTorch code, which imports neither Hydra nor Lightning.
"""

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ptdistill.data.collate import collate
from ptdistill.data.dataset import check_scan
from ptdistill.data.errors import BadSampleError
from ptdistill.data.transforms import Compose, ConcatFeatures, GridSample
from ptdistill.errors import UserError
from ptdistill.models.ptv3.segmentor import PTv3Segmentor

ARTIFACT_FORMAT = "ptdistill-student/1"
# The only classes an artifact may name: loading never imports or runs anything else.
MODEL_CLASSES = {"ptdistill.models.ptv3.segmentor.PTv3Segmentor": PTv3Segmentor}
# float32 fields per point of the binary scans: x, y, z, strength first.
SCAN_FIELDS = {".pcd.bin": 5, ".bin": 4}
NUSCENES_INTENSITY_MAX = 255.0
LABEL_DTYPES = {".label": np.uint32, ".npy": np.int64}


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
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model artifact {path} does not exist")
    try:
        artifact = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        raise UserError(f"cannot read model artifact {path} as a weights-only torch file: {error}") from None
    if not isinstance(artifact, dict) or artifact.get("format") != ARTIFACT_FORMAT:
        raise UserError(f"{path} is not a ptdistill student artifact ({ARTIFACT_FORMAT}); "
                        "write one with `python evaluate.py task=export ckpt_path=...`")
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


def read_scan(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """coord (N, 3) float32 metres and strength (N, 1) float32 in [0, 1], None for an x, y, z array."""
    path = Path(path)
    suffix = ".pcd.bin" if path.name.endswith(".pcd.bin") else path.suffix
    if suffix not in (*SCAN_FIELDS, ".npy"):
        raise UserError(f"{path}: unknown scan type {suffix!r}; expected .bin (SemanticKITTI), "
                        ".pcd.bin (nuScenes) or .npy")
    if not path.is_file():
        raise UserError(f"scan {path} does not exist")
    points = _read_npy(path) if suffix == ".npy" else _read_binary(path, SCAN_FIELDS[suffix])
    coord = np.ascontiguousarray(points[:, :3], dtype=np.float32)
    strength = points[:, 3:4].astype(np.float32) if points.shape[1] > 3 else None
    if strength is not None and suffix == ".pcd.bin":
        strength /= NUSCENES_INTENSITY_MAX
    check_scan(coord, np.zeros((len(coord), 1)) if strength is None else strength, path)
    return coord, strength


def _read_binary(path: Path, fields: int) -> np.ndarray:
    size = path.stat().st_size
    if size % (4 * fields):
        raise BadSampleError(f"{path}: size {size} B is not a multiple of the {4 * fields}-byte point record "
                             f"({fields} float32): the file is truncated or of another format")
    return np.fromfile(path, dtype=np.float32).reshape(-1, fields)


def _read_npy(path: Path) -> np.ndarray:
    try:
        points = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise BadSampleError(f"{path}: not a readable .npy array: {error}") from None
    if points.ndim != 2 or points.shape[1] not in (3, 4) or not np.issubdtype(points.dtype, np.number):
        raise BadSampleError(f"{path}: expected a numeric (N, 3) or (N, 4) array (x, y, z [, strength]), "
                             f"got {points.dtype} {points.shape}")
    return points


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
    coord, strength = read_scan(path)
    if strength is None and student.in_channels == 4:
        raise UserError(f"{path}: the student reads x, y, z and strength; this array has x, y, z only "
                        "(give an (N, 4) array)")
    return predict(student, coord, strength)


def label_dtype(path: Path) -> type[np.integer]:
    if path.suffix not in LABEL_DTYPES:
        raise UserError(f"{path}: unknown label file type {path.suffix!r}; use .label (uint32) or .npy")
    return LABEL_DTYPES[path.suffix]


def write_labels(path: str | Path, labels: np.ndarray) -> None:
    """`.label`: raw uint32 per point (SemanticKITTI's layout); `.npy`: an int64 array."""
    path = Path(path)
    labels = labels.astype(label_dtype(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, labels)
    else:
        labels.tofile(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ptdistill-predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("scan", type=Path, help="a .bin (SemanticKITTI), .pcd.bin (nuScenes) or .npy scan")
    parser.add_argument("--model", type=Path, required=True, help="a student artifact from evaluate.py task=export")
    parser.add_argument("--out", type=Path, required=True, help="labels to write: .label (uint32) or .npy")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    args = parser.parse_args(argv)
    try:
        label_dtype(args.out)  # a bad --out fails before the work, not after
        labels = predict_file(load_artifact(args.model, args.device), args.scan)
        write_labels(args.out, labels)
    except (UserError, ValueError) as error:  # ValueError: the model refusing the scan, e.g. a too large extent
        print(f"ptdistill-predict: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {len(labels)} labels to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
