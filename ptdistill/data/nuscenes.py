"""nuScenes lidarseg reader (Caesar et al., 2020; Fong et al., 2022), through nuscenes-devkit.

    <root>/<version>/*.json                                 the devkit's tables (scene, sample, sample_data, ...)
    <root>/samples/LIDAR_TOP/<name>.pcd.bin                 float32 records (x, y, z, intensity, ring index)
    <root>/lidarseg/<version>/<token>_lidarseg.bin          uint8 per point: one of the 32 lidarseg classes

The scans are the LIDAR_TOP keyframes of the scenes in the devkit's official scene split
(`nuscenes.utils.splits.create_splits_scenes`); strength = intensity / 255. The 32 lidarseg classes go
through the learning map (in the dataset config: the lidarseg challenge's 16 classes, ignore -1).
"""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from nuscenes import NuScenes
from nuscenes.utils.splits import create_splits_scenes

from ptdistill.data.dataset import LearningMap, LidarDataset, Transform, check_scan
from ptdistill.data.errors import BadSampleError, DatasetNotFoundError
from ptdistill.errors import UserError

POINT_RECORD = np.dtype([("xyz", np.float32, 3), ("intensity", np.float32), ("ring", np.float32)])  # 20 bytes
LABEL_RECORD = np.dtype(np.uint8)


class BadTableError(UserError, ValueError):
    """A nuScenes table that cannot be read or does not fit the others; the message names the file."""


class NuScenesDataset(LidarDataset):
    """The LIDAR_TOP keyframes of one split, scene by scene (in the split's scene order), in time order.

    Args:
        root: dataset root holding `<version>/`, `samples/` and `lidarseg/`.
        split: a key of `splits`, e.g. "train".
        splits: split -> the devkit's scene split, e.g. {"train": "train", "val": "val", "test": "test"}
            (v1.0-mini: "mini_train", "mini_val").
        versions: split -> the version whose tables hold its scenes, e.g. {"train": "v1.0-trainval",
            "test": "v1.0-test"}.
        learning_map: lidarseg class index (0-31) -> class index, -1 for ignored classes.
        labelled_splits: splits whose scans must have a lidarseg file; the others get segment = -1.
        transform, skip_bad: see `LidarDataset`.

    Sample names are the LIDAR_TOP sample_data tokens, which name the lidarseg submission files.
    """

    def __init__(
        self,
        root: str,
        split: str,
        splits: Mapping[str, str],
        versions: Mapping[str, str],
        learning_map: Mapping[int, int],
        labelled_splits: Sequence[str] = ("train", "val"),
        transform: Transform | None = None,
        skip_bad: bool = False,
    ):
        if split not in splits or split not in versions:
            raise ValueError(f"split: {split!r} needs an entry in splits {dict(splits)} and versions {dict(versions)}")
        official = create_splits_scenes()
        if splits[split] not in official:
            raise ValueError(f"splits.{split}: {splits[split]!r} is not a devkit scene split {sorted(official)}")
        self.root, self.version = Path(root), versions[split]
        self.labelled = split in labelled_splits
        self.learning_map = LearningMap(learning_map)
        nusc = self._load_tables()
        scenes = {scene["name"]: scene for scene in nusc.scene}
        wanted = [scenes[name] for name in official[splits[split]] if name in scenes]
        if not wanted:
            raise DatasetNotFoundError(
                f"{self.root / self.version}: no scene of the {splits[split]!r} split in the tables.\n{self.layout()}"
            )
        labels = {record["sample_data_token"]: record["filename"] for record in getattr(nusc, "lidarseg", [])}
        self.names, self.scans, self.labels = [], [], []
        for scene in wanted:
            token = scene["first_sample_token"]
            while token:
                sample = nusc.get("sample", token)
                lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
                self.names.append(lidar["token"])
                self.scans.append(self.root / lidar["filename"])
                label = labels.get(lidar["token"], f"lidarseg/{self.version}/{lidar['token']}_lidarseg.bin")
                self.labels.append(self.root / label)
                token = sample["next"]
        super().__init__(transform, skip_bad)

    def layout(self) -> str:
        return (
            f"Expected the nuScenes lidarseg layout (see data/README.md):\n"
            f"  {self.root}/{self.version}/*.json   the tables, lidarseg.json and category.json included\n"
            f"  {self.root}/samples/LIDAR_TOP/<name>.pcd.bin   float32 x, y, z, intensity, ring\n"
            f"  {self.root}/lidarseg/{self.version}/<token>_lidarseg.bin   uint8 (train and val splits)"
        )

    def _load_tables(self) -> NuScenes:
        tables = self.root / self.version
        if not tables.is_dir():
            missing = self.root if not self.root.is_dir() else tables
            raise DatasetNotFoundError(f"{missing}: no such directory.\n{self.layout()}")
        try:
            return NuScenes(version=self.version, dataroot=str(self.root), verbose=False)
        except FileNotFoundError as error:
            raise DatasetNotFoundError(f"{error.filename}: no such file.\n{self.layout()}") from None
        except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError
            raise BadTableError(f"{unreadable_table(tables)}: unreadable JSON table ({error})") from None
        except (AssertionError, KeyError, TypeError) as error:  # the devkit's consistency checks and lookups
            problem = f"no record with token {error}" if isinstance(error, KeyError) else str(error)
            raise BadTableError(f"{tables}: the tables do not fit together: {problem}") from None

    def read(self, index: int) -> dict:
        path = self.scans[index]
        if not path.is_file():
            raise BadSampleError(f"{path}: missing point file of keyframe {self.names[index]}")
        size = path.stat().st_size
        if size % POINT_RECORD.itemsize:
            record = f"{POINT_RECORD.itemsize}-byte point record (float32 x, y, z, intensity, ring)"
            raise BadSampleError(f"{path}: size {size} B is not a multiple of the {record}")
        points = np.fromfile(path, dtype=POINT_RECORD)
        coord, strength = np.ascontiguousarray(points["xyz"]), points["intensity"][:, None] / np.float32(255)
        check_scan(coord, strength, path)
        return {"coord": coord, "strength": strength, "segment": self._read_segment(index, len(points))}

    def _read_segment(self, index: int, num_points: int) -> np.ndarray:
        """segment (num_points,) int64 from the scan's lidarseg file; all -1 in an unlabelled split."""
        if not self.labelled:
            return np.full(num_points, -1, dtype=np.int64)
        path = self.labels[index]
        if not path.is_file():
            raise BadSampleError(f"{path}: missing lidarseg label file for {self.scans[index]} (labelled split)")
        label = np.fromfile(path, dtype=LABEL_RECORD)
        if len(label) != num_points:
            raise BadSampleError(f"{path}: {len(label)} labels for the {num_points} points of {self.scans[index]}")
        return self.learning_map(label.astype(np.int64), path)


def unreadable_table(tables: Path) -> Path:
    """The first `*.json` under `tables` that does not parse; `tables` itself if they all do."""
    for path in sorted(tables.glob("*.json")):
        try:
            json.loads(path.read_text())
        except ValueError:
            return path
    return tables
