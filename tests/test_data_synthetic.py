"""Synthetic scans: determinism, caching, size and labels, read back through the SemanticKITTI reader."""

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from ptdistill.data.semantickitti import SemanticKITTIDataset
from ptdistill.data.synthetic.generate import MARKER, generate_dataset, generate_scan
from ptdistill.data.synthetic.lidar import SpinningLidar

CONFIG = OmegaConf.load(Path(__file__).parents[1] / "conf" / "dataset" / "synthetic.yaml")
LEARNING_MAP = {int(k): int(v) for k, v in CONFIG.learning_map.items()}
SPLITS = {"train": ["00"], "val": ["01"], "test": ["02"]}
NUM_SCANS = {"train": 2, "val": 1, "test": 1}


@pytest.fixture(scope="module")
def scans():
    """A few scans of the default sensor: (points, intensity, label) each."""
    return [generate_scan([7, 0, i], SpinningLidar()) for i in range(4)]


def test_scan_size_and_values(scans):
    lidar = SpinningLidar()
    for points, intensity, label in scans:
        assert 15_000 <= len(points) <= 40_000
        assert points.dtype == intensity.dtype == np.float32 and label.dtype == np.uint32
        assert len(points) == len(intensity) == len(label)
        assert (intensity >= 0).all() and (intensity <= 1).all()
        assert np.linalg.norm(points, axis=1).max() < lidar.max_range + 1
        elevation = np.degrees(np.arcsin(points[:, 2] / np.linalg.norm(points, axis=1)))  # up to the tilt of the car
        assert lidar.fov_down - 5 < elevation.min() and elevation.max() < lidar.fov_up + 5


def test_labels_cover_the_classes_and_are_not_a_function_of_height(scans):
    label = np.concatenate([s[2] for s in scans])
    semantic = label & 0xFFFF
    assert set(np.unique(semantic)) <= set(LEARNING_MAP)
    classes = np.array([LEARNING_MAP[int(raw)] for raw in semantic])
    num_classes = CONFIG.num_classes
    assert set(classes) == set(range(num_classes))  # all 10 classes, nothing ignored
    things = np.isin(semantic, [10, 252, 30, 254])
    assert len(np.unique(label[things] >> 16)) > 10  # instance ids of cars and people
    # The best classifier from height alone (the majority class of each 10 cm slice, fitted on these
    # very points) stays far from solving the task.
    height = np.concatenate([s[0][:, 2] for s in scans])
    slices = np.floor((height - height.min()) / 0.1).astype(np.int64)
    votes = np.zeros((slices.max() + 1, num_classes))
    np.add.at(votes, (slices, classes), 1)
    predicted = votes.argmax(axis=1)[slices]
    iou = [
        np.sum((predicted == k) & (classes == k)) / np.sum((predicted == k) | (classes == k))
        for k in range(num_classes)
    ]
    assert np.mean(iou) < 0.4


def test_generation_is_deterministic_and_cached(tmp_path):
    for root in (tmp_path / "a", tmp_path / "b"):
        generate_dataset(str(root), SPLITS, NUM_SCANS, seed=3)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 2 * 4 + 1
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    scan = tmp_path / "a" / "sequences" / "00" / "velodyne" / "000000.bin"
    mtime = scan.stat().st_mtime_ns
    generate_dataset(str(tmp_path / "a"), SPLITS, NUM_SCANS, seed=3)
    assert scan.stat().st_mtime_ns == mtime  # cached
    generate_dataset(str(tmp_path / "a"), SPLITS, {"train": 1, "val": 1, "test": 1}, seed=4)
    assert not (tmp_path / "a" / "sequences" / "00" / "velodyne" / "000001.bin").exists()  # regenerated
    assert json.loads((tmp_path / "a" / MARKER).read_text())["seed"] == 4
    assert scan.read_bytes() != (tmp_path / "b" / "sequences" / "00" / "velodyne" / "000000.bin").read_bytes()


def test_refuses_to_write_into_a_foreign_root(tmp_path):
    (tmp_path / "sequences").mkdir()
    with pytest.raises(FileExistsError, match="holds no synthetic.json; refusing"):
        generate_dataset(str(tmp_path), SPLITS, NUM_SCANS)


def test_read_back_through_the_semantickitti_reader(tmp_path):
    generate_dataset(str(tmp_path), SPLITS, NUM_SCANS, seed=0)
    for split, count in NUM_SCANS.items():
        data = SemanticKITTIDataset(str(tmp_path), split, SPLITS, LEARNING_MAP, labelled_splits=list(SPLITS))
        assert len(data) == count
    data = SemanticKITTIDataset(str(tmp_path), "train", SPLITS, LEARNING_MAP, labelled_splits=list(SPLITS))
    points, intensity, label = generate_scan([0, 0, 1], SpinningLidar())
    sample = data[1]
    assert sample["name"] == "00/000001"
    np.testing.assert_array_equal(sample["coord"], points)
    np.testing.assert_array_equal(sample["strength"][:, 0], intensity)
    np.testing.assert_array_equal(sample["segment"], [LEARNING_MAP[int(raw) & 0xFFFF] for raw in label])
