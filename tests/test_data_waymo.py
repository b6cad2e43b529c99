"""Waymo: the per-frame reader (read-back, splits, every bad-file case, skip policy) and the v2 Parquet
converter on a tiny fixture in the v2 column layout."""

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from ptdistill.data.errors import BadSampleError, DatasetNotFoundError
from ptdistill.data.waymo import WaymoDataset
from ptdistill.data.waymo_convert import convert, pose_matrices

CONFIG = OmegaConf.load(Path(__file__).parents[1] / "conf" / "dataset" / "waymo.yaml")
SPLITS = dict(CONFIG.splits)


def write_frame(root: Path, folder: str, name: str, coord, strength, segment=None) -> Path:
    frame = root / folder / name
    frame.mkdir(parents=True)
    np.save(frame / "coord.npy", coord)
    np.save(frame / "strength.npy", strength)
    if segment is not None:
        np.save(frame / "segment.npy", segment)
    return frame


def random_frame(rng, num_points=30):
    coord = rng.normal(0, 10, (num_points, 3)).astype(np.float32)
    return coord, rng.uniform(0, 1, (num_points, 1)).astype(np.float32), rng.integers(-1, 22, num_points)


@pytest.fixture
def waymo(tmp_path):
    """Two training frames in two segments, one validation frame, one unlabelled testing frame."""
    rng = np.random.default_rng(0)
    frames = {}
    for folder, name in (("training", "seg_b/100"), ("training", "seg_a/200"), ("validation", "seg_c/1"),
                         ("testing", "seg_d/5")):
        frames[name] = random_frame(rng)
        write_frame(tmp_path, folder, name, *frames[name][:2], None if folder == "testing" else frames[name][2])
    return tmp_path, frames


def dataset(root, split="train", **kwargs):
    return WaymoDataset(str(root), split, SPLITS, CONFIG.num_classes, list(CONFIG.labelled_splits), **kwargs)


def test_reads_frames_and_splits(waymo):
    root, frames = waymo
    data = dataset(root)
    assert data.names == ["seg_a/200", "seg_b/100"]
    for i, name in enumerate(data.names):
        sample = data[i]
        for key, expected in zip(("coord", "strength", "segment"), frames[name]):
            np.testing.assert_array_equal(sample[key], expected)
    assert dataset(root, "val").names == ["seg_c/1"]
    assert (dataset(root, "test")[0]["segment"] == -1).all()
    assert len(CONFIG.class_names) == CONFIG.num_classes == 22


def test_missing_root_shows_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"(?s)absent: no such directory.*segment.npy"):
        dataset(tmp_path / "absent")


@pytest.mark.parametrize(
    "file, array, problem",
    [
        ("coord.npy", np.full((30, 3), np.nan, np.float32), "NaN or Inf coordinates"),
        ("coord.npy", np.zeros((0, 3), np.float32), "empty scan"),
        ("coord.npy", np.zeros((30, 4), np.float32), r"shape \(30, 4\), expected float \(N, 3\)"),
        ("strength.npy", np.zeros((29, 1), np.float32), "29 rows for the 30 points"),
        ("segment.npy", np.zeros(31, np.int64), "31 rows for the 30 points"),
        ("segment.npy", np.full(30, 22), r"label ids \[22\] are outside the 22 classes"),
        ("segment.npy", None, "missing label file"),
        ("segment.npy", b"not numpy", "unreadable .npy file"),
    ],
)
def test_bad_files_name_file_and_problem(waymo, file, array, problem):
    root, _ = waymo
    data = dataset(root)
    path = data.frames[0] / file
    if array is None:
        path.unlink()
    elif isinstance(array, bytes):
        path.write_bytes(array)
    else:
        np.save(path, array)
    with pytest.raises(BadSampleError, match=problem) as error:
        data[0]
    assert str(error.value).startswith(str(data.frames[0]))


def test_skip_policy_logs_and_counts(waymo, caplog):
    root, _ = waymo
    data = dataset(root, skip_bad=True)
    (data.frames[0] / "segment.npy").unlink()
    with caplog.at_level(logging.WARNING):
        assert [data[i]["name"] for i in range(2)] == ["seg_b/100", "seg_b/100"]
    assert len(data.skipped) == 1 and "seg_a/200/segment.npy" in caplog.text


# The converter: one segment, two frames, the top lidar (beam inclinations listed, per-pixel poses, labels
# in the second frame only) and the front lidar (uniform inclinations, no labels).
H, W = 4, 8
TOP_INCLINATION = np.radians([-17.0, -8.0, -2.0, 2.0])  # bottom row first, as in the calibration
FRONT_RANGE = np.radians([-30.0, 30.0])
TIMESTAMPS = [1000, 2000]


def list_column(rows):
    return pa.array(rows, type=pa.list_(pa.float32() if isinstance(rows[0][0], float) else pa.int32()))


def write_parquet(path: Path, columns: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def write_v2_segment(source: Path, rng) -> dict:
    """The v2 components of one segment under source/training; returns what the conversion must give."""
    split, segment = source / "training", "segment-1_with_camera_labels"
    yaw = np.radians(30)
    extrinsic = np.array([[np.cos(yaw), -np.sin(yaw), 0, 1.4], [np.sin(yaw), np.cos(yaw), 0, 0.1], [0, 0, 1, 2.2],
                          [0, 0, 0, 1]])
    frame_pose = pose_matrices(np.array([0.01, -0.02, 1.2, 50.0, -20.0, 3.0]))
    shift = np.array([0.5, -0.25, 0.0])  # each top-lidar pixel was captured with the vehicle here (frame coords)
    pixel_pose = np.array([0.01, -0.02, 1.2, *(frame_pose[:3, :3] @ shift + frame_pose[:3, 3])])
    lidar, pose, label = {}, {}, {}
    for t in TIMESTAMPS:
        for laser in (1, 2):
            ranges = [rng.uniform(5, 50, (H, W)) * (rng.random((H, W)) > 0.2) for _ in range(2)]
            images = [np.stack([r, rng.uniform(0, 3, (H, W)), np.zeros((H, W)), np.zeros((H, W))], -1) for r in ranges]
            lidar[(t, laser)] = images
        pose[t] = [np.broadcast_to(pixel_pose, (H, W, 6)) for _ in range(2)]
        if t == TIMESTAMPS[1]:
            label[t] = [np.stack([np.zeros((H, W)), rng.integers(0, 23, (H, W))], -1) for _ in range(2)]
    keys = sorted(lidar)
    key_columns = {"key.segment_context_name": [segment] * len(keys), "key.frame_timestamp_micros": [k[0] for k in keys],
                   "key.laser_name": [k[1] for k in keys]}
    write_parquet(split / "lidar" / f"{segment}.parquet", key_columns | {
        f"[LiDARComponent].range_image_return{r + 1}.{field}": list_column(
            [lidar[k][r].ravel().tolist() if field == "values" else [H, W, 4] for k in keys])
        for r in range(2) for field in ("values", "shape")
    })
    write_parquet(split / "lidar_calibration" / f"{segment}.parquet", {
        "key.segment_context_name": [segment] * 2, "key.laser_name": [1, 2],
        "[LiDARCalibrationComponent].extrinsic.transform": list_column([extrinsic.ravel().tolist(), np.eye(4).ravel().tolist()]),
        "[LiDARCalibrationComponent].beam_inclination.values": pa.array([TOP_INCLINATION.tolist(), None], pa.list_(pa.float64())),
        "[LiDARCalibrationComponent].beam_inclination.min": [TOP_INCLINATION[0], FRONT_RANGE[0]],
        "[LiDARCalibrationComponent].beam_inclination.max": [TOP_INCLINATION[-1], FRONT_RANGE[1]],
    })
    write_parquet(split / "lidar_pose" / f"{segment}.parquet", {
        "key.segment_context_name": [segment] * 2, "key.frame_timestamp_micros": TIMESTAMPS, "key.laser_name": [1, 1],
        **{f"[LiDARPoseComponent].range_image_return{r + 1}.{field}": list_column(
            [pose[t][r].ravel().tolist() if field == "values" else [H, W, 6] for t in TIMESTAMPS])
           for r in range(2) for field in ("values", "shape")},
    })
    write_parquet(split / "vehicle_pose" / f"{segment}.parquet", {
        "key.segment_context_name": [segment] * 2, "key.frame_timestamp_micros": TIMESTAMPS,
        "[VehiclePoseComponent].world_from_vehicle.transform": list_column([frame_pose.ravel().tolist()] * 2),
    })
    write_parquet(split / "lidar_segmentation" / f"{segment}.parquet", {
        "key.segment_context_name": [segment], "key.frame_timestamp_micros": [TIMESTAMPS[1]], "key.laser_name": [1],
        **{f"[LiDARSegmentationLabelComponent].range_image_return{r + 1}.{field}": list_column(
            [label[TIMESTAMPS[1]][r].astype(int).ravel().tolist() if field == "values" else [H, W, 2]])
           for r in range(2) for field in ("values", "shape")},
    })
    return {"segment": segment, "lidar": lidar[(TIMESTAMPS[1], 1)], "front": lidar[(TIMESTAMPS[1], 2)],
            "label": label[TIMESTAMPS[1]], "extrinsic": extrinsic, "shift": shift}


def test_converter_range_images_to_points(tmp_path):
    expected = write_v2_segment(tmp_path / "v2", np.random.default_rng(0))
    convert(tmp_path / "v2", tmp_path / "waymo", ["training"])
    data = dataset(tmp_path / "waymo")
    assert data.names == [f"{expected['segment']}/{TIMESTAMPS[1]}"]  # the labelled frame only
    sample = data[0]
    # Top lidar (laser 1) first, return 1 then 2, pixels in row-major order; then the front lidar.
    top, front = expected["lidar"], expected["front"]
    top_valid, front_valid = [image[..., 0] > 0 for image in top], [image[..., 0] > 0 for image in front]
    sizes = [int(v.sum()) for v in (*top_valid, *front_valid)]
    assert len(sample["coord"]) == sum(sizes)
    coord = np.split(sample["coord"].astype(np.float64), np.cumsum(sizes)[:-1])
    segment = np.split(sample["segment"], np.cumsum(sizes)[:-1])
    strength = np.split(sample["strength"][:, 0], np.cumsum(sizes)[:-1])
    rows, columns = np.mgrid[:H, :W]
    column_azimuth = np.pi * (1 - 2 * (columns + 0.5) / W)  # in the vehicle frame, whatever the sensor's yaw
    for r in range(2):
        valid = top_valid[r]
        # Undo the per-pixel pose (a shift in the frame's vehicle coordinates), then the lidar's mounting.
        sensor = coord[r] - expected["shift"] - expected["extrinsic"][:3, 3]
        np.testing.assert_allclose(np.linalg.norm(sensor, axis=1), top[r][..., 0][valid], rtol=1e-5)
        elevation = np.arcsin(sensor[:, 2] / np.linalg.norm(sensor, axis=1))
        np.testing.assert_allclose(elevation, TOP_INCLINATION[::-1][rows[valid]], atol=1e-5)
        azimuth = np.arctan2(sensor[:, 1], sensor[:, 0])
        np.testing.assert_allclose(np.angle(np.exp(1j * (azimuth - column_azimuth[valid]))), 0, atol=1e-5)
        np.testing.assert_array_equal(segment[r], expected["label"][r][..., 1][valid] - 1)
        np.testing.assert_allclose(strength[r], np.tanh(top[r][..., 1][valid]), rtol=1e-6)
    uniform = FRONT_RANGE[0] + np.diff(FRONT_RANGE) * (np.arange(H) + 0.5) / H
    for r in range(2):
        points, valid = coord[2 + r], front_valid[r]
        np.testing.assert_allclose(np.arcsin(points[:, 2] / np.linalg.norm(points, axis=1)), uniform[::-1][rows[valid]],
                                   atol=1e-5)
        assert (segment[2 + r] == -1).all()  # no labels for the front lidar


def test_converter_names_a_missing_component(tmp_path):
    expected = write_v2_segment(tmp_path / "v2", np.random.default_rng(0))
    (tmp_path / "v2" / "training" / "lidar_pose" / f"{expected['segment']}.parquet").unlink()
    with pytest.raises(Exception, match=r"lidar_pose/segment-1_with_camera_labels.parquet: missing Waymo v2 component"):
        convert(tmp_path / "v2", tmp_path / "waymo", ["training"])
