"""SemanticKITTI reader (Behley et al., 2019), also used for the synthetic scans written in its layout.

    <root>/sequences/<XX>/velodyne/<NNNNNN>.bin    float32 records (x, y, z, remission)
    <root>/sequences/<XX>/labels/<NNNNNN>.label    uint32 per point: semantic id (low 16 bits), instance id (high 16)

Raw semantic ids go through the learning map (in the dataset config) to class indices, ignore -1.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ptdistill.data.dataset import LearningMap, LidarDataset, Transform, check_scan
from ptdistill.data.errors import BadSampleError, DatasetNotFoundError

POINT_RECORD = np.dtype([("xyz", np.float32, 3), ("remission", np.float32)])  # 16 bytes
LABEL_RECORD = np.dtype(np.uint32)


class SemanticKITTIDataset(LidarDataset):
    """The scans of one split: every `velodyne/*.bin` of the split's sequences, in name order.

    Args:
        root: dataset root holding `sequences/`.
        split: a key of `splits`, e.g. "train".
        splits: split -> sequence names, e.g. {"train": ["00", ...], "val": ["08"], "test": ["11", ...]}.
        learning_map: raw semantic id -> class index, -1 for ignored ids.
        labelled_splits: splits whose scans must have a label file; the others get segment = -1.
        transform, skip_bad: see `LidarDataset`.
    """

    def __init__(
        self,
        root: str,
        split: str,
        splits: Mapping[str, Sequence[str]],
        learning_map: Mapping[int, int],
        labelled_splits: Sequence[str] = ("train", "val"),
        transform: Transform | None = None,
        skip_bad: bool = False,
    ):
        if split not in splits:
            raise ValueError(f"split: {split!r} is not one of the dataset's splits {list(splits)}")
        self.root = Path(root)
        self.labelled = split in labelled_splits
        self.learning_map = LearningMap(learning_map)
        self.scans = [scan for sequence in splits[split] for scan in self._list_sequence(split, splits[split], str(sequence))]
        if not self.scans:
            raise DatasetNotFoundError(
                f"{self.root}: split {split!r} (sequences {list(splits[split])}) has no scans.\n{self.layout()}"
            )
        self.names = [f"{scan.parent.parent.name}/{scan.stem}" for scan in self.scans]
        super().__init__(transform, skip_bad)

    def layout(self) -> str:
        return (
            f"Expected the SemanticKITTI layout (see data/README.md):\n"
            f"  {self.root}/sequences/<XX>/velodyne/<NNNNNN>.bin   float32 x, y, z, remission\n"
            f"  {self.root}/sequences/<XX>/labels/<NNNNNN>.label   uint32 (train and val splits)"
        )

    def _list_sequence(self, split: str, wanted: Sequence[str], sequence: str) -> list[Path]:
        velodyne = self.root / "sequences" / sequence / "velodyne"
        if velodyne.is_dir():
            return sorted(velodyne.glob("*.bin"))
        if not (self.root / "sequences").is_dir():
            raise DatasetNotFoundError(f"{self.root / 'sequences'}: no such directory.\n{self.layout()}")
        # A partial copy: say what is there, and the override that trains on it.
        present = sorted(p.parent.name for p in (self.root / "sequences").glob("*/velodyne") if p.is_dir())
        usable = [s for s in map(str, wanted) if s in present]
        quoted = ",".join(f'"{s}"' for s in usable)
        fix = f" To use what is there: 'dataset.splits.{split}=[{quoted}]'." if usable else ""
        raise DatasetNotFoundError(
            f"{velodyne}: no such directory; split {split!r} wants sequences {list(map(str, wanted))}, "
            f"{self.root / 'sequences'} holds {present or 'none'}.{fix}\n{self.layout()}"
        )

    def read(self, index: int) -> dict:
        path = self.scans[index]
        size = path.stat().st_size
        if size % POINT_RECORD.itemsize:
            record = f"{POINT_RECORD.itemsize}-byte point record (float32 x, y, z, remission)"
            raise BadSampleError(f"{path}: size {size} B is not a multiple of the {record}")
        points = np.fromfile(path, dtype=POINT_RECORD)
        coord, strength = np.ascontiguousarray(points["xyz"]), points["remission"][:, None]
        check_scan(coord, strength, path)
        return {"coord": coord, "strength": strength, "segment": self._read_segment(path, len(points))}

    def _read_segment(self, scan: Path, num_points: int) -> np.ndarray:
        """segment (num_points,) int64 from the label file beside `scan`; all -1 in an unlabelled split."""
        if not self.labelled:
            return np.full(num_points, -1, dtype=np.int64)
        path = scan.parent.parent / "labels" / f"{scan.stem}.label"
        if not path.is_file():
            raise BadSampleError(f"{path}: missing label file for {scan} (labelled split)")
        size = path.stat().st_size
        if size % LABEL_RECORD.itemsize:
            raise BadSampleError(
                f"{path}: size {size} B is not a multiple of the {LABEL_RECORD.itemsize}-byte uint32 label record"
            )
        label = np.fromfile(path, dtype=LABEL_RECORD)
        if len(label) != num_points:
            raise BadSampleError(f"{path}: {len(label)} labels for the {num_points} points of {scan}")
        return self.learning_map((label & 0xFFFF).astype(np.int64), path)
