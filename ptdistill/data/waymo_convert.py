"""Waymo Open Dataset v2 Parquet components -> the per-frame layout that `WaymoDataset` reads; pyarrow only.

    python -m ptdistill.data.waymo_convert SOURCE TARGET [--splits training validation testing]

    SOURCE/<split>/lidar/<segment context name>.parquet                range images, returns 1 and 2
    SOURCE/<split>/lidar_calibration/<segment context name>.parquet    extrinsics, beam inclinations
    SOURCE/<split>/lidar_pose/<segment context name>.parquet           per-pixel vehicle pose, top lidar
    SOURCE/<split>/vehicle_pose/<segment context name>.parquet         vehicle pose per frame
    SOURCE/<split>/lidar_segmentation/<segment context name>.parquet   labels (absent for testing)
    -> TARGET/<split>/<segment context name>/<frame timestamp>/{coord,strength,segment}.npy

Range images become points as in the Waymo devkit's `convert_range_image_to_point_cloud` (the
TensorFlow code, rewritten in numpy): row inclinations from `beam_inclination.values`, or uniform
between `.min` and `.max` when absent, top row first; azimuth from the pixel column, corrected by the
extrinsic's yaw; sensor -> vehicle frame through the extrinsic; the top lidar's points through their
per-pixel vehicle pose to the world, then back into the frame's vehicle pose (rolling-shutter
correction). Both returns of all five lidars are kept (range > 0). strength = tanh(intensity), as in
Pointcept's preprocessing. Labels exist only for the top lidar: the other lidars' points get -1,
as TYPE_UNDEFINED does. A labelled split keeps only its labelled frames (2 Hz).

Not converted: elongation and the no-label-zone flag (both dropped, as in Pointcept's layout). The
testing split is written whole; the benchmark scores only the frames of Waymo's
`3d_semseg_test_set_frames.txt`, which this script does not read.
"""

import argparse
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ptdistill.errors import UserError

log = logging.getLogger(__name__)

TOP_LASER = 1  # the laser_name enum: TOP 1, FRONT 2, SIDE_LEFT 3, SIDE_RIGHT 4, REAR 5
RETURNS = ("range_image_return1", "range_image_return2")
LIDAR = "[LiDARComponent]"
CALIBRATION = "[LiDARCalibrationComponent]"
PIXEL_POSE = "[LiDARPoseComponent]"
VEHICLE_POSE = "[VehiclePoseComponent]"
SEGMENTATION = "[LiDARSegmentationLabelComponent]"
KEYS = ("key.frame_timestamp_micros", "key.laser_name")
REQUIRED = ("lidar", "lidar_calibration", "lidar_pose", "vehicle_pose")


def inclinations(beam_inclination: dict, height: int, laser: int) -> np.ndarray:
    """inclination (H,) radians of each range-image row, top row first, from the calibration's
    beam_inclination {"values", "min", "max"}."""
    values = beam_inclination["values"]
    if values is None or len(values) == 0:  # uniform between min and max at row centres, as the devkit does
        low, high = float(beam_inclination["min"]), float(beam_inclination["max"])
        values = low + (high - low) * (np.arange(height) + 0.5) / height
    if len(values) != height:
        raise UserError(f"laser {laser}: {len(values)} beam inclinations for a range image of {height} rows")
    return np.asarray(values, dtype=np.float64)[::-1]


def pose_matrices(pose: np.ndarray) -> np.ndarray:
    """pose (..., 6) roll, pitch, yaw, x, y, z -> (..., 4, 4), rotation Rz(yaw) Ry(pitch) Rx(roll)."""
    roll, pitch, yaw = pose[..., 0], pose[..., 1], pose[..., 2]
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    matrix = np.zeros((*pose.shape[:-1], 4, 4))
    matrix[..., 0, :3] = np.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr], -1)
    matrix[..., 1, :3] = np.stack([sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr], -1)
    matrix[..., 2, :3] = np.stack([-sp, cp * sr, cp * cr], -1)
    matrix[..., :3, 3] = pose[..., 3:]
    matrix[..., 3, 3] = 1
    return matrix


def range_image_to_points(
    range_image: np.ndarray,
    extrinsic: np.ndarray,
    inclination: np.ndarray,
    pixel_pose: np.ndarray | None = None,
    frame_pose: np.ndarray | None = None,
) -> np.ndarray:
    """range_image (H, W, C) with range in channel 0 -> points (H, W, 3) in the vehicle frame.

    extrinsic (4, 4) vehicle_from_sensor; inclination (H,) top row first; pixel_pose (H, W, 4, 4)
    world_from_vehicle at each pixel's capture time and frame_pose (4, 4) world_from_vehicle of the frame
    (the top lidar; both or neither).
    """
    height, width = range_image.shape[:2]
    azimuth = (1 - 2 * (np.arange(width) + 0.5) / width) * np.pi - np.arctan2(extrinsic[1, 0], extrinsic[0, 0])
    distance = range_image[..., 0].astype(np.float64)  # (H, W)
    cos_incl = np.cos(inclination)[:, None]
    sensor = np.stack(
        [np.cos(azimuth) * cos_incl * distance, np.sin(azimuth) * cos_incl * distance, np.sin(inclination)[:, None] * distance],
        axis=-1,
    )  # (H, W, 3)
    points = sensor @ extrinsic[:3, :3].T + extrinsic[:3, 3]
    if pixel_pose is not None:
        world = np.einsum("hwij,hwj->hwi", pixel_pose[..., :3, :3], points) + pixel_pose[..., :3, 3]
        vehicle_from_world = np.linalg.inv(frame_pose)
        points = world @ vehicle_from_world[:3, :3].T + vehicle_from_world[:3, 3]
    return points


class Component:
    """One v2 component of one segment: rows keyed by (timestamp, laser), None where the component has no
    such key; list values are read from the Arrow columns on demand (a segment's range images as Python
    lists would take gigabytes)."""

    def __init__(self, source: Path, name: str, segment: str, required: bool = True):
        self.path = source / name / f"{segment}.parquet"
        self.rows: dict[tuple, int] = {}
        if not self.path.is_file():
            if required:
                raise UserError(f"{self.path}: missing Waymo v2 component {name!r}")
            return
        try:
            self.table = pq.read_table(self.path)
        except Exception as error:  # pyarrow raises several types for corrupt files
            raise UserError(f"{self.path}: unreadable Parquet file ({error})") from None
        keys = [self._column(k).to_pylist() if k in self.table.column_names else [None] * len(self.table) for k in KEYS]
        self.rows = {key: i for i, key in enumerate(zip(*keys))}

    def _column(self, name: str):
        if name not in self.table.column_names:
            raise UserError(f"{self.path}: no column {name!r} (not a Waymo v2 component file?)")
        return self.table.column(name)

    def value(self, key: tuple, column: str) -> np.ndarray:
        """The entry of `column` in the row of `key` as an array (None for a null)."""
        entry = self._column(column)[self.rows[key]]
        if not entry.is_valid:
            return None
        return entry.values.to_numpy(zero_copy_only=False) if hasattr(entry, "values") else np.asarray(entry.as_py())

    def image(self, key: tuple, prefix: str) -> np.ndarray:
        """The range image (H, W, C) stored under `prefix`.values / .shape in the row of `key`."""
        return self.value(key, f"{prefix}.values").reshape(self.value(key, f"{prefix}.shape"))


def convert_frame(timestamp: int, components: dict[str, Component]):
    """coord (N, 3) float32, strength (N, 1) float32, segment (N,) int16 of one frame, all lasers and returns."""
    lidar, calibration = components["lidar"], components["lidar_calibration"]
    labels = components["lidar_segmentation"]
    coords, strengths, segments = [], [], []
    for key in sorted(key for key in lidar.rows if key[0] == timestamp):
        laser = key[1]
        extrinsic = calibration.value((None, laser), f"{CALIBRATION}.extrinsic.transform").reshape(4, 4)
        beam_inclination = {
            field: calibration.value((None, laser), f"{CALIBRATION}.beam_inclination.{field}")
            for field in ("values", "min", "max")
        }
        for ret in RETURNS:
            range_image = lidar.image(key, f"{LIDAR}.{ret}")  # (H, W, 4) range, intensity, elongation, no-label zone
            poses = {}
            if laser == TOP_LASER:
                if key not in components["lidar_pose"].rows or (timestamp, None) not in components["vehicle_pose"].rows:
                    raise UserError(f"frame {timestamp}: the top lidar needs its lidar_pose and vehicle_pose rows")
                poses = {
                    "pixel_pose": pose_matrices(components["lidar_pose"].image(key, f"{PIXEL_POSE}.{ret}")),
                    "frame_pose": components["vehicle_pose"]
                    .value((timestamp, None), f"{VEHICLE_POSE}.world_from_vehicle.transform")
                    .reshape(4, 4),
                }
            inclination = inclinations(beam_inclination, len(range_image), laser)
            points = range_image_to_points(range_image, extrinsic, inclination, **poses)
            valid = range_image[..., 0] > 0
            coords.append(points[valid])
            strengths.append(np.tanh(range_image[..., 1][valid]))
            if key in labels.rows:  # channels: instance id, semantic type
                segments.append(labels.image(key, f"{SEGMENTATION}.{ret}")[..., 1][valid] - 1)
            else:
                segments.append(np.full(valid.sum(), -1))
    coord = np.concatenate(coords).astype(np.float32)
    return coord, np.concatenate(strengths).astype(np.float32)[:, None], np.concatenate(segments).astype(np.int16)


def convert_segment(source: Path, segment: str, target: Path) -> int:
    """Write the frames of one segment (all frames, or only the labelled ones when labels exist); their count."""
    components = {name: Component(source, name, segment) for name in REQUIRED}
    components["lidar_segmentation"] = Component(source, "lidar_segmentation", segment, required=False)
    labelled = bool(components["lidar_segmentation"].rows)
    timestamps = sorted({t for t, _ in components["lidar_segmentation" if labelled else "lidar"].rows})
    for timestamp in timestamps:
        coord, strength, segment_labels = convert_frame(timestamp, components)
        frame = target / segment / str(timestamp)
        frame.mkdir(parents=True, exist_ok=True)
        np.save(frame / "coord.npy", coord)
        np.save(frame / "strength.npy", strength)
        if labelled:
            np.save(frame / "segment.npy", segment_labels)
    return len(timestamps)


def convert(source: Path, target: Path, splits: list[str]) -> None:
    for split in splits:
        segments = sorted(path.stem for path in (source / split / "lidar").glob("*.parquet"))
        if not segments:
            raise UserError(f"{source / split / 'lidar'}: no Waymo v2 lidar Parquet files")
        for segment in segments:
            count = convert_segment(source / split, segment, target / split)
            log.info("%s/%s: %d frames", split, segment, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the v2 dataset root, holding <split>/<component>/")
    parser.add_argument("target", type=Path, help="the dataset root to write, e.g. data/waymo")
    parser.add_argument("--splits", nargs="+", default=["training", "validation", "testing"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    convert(args.source, args.target, args.splits)


if __name__ == "__main__":
    main()
