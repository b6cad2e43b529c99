"""Scan files in and label files out, in numpy only: shared by both `ptdistill-predict` paths.

SCAN: a SemanticKITTI `.bin` (float32 x, y, z, remission), a nuScenes `.pcd.bin` (float32 x, y, z,
intensity 0-255, ring; strength = intensity / 255) or a `.npy` array (N, 3) or (N, 4) (x, y, z
[, strength]). LABELS: `.label` (uint32, SemanticKITTI's layout) or `.npy` (int64).

`grid_sample` repeats the evaluation branch of `ptdistill.data.transforms.GridSample`: that module
imports torch, which the ONNX predictor must not. tests/test_onnx_structure.py checks that they agree.
The scan check is the datasets' own (`ptdistill.data.errors.check_scan`, numpy only).
"""

from pathlib import Path

import numpy as np

from ptdistill.data.errors import BadSampleError, check_scan  # numpy only
from ptdistill.errors import UserError

# float32 fields per point of the binary scans: x, y, z, strength first.
SCAN_FIELDS = {".pcd.bin": 5, ".bin": 4}
NUSCENES_INTENSITY_MAX = 255.0
LABEL_DTYPES = {".label": np.uint32, ".npy": np.int64}


def read_scan(path: str | Path, in_channels: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """coord (N, 3) float32 metres and strength (N, 1) float32 in [0, 1], None for an x, y, z array;
    a model of `in_channels` 4 (x, y, z, strength) refuses an x, y, z array."""
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
    if strength is None and in_channels == 4:
        raise UserError(f"{path}: the student reads x, y, z and strength; this array has x, y, z only "
                        "(give an (N, 4) array)")
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


def grid_sample(coord: np.ndarray, grid_size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`GridSample(grid_size, train=False)`: (grid_coord (M, 3) int64 of the kept points, keep (M,) the
    first point of each voxel, inverse (N,) the voxel of every point), voxels in key order."""
    if grid_size <= 0:
        raise ValueError(f"grid_size: must be positive, got {grid_size}")
    grid = np.floor((coord - coord.min(axis=0)) / grid_size).astype(np.int64)  # (N_full, 3)
    extent = grid.max(axis=0) + 1
    key = (grid[:, 0] * extent[1] + grid[:, 1]) * extent[2] + grid[:, 2]  # one int64 per voxel
    _, keep, inverse = np.unique(key, return_index=True, return_inverse=True)
    return grid[keep], keep, inverse.reshape(-1)


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
