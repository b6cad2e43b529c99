"""nuScenes lidarseg reader on a tiny fixture in the real layout, loaded by the real nuscenes-devkit:
read-back, class mapping, official splits, every bad-file case and the skip policy."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from nuscenes import NuScenes
from nuscenes.eval.lidarseg.utils import LidarsegClassMapper
from nuscenes.utils.splits import create_splits_scenes
from omegaconf import OmegaConf

from ptdistill.bench.nuscenes_layout import write_nuscenes
from ptdistill.data.errors import BadSampleError, DatasetNotFoundError
from ptdistill.data.nuscenes import NuScenesDataset

CONFIG = OmegaConf.load(Path(__file__).parents[1] / "conf" / "dataset" / "nuscenes.yaml")
LEARNING_MAP = {int(k): int(v) for k, v in CONFIG.learning_map.items()}
SPLITS = {"train": "mini_train", "val": "mini_val", "test": "test"}
VERSIONS = {"train": "v1.0-mini", "val": "v1.0-mini", "test": "v1.0-test"}
SCENES = {  # version -> (scene name, keyframes); real names, so the devkit's official splits apply
    "v1.0-mini": [(create_splits_scenes()["mini_train"][0], 2), (create_splits_scenes()["mini_train"][1], 1),
                  (create_splits_scenes()["mini_val"][0], 2)],
    "v1.0-test": [(create_splits_scenes()["test"][0], 1)],
}


def write_tables(root: Path, version: str, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Random keyframes of SCENES[version] in nuScenes' layout; returns {lidar token: (points (N, 5), label (N,))}."""
    scenes = []
    for scene, count in SCENES[version]:
        keyframes = []
        for i in range(count):
            points = np.column_stack([rng.normal(0, 10, (40 + i, 3)), rng.uniform(0, 255, 40 + i),
                                      rng.integers(0, 32, 40 + i)]).astype(np.float32)
            keyframes.append((points, rng.integers(0, 32, len(points)).astype(np.uint8)))
        scenes.append((scene, keyframes))
    tokens = write_nuscenes(root, version, scenes)
    return dict(zip(tokens, [keyframe for _, keyframes in scenes for keyframe in keyframes]))


@pytest.fixture
def nuscenes(tmp_path):
    """v1.0-mini (2 train scenes, 1 val scene) and v1.0-test (1 scene); returns (root, scans)."""
    rng = np.random.default_rng(0)
    scans = write_tables(tmp_path, "v1.0-mini", rng) | write_tables(tmp_path, "v1.0-test", rng)
    return tmp_path, scans


def dataset(root, split="train", **kwargs):
    return NuScenesDataset(str(root), split, SPLITS, VERSIONS, LEARNING_MAP, **kwargs)


def test_reads_keyframes_and_maps_classes(nuscenes):
    root, scans = nuscenes
    data = dataset(root)
    assert data.names == ["v1.0-mini-lidar0-0", "v1.0-mini-lidar0-1", "v1.0-mini-lidar1-0"]
    for i, name in enumerate(data.names):
        points, label = scans[name]
        sample = data[i]
        np.testing.assert_array_equal(sample["coord"], points[:, :3])
        np.testing.assert_allclose(sample["strength"][:, 0], points[:, 3] / 255, rtol=1e-6)
        np.testing.assert_array_equal(sample["segment"], [LEARNING_MAP[int(raw)] for raw in label])


def test_learning_map_is_the_devkit_challenge_map(nuscenes):
    root, _ = nuscenes
    mapper = LidarsegClassMapper(NuScenes("v1.0-mini", str(root), verbose=False))
    coarse = mapper.get_fine_idx_2_coarse_idx()  # fine -> 1..16, 0 ignored
    assert LEARNING_MAP == {fine: index - 1 for fine, index in coarse.items()}
    names = sorted(mapper.coarse_name_2_coarse_idx_mapping, key=mapper.coarse_name_2_coarse_idx_mapping.get)
    assert list(CONFIG.class_names) == names[1:] and CONFIG.num_classes == 16 and CONFIG.in_channels == 4


def test_official_splits_and_unlabelled_test(nuscenes):
    root, scans = nuscenes
    assert dataset(root, "val").names == ["v1.0-mini-lidar2-0", "v1.0-mini-lidar2-1"]
    test = dataset(root, "test")
    assert test.names == ["v1.0-test-lidar0-0"]
    sample = test[0]
    np.testing.assert_array_equal(sample["coord"], scans["v1.0-test-lidar0-0"][0][:, :3])
    assert (sample["segment"] == -1).all()


def test_missing_root_shows_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"(?s)no such directory.*lidarseg/v1.0-mini/<token>"):
        dataset(tmp_path / "absent")


def test_unreadable_json_names_the_table(nuscenes):
    root, _ = nuscenes
    (root / "v1.0-mini" / "sample.json").write_text('[{"token": ')
    with pytest.raises(ValueError, match=r"v1.0-mini/sample.json: unreadable JSON table"):
        dataset(root)


@pytest.mark.parametrize(
    "corrupt, problem",
    [
        (lambda points, label: (points[:-1].tobytes() + b"\0" * 4, label), "not a multiple of the 20-byte"),
        (lambda points, label: (points.tobytes(), label[:-1]), "39 labels for the 40 points"),
        (lambda points, label: (np.where(np.arange(5) == 0, np.nan, points).astype(np.float32).tobytes(), label),
         "NaN or Inf coordinates"),
        (lambda points, label: (b"", label[:0]), "empty scan"),
        (lambda points, label: (points.tobytes(), np.full_like(label, 40)), r"label ids \[40\] are not in"),
    ],
)
def test_bad_files_name_file_and_problem(nuscenes, corrupt, problem):
    root, scans = nuscenes
    data = dataset(root)
    points, label = corrupt(*scans[data.names[0]])
    data.scans[0].write_bytes(points)
    data.labels[0].write_bytes(np.asarray(label, dtype=np.uint8).tobytes())
    with pytest.raises(BadSampleError, match=problem) as error:
        data[0]
    assert str(error.value).startswith(str(root))


def test_missing_lidarseg_file(nuscenes):
    """A keyframe without its lidarseg record and file (the devkit checks that records and files agree)."""
    root, _ = nuscenes
    tables = root / "v1.0-mini" / "lidarseg.json"
    records = json.loads(tables.read_text())
    (root / records[0]["filename"]).unlink()
    tables.write_text(json.dumps(records[1:]))
    with pytest.raises(BadSampleError, match="v1.0-mini-lidar0-0_lidarseg.bin: missing lidarseg label file"):
        dataset(root)[0]


def test_skip_policy_logs_and_counts(nuscenes, caplog):
    root, _ = nuscenes
    data = dataset(root, skip_bad=True)
    data.scans[1].write_bytes(b"\0" * 7)
    with caplog.at_level(logging.WARNING):
        names = [data[i]["name"] for i in range(len(data))]
    assert names == [data.names[0], data.names[2], data.names[2]]
    assert len(data.skipped) == 1 and str(data.scans[1]) in caplog.text
