"""SemanticKITTI reader: read-back, learning map, splits, every bad-file case and the skip policy."""

import logging
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from ptdistill.data.errors import BadSampleError, DatasetNotFoundError, SkippedSamples
from ptdistill.data.semantickitti import SemanticKITTIDataset

CONFIG = OmegaConf.load(Path(__file__).parents[1] / "conf" / "dataset" / "semantickitti.yaml")
LEARNING_MAP = {int(k): int(v) for k, v in CONFIG.learning_map.items()}
SPLITS = {"train": ["00", "01"], "val": ["08"], "test": ["11"]}


def write_scan(root: Path, sequence: str, name: str, points: np.ndarray, label: np.ndarray | None) -> Path:
    """points (N, 4) float32 -> velodyne/<name>.bin; label (N,) uint32 -> labels/<name>.label."""
    directory = root / "sequences" / sequence
    (directory / "velodyne").mkdir(parents=True, exist_ok=True)
    (directory / "labels").mkdir(exist_ok=True)
    points.astype(np.float32).tofile(directory / "velodyne" / f"{name}.bin")
    if label is not None:
        label.astype(np.uint32).tofile(directory / "labels" / f"{name}.label")
    return directory


def random_scan(rng: np.random.Generator, num_points: int = 50) -> tuple[np.ndarray, np.ndarray]:
    points = rng.normal(0, 10, (num_points, 4)).astype(np.float32)
    raw = rng.choice(list(LEARNING_MAP), num_points).astype(np.uint32)
    instance = rng.integers(0, 2**16, num_points).astype(np.uint32)
    return points, raw | instance << 16


@pytest.fixture
def kitti(tmp_path):
    """Two train sequences, one val, one test without labels; returns (root, {name: (points, label)})."""
    rng = np.random.default_rng(0)
    scans = {}
    for sequence, count in (("00", 2), ("01", 1), ("08", 2), ("11", 1)):
        for i in range(count):
            points, label = random_scan(rng, 40 + i)
            write_scan(tmp_path, sequence, f"{i:06d}", points, None if sequence == "11" else label)
            scans[f"{sequence}/{i:06d}"] = points, label
    return tmp_path, scans


def dataset(root, split="train", **kwargs):
    return SemanticKITTIDataset(str(root), split, SPLITS, LEARNING_MAP, **kwargs)


def test_reads_points_and_maps_labels(kitti):
    root, scans = kitti
    data = dataset(root)
    assert data.names == ["00/000000", "00/000001", "01/000000"]
    for i, name in enumerate(data.names):
        points, label = scans[name]
        sample = data[i]
        assert sample["name"] == name
        assert sample["coord"].dtype == np.float32 and sample["strength"].shape == (len(points), 1)
        np.testing.assert_array_equal(sample["coord"], points[:, :3])
        np.testing.assert_array_equal(sample["strength"][:, 0], points[:, 3])
        expected = [LEARNING_MAP[int(raw) & 0xFFFF] for raw in label]  # instance bits dropped
        np.testing.assert_array_equal(sample["segment"], expected)
        assert sample["segment"].dtype == np.int64


def test_learning_map_folds_moving_classes_and_ignores_unlabelled():
    assert len(CONFIG.class_names) == CONFIG.num_classes == 19
    assert sorted(set(LEARNING_MAP.values())) == [-1, *range(19)]
    for moving, static in ((252, 10), (253, 31), (254, 30), (255, 32), (258, 18)):
        assert LEARNING_MAP[moving] == LEARNING_MAP[static]
    assert LEARNING_MAP[0] == LEARNING_MAP[1] == -1


def test_splits_and_unlabelled_test_split(kitti):
    root, scans = kitti
    assert dataset(root, "val").names == ["08/000000", "08/000001"]
    test = dataset(root, "test")
    assert test.names == ["11/000000"]
    assert (test[0]["segment"] == -1).all() and len(test[0]["segment"]) == len(scans["11/000000"][0])
    with pytest.raises(ValueError, match="'dev' is not one of"):
        dataset(root, "dev")


def test_official_splits_in_config():
    assert list(CONFIG.splits.train) == ["00", "01", "02", "03", "04", "05", "06", "07", "09", "10"]
    assert list(CONFIG.splits.val) == ["08"]
    assert list(CONFIG.splits.test) == [f"{i}" for i in range(11, 22)]


@pytest.mark.parametrize("missing", ["root", "sequence"])
def test_missing_root_or_sequence_shows_layout(tmp_path, kitti, missing):
    root = tmp_path / "nowhere" if missing == "root" else kitti[0]
    splits = {"train": ["00", "05"]}
    with pytest.raises(DatasetNotFoundError, match=r"sequences/<XX>/velodyne/<NNNNNN>\.bin") as error:
        SemanticKITTIDataset(str(root), "train", splits, LEARNING_MAP)
    assert str(root if missing == "root" else root / "sequences" / "05" / "velodyne") in str(error.value)


def test_partial_copy_names_the_missing_folder_what_is_there_and_the_override(kitti):
    root, _ = kitti  # sequences 00, 01, 08, 11
    with pytest.raises(DatasetNotFoundError) as error:
        SemanticKITTIDataset(str(root), "train", {"train": ["00", "02", "08"]}, LEARNING_MAP)
    message = str(error.value)
    assert str(root / "sequences" / "02" / "velodyne") in message
    assert "holds ['00', '01', '08', '11']" in message
    assert """'dataset.splits.train=["00","08"]'""" in message


def corrupt(directory: Path, case: str) -> Path:
    """Damage scan 000000 of `directory` as `case` says; return the file the error must name."""
    scan, label = directory / "velodyne" / "000000.bin", directory / "labels" / "000000.label"
    points = np.fromfile(scan, np.float32).reshape(-1, 4)
    if case == "truncated scan":
        scan.write_bytes(scan.read_bytes()[:-6])
        return scan
    if case == "truncated label":
        label.write_bytes(label.read_bytes()[:-1])
        return label
    if case == "label count":
        np.fromfile(label, np.uint32)[:-1].tofile(label)
        return label
    if case in ("nan", "inf", "nan strength"):
        points[3, 3 if case == "nan strength" else 1] = np.inf if case == "inf" else np.nan
        points.tofile(scan)
        return scan
    if case == "empty":
        scan.write_bytes(b"")
        label.write_bytes(b"")
        return scan
    if case == "unknown id":
        np.full(len(points), 123, np.uint32).tofile(label)
        return label
    if case == "missing label":
        label.unlink()
        return label
    raise AssertionError(case)


BAD_CASES = {
    "truncated scan": "not a multiple of the 16-byte point record",
    "truncated label": "not a multiple of the 4-byte uint32 label record",
    "label count": "labels for the",
    "nan": "NaN or Inf coordinates",
    "inf": "NaN or Inf coordinates",
    "nan strength": "NaN or Inf strengths",
    "empty": "empty scan",
    "unknown id": r"label ids \[123\] are not in the learning map",
    "missing label": "missing label file",
}


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_file_raises_naming_file_and_problem(kitti, case):
    root, _ = kitti
    path = corrupt(root / "sequences" / "00", case)
    data = dataset(root)
    with pytest.raises(BadSampleError, match=BAD_CASES[case]) as error:
        data[0]
    assert str(error.value).startswith(str(path))
    assert isinstance(error.value, ValueError)


def test_skip_bad_logs_counts_once_and_replaces(kitti, caplog):
    root, _ = kitti
    path = corrupt(root / "sequences" / "00", "nan")
    data = dataset(root, skip_bad=True)
    with caplog.at_level(logging.WARNING, logger="ptdistill.data.dataset"):
        first, again = data[0], data[0]
    assert first["name"] == again["name"] == "00/000001"  # the next good scan
    assert len(data.skipped) == 1 and data.skipped.indices() == [0]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and "NaN or Inf" in warnings[0]


def test_all_bad_raises_even_when_skipping(kitti):
    root, _ = kitti
    for name in ("000000", "000001"):
        (root / "sequences" / "08" / "velodyne" / f"{name}.bin").write_bytes(b"\0" * 17)
    with pytest.raises(BadSampleError, match="all 2 samples"):
        dataset(root, "val", skip_bad=True)[1]


def first_name(samples: list[dict]) -> str:
    return samples[0]["name"]


def test_skip_count_survives_worker_processes(kitti):
    root, _ = kitti
    corrupt(root / "sequences" / "00", "unknown id")
    corrupt(root / "sequences" / "01", "label count")
    data = dataset(root, skip_bad=True)
    names = list(DataLoader(data, batch_size=1, num_workers=2, collate_fn=first_name))
    assert names == ["00/000001", "00/000001", "00/000001"]  # each bad scan replaced by the next good one
    assert len(data.skipped) == 2 and data.skipped.indices() == [0, 2]


def test_skipped_samples_reach_spawned_processes():
    """Workers started by spawn (the default off Linux) get the shared flags too."""
    skipped = SkippedSamples(5)
    process = multiprocessing.get_context("spawn").Process(target=skipped.add, args=(3,))
    process.start()
    process.join()
    assert process.exitcode == 0 and skipped.indices() == [3] and len(skipped) == 1
