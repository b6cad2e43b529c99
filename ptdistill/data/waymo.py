"""Waymo Open Dataset reader, in the common preprocessed layout (Pointcept's), one folder per frame:

    <root>/<split folder>/<segment context name>/<frame timestamp>/coord.npy     float32 (N, 3), vehicle frame
                                                                  /strength.npy  float32 (N, 1), tanh(intensity)
                                                                  /segment.npy   integer (N,): class 0-21, -1 ignored

`ptdistill.data.waymo_convert` writes it from the v2 Parquet files. Class k is Waymo's semantic type
k + 1 (TYPE_UNDEFINED, 0, becomes -1).
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ptdistill.data.dataset import LidarDataset, Transform, check_scan
from ptdistill.data.errors import BadSampleError, DatasetNotFoundError


class WaymoDataset(LidarDataset):
    """The frames of one split, in (segment, timestamp) order.

    Args:
        root: dataset root holding the split folders.
        split: a key of `splits`, e.g. "train".
        splits: split -> folder under root, e.g. {"train": "training", "val": "validation", "test": "testing"}.
        num_classes: segment values must lie in [-1, num_classes).
        labelled_splits: splits whose frames must have `segment.npy`; the others get segment = -1.
        transform, skip_bad: see `LidarDataset`.
    """

    def __init__(
        self,
        root: str,
        split: str,
        splits: Mapping[str, str],
        num_classes: int = 22,
        labelled_splits: Sequence[str] = ("train", "val"),
        transform: Transform | None = None,
        skip_bad: bool = False,
    ):
        if split not in splits:
            raise ValueError(f"split: {split!r} is not one of the dataset's splits {list(splits)}")
        self.root, self.num_classes = Path(root), num_classes
        self.labelled = split in labelled_splits
        folder = self.root / splits[split]
        if not folder.is_dir():
            missing = self.root if not self.root.is_dir() else folder
            raise DatasetNotFoundError(f"{missing}: no such directory.\n{self.layout(folder)}")
        self.frames = sorted(frame.parent for frame in folder.glob("*/*/coord.npy"))
        if not self.frames:
            raise DatasetNotFoundError(f"{folder}: split {split!r} has no frames.\n{self.layout(folder)}")
        self.names = [f"{frame.parent.name}/{frame.name}" for frame in self.frames]
        super().__init__(transform, skip_bad)

    @staticmethod
    def layout(folder: Path) -> str:
        frame = folder / "<segment context name>" / "<frame timestamp>"
        return (
            f"Expected the preprocessed Waymo layout (see data/README.md; ptdistill.data.waymo_convert writes it):\n"
            f"  {frame}/coord.npy      float32 (N, 3)\n"
            f"  {frame}/strength.npy   float32 (N, 1)\n"
            f"  {frame}/segment.npy    integer (N,), classes 0-21, -1 ignored (train and val splits)"
        )

    def read(self, index: int) -> dict:
        frame = self.frames[index]
        coord = load_array(frame / "coord.npy", (3,))
        if len(coord) == 0:
            raise BadSampleError(f"{frame / 'coord.npy'}: empty scan (no points)")
        strength = load_array(frame / "strength.npy", (1,), len(coord))
        check_scan(coord, strength, frame / "coord.npy")
        return {"coord": coord, "strength": strength, "segment": self._read_segment(frame, len(coord))}

    def _read_segment(self, frame: Path, num_points: int) -> np.ndarray:
        """segment (num_points,) int64 of `frame`; all -1 in an unlabelled split."""
        path = frame / "segment.npy"
        if not self.labelled:
            return np.full(num_points, -1, dtype=np.int64)
        if not path.is_file():
            raise BadSampleError(f"{path}: missing label file for {frame} (labelled split)")
        segment = load_array(path, (), num_points).astype(np.int64)
        outside = (segment < -1) | (segment >= self.num_classes)
        if outside.any():
            values = np.unique(segment[outside])[:10].tolist()
            raise BadSampleError(f"{path}: label ids {values} are outside the {self.num_classes} classes and -1")
        return segment


def load_array(path: Path, row_shape: tuple[int, ...], num_points: int | None = None) -> np.ndarray:
    """The array (N, *row_shape) in `path`: float32 for points (row_shape (3,) or (1,)), its own integer
    type for labels (row_shape ()). BadSampleError naming `path` when it is missing, unreadable, of another
    shape or type, or has other than `num_points` rows."""
    if not path.is_file():
        raise BadSampleError(f"{path}: missing file")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise BadSampleError(f"{path}: unreadable .npy file ({error})") from None
    expected = f"(N, {row_shape[0]})" if row_shape else "(N,)"
    kind, kind_name = ("f", "float") if row_shape else ("iu", "integer")
    if array.shape[1:] != row_shape or array.ndim != 1 + len(row_shape) or array.dtype.kind not in kind:
        raise BadSampleError(f"{path}: {array.dtype} array of shape {array.shape}, expected {kind_name} {expected}")
    if num_points is not None and len(array) != num_points:
        raise BadSampleError(f"{path}: {len(array)} rows for the {num_points} points of {path.parent / 'coord.npy'}")
    return np.ascontiguousarray(array, dtype=np.float32) if row_shape else array
