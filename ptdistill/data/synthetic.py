"""Synthetic LiDAR scans: procedural street scenes seen by a simulated spinning LiDAR.

A scene is a street (optionally with a crossing street) lined with curbed sidewalks, lots holding
buildings, gardens and parks, and street furniture: poles, trees, hedges, fences, parked and moving
cars, pedestrians. A spinning LiDAR (HDL-32E geometry by default) on a car in one of the lanes casts
its rays analytically against the scene (`raycast.py`), with range noise, dropout of weak returns and
an intensity from material reflectivity and incidence angle.

Scans are written in SemanticKITTI's on-disk layout with SemanticKITTI raw label ids (instance id in
the upper 16 bits), so `SemanticKITTIDataset` reads them through a learning map of its own.
"""

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ptdistill.data.raycast import Boxes, Cylinders, Ellipsoids, GroundPlane, cast

log = logging.getLogger(__name__)

# SemanticKITTI raw label ids (semantic-kitti.yaml) of the things this generator builds.
CAR, MOVING_CAR, PERSON, MOVING_PERSON = 10, 252, 30, 254
ROAD, LANE_MARKING, SIDEWALK, BUILDING, FENCE = 40, 60, 48, 50, 51
VEGETATION, TRUNK, TERRAIN, POLE = 70, 71, 72, 80

EXTENT = 60.0  # scene half-size in metres
MARKER = "synthetic.json"  # written last into the dataset root: the generation parameters


@dataclass(frozen=True)
class SpinningLidar:
    """A rotating multi-beam LiDAR. Defaults: Velodyne HDL-32E (+10.67..-30.67 deg vertical FOV);
    HDL-64E is beams=64, fov_up=2.0, fov_down=-24.8."""

    beams: int = 32
    fov_up: float = 10.67  # degrees
    fov_down: float = -30.67
    azimuth_steps: int = 1024  # rays per beam and turn
    max_range: float = 80.0  # metres
    range_noise: float = 0.02  # std of the range error, metres
    dropout: float = 0.05  # probability that a return is lost at random
    weak_return: float = 2e-4  # returns of power reflectivity * cos(incidence) / (range / 10 m)^2 well below this are lost
    mount_height: tuple[float, float] = (1.7, 1.9)  # metres above the road

    def directions(self) -> np.ndarray:
        """Unit ray directions in the sensor frame (x forward, y left, z up), beam-major. (beams * azimuth_steps, 3)"""
        elevation = np.radians(np.linspace(self.fov_up, self.fov_down, self.beams))[:, None]
        azimuth = np.linspace(0.0, 2 * np.pi, self.azimuth_steps, endpoint=False)[None, :]
        rays = np.stack(np.broadcast_arrays(np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)), axis=-1)
        return rays.reshape(-1, 3)

    def scan(self, scene: "Scene", rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One turn in `scene` from a sensor pose drawn from `scene.sensor_xy`.

        Returns points (N, 3) float32 in the sensor frame, intensity (N,) float32 in [0, 1] and
        label (N,) uint32 (raw semantic id | instance id << 16).
        """
        rays = self.directions()  # (R, 3) sensor frame
        yaw, pitch, roll = rng.uniform(0, 2 * np.pi), *np.radians(rng.normal(0, 1.0, 2))  # car on a slightly uneven road
        cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
        rotation = np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                             [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                             [-sp, cp * sr, cp * cr]])  # Rz(yaw) Ry(pitch) Rx(roll)
        origin = np.array([*scene.sensor_xy, rng.uniform(*self.mount_height)])
        world_rays = rays @ rotation.T
        hits = cast(origin, world_rays, scene.families())
        primitive = hits.primitive
        label, instance, reflectivity = scene.surface(primitive, hits.point)
        incidence = np.abs((hits.normal * world_rays).sum(axis=1))  # cos of the incidence angle
        rng_range = hits.t + rng.normal(0, self.range_noise, len(rays))
        rng_range += np.where(label == VEGETATION, rng.exponential(0.1, len(rays)), 0.0)  # rays enter foliage
        power = reflectivity * incidence / np.maximum(rng_range / 10.0, 1e-3) ** 2
        kept = (
            (primitive >= 0)
            & (hits.t < self.max_range)
            & (rng.random(len(rays)) >= self.dropout)
            & (rng.random(len(rays)) < 1 - np.exp(-power / self.weak_return))
        )
        texture = 1 + rng.normal(0, 1, len(rays)) * np.where(label == TERRAIN, 0.25, 0.1)
        intensity = np.clip(reflectivity * incidence * texture + rng.normal(0, 0.01, len(rays)), 0, 1)
        points = rng_range[kept, None] * rays[kept]
        return points.astype(np.float32), intensity[kept].astype(np.float32), (label | instance << 16)[kept].astype(np.uint32)


SHAPE_SIZES = {"box": 7, "cylinder": 5, "ellipsoid": 6}  # numbers describing one primitive of each kind


@dataclass
class Scene:
    """Primitives with a raw label, an instance id and a reflectivity each, on a ground plane whose
    label (road, lane marking or terrain) depends on where the roads run."""

    sensor_xy: tuple[float, float]
    roads: list[tuple[int, float, float]]  # (0: along x | 1: along y, centre, half width)
    ground_reflectivity: dict[int, float]  # raw label -> reflectivity
    primitives: dict[str, list] = field(default_factory=lambda: {kind: [] for kind in SHAPE_SIZES})
    # kind -> [(shape numbers, (raw label, instance, reflectivity))]

    def box(self, label, reflectivity, x0, x1, y0, y1, z0, z1, yaw=0.0, instance=0):
        """Box spanning [x0, x1] x [y0, y1] x [z0, z1] before its rotation by yaw about its centre."""
        shape = ((x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2, abs(x1 - x0) / 2, abs(y1 - y0) / 2, (z1 - z0) / 2, yaw)
        self.primitives["box"].append((shape, (label, instance, reflectivity)))

    def cylinder(self, label, reflectivity, x, y, radius, height, z=0.0, instance=0):
        self.primitives["cylinder"].append(((x, y, z, radius, height), (label, instance, reflectivity)))

    def ellipsoid(self, label, reflectivity, x, y, z, rx, ry, rz, instance=0):
        self.primitives["ellipsoid"].append(((x, y, z, rx, ry, rz), (label, instance, reflectivity)))

    def families(self) -> list:
        """Primitive families in the order `surface` indexes them: ground, boxes, cylinders, ellipsoids."""
        box, cylinder, ellipsoid = (
            np.array([shape for shape, _ in self.primitives[kind]], dtype=float).reshape(-1, size) for kind, size in SHAPE_SIZES.items()
        )
        return [
            GroundPlane(),
            Boxes(box[:, :3], box[:, 3:6], box[:, 6]),
            Cylinders(cylinder[:, :3], cylinder[:, 3], cylinder[:, 4]),
            Ellipsoids(ellipsoid[:, :3], ellipsoid[:, 3:]),
        ]

    def surface(self, primitive: np.ndarray, point: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw label, instance id and reflectivity of every hit. primitive (R,) (-1: miss, 0: ground), point (R, 3)."""
        attributes = np.array([(0, 0, 0.0)] + [a for kind in SHAPE_SIZES for _, a in self.primitives[kind]], dtype=float)
        label, instance, reflectivity = attributes[primitive].T  # row -1 (a miss) is overwritten below
        label = label.astype(np.int64)
        on_ground = primitive == 0
        label[on_ground] = self._ground_label(point[on_ground])
        for raw, value in self.ground_reflectivity.items():
            reflectivity[on_ground & (label == raw)] = value
        label[primitive < 0], reflectivity[primitive < 0] = 0, 0.0
        return label, instance.astype(np.int64), reflectivity

    def _ground_label(self, point: np.ndarray) -> np.ndarray:
        """Road inside a road strip (lane markings: dashed centre line, solid edge lines), terrain elsewhere."""
        label = np.full(len(point), TERRAIN)
        for axis, centre, half_width in self.roads:
            across = np.abs(point[:, 1 - axis] - centre)
            along = point[:, axis]
            inside = across <= half_width
            marking = ((across < 0.07) & (np.mod(along, 9.0) < 3.0)) | (np.abs(across - (half_width - 0.3)) < 0.06)
            label[inside] = np.where(marking[inside], LANE_MARKING, ROAD)
        return label


def street_scene(rng: np.random.Generator) -> Scene:
    """A random street: lanes, curbed sidewalks, lots on both sides, furniture, cars and people."""
    half_road = rng.uniform(3.0, 6.5)
    walk = rng.uniform(1.5, 4.0)  # sidewalk width
    curb = rng.uniform(0.08, 0.2)
    lanes = np.arange(-half_road + 1.6, half_road - 1.5, 3.2)  # lane centres
    scene = Scene(
        sensor_xy=(rng.uniform(-3, 3), float(rng.choice(lanes)) + rng.normal(0, 0.2)),
        roads=[(0, 0.0, half_road)],
        ground_reflectivity={ROAD: rng.uniform(0.07, 0.15), LANE_MARKING: rng.uniform(0.6, 0.8), TERRAIN: rng.uniform(0.3, 0.45)},
    )
    walk_reflectivity = rng.uniform(0.22, 0.32)
    blocks = [(-EXTENT, EXTENT, None)]  # (x0, x1, x of the corner with the crossing street)
    if rng.random() < 0.5:
        cross_x, cross_half = rng.uniform(-30, 30), rng.uniform(3.0, 5.0)
        scene.roads.append((1, cross_x, cross_half))
        blocks = [(-EXTENT, cross_x - cross_half, cross_x - cross_half), (cross_x + cross_half, EXTENT, cross_x + cross_half)]

    instance = iter(range(1, 2**16))
    for side in (-1, 1):
        for x0, x1, corner in blocks:
            scene.box(SIDEWALK, walk_reflectivity, x0, x1, side * half_road, side * (half_road + walk), 0, curb)
            if corner is not None:  # the sidewalk around the corner, along the crossing street
                inward = -walk if corner == x1 else walk
                scene.box(SIDEWALK, walk_reflectivity, corner, corner + inward, side * (half_road + walk), side * EXTENT, 0, curb)
                x0, x1 = (x0, x1 - walk) if corner == x1 else (x0 + walk, x1)
            _furnish_sidewalk(scene, rng, x0, x1, side, half_road, walk, curb, instance)
            _fill_lots(scene, rng, x0, x1, side, half_road + walk, instance)
    _add_traffic(scene, rng, lanes, instance)
    return scene


def _furnish_sidewalk(scene, rng, x0, x1, side, half_road, walk, curb, instance):
    """Poles at the curb, street trees in the middle of wide sidewalks, pedestrians, parked cars."""
    for x in np.arange(x0 + rng.uniform(2, 8), x1 - 1, rng.uniform(6, 14)):
        scene.cylinder(POLE, rng.uniform(0.4, 0.8), x, side * (half_road + 0.4), rng.uniform(0.06, 0.15), rng.uniform(4, 10), z=curb)
    if walk > 2.2 and rng.random() < 0.8:
        for x in np.arange(x0 + rng.uniform(3, 8), x1 - 2, rng.uniform(6, 12)):
            _tree(scene, rng, x + rng.normal(0, 0.3), side * (half_road + walk / 2), z=curb)
    for _ in range(rng.integers(3, 10)):
        _person(scene, rng, rng.uniform(x0, x1), side * (half_road + rng.uniform(0.4, walk - 0.3)), PERSON, next(instance), z=curb)
    for x in np.arange(x0 + rng.uniform(1, 6), x1 - 5, rng.uniform(5.5, 9)):
        if rng.random() < 0.6:
            _car(scene, rng, x, side * (half_road - 1.1), rng.normal(0, 0.05), CAR, next(instance))


def _fill_lots(scene, rng, x0, x1, side, front, instance):
    """Parcels along the frontage y = side * front: buildings, gardens (house, fence or hedge) or parks."""
    x = x0
    while x < x1 - 4:
        width = min(rng.uniform(8, 25), x1 - x)
        kind = rng.choice(["building", "garden", "park"], p=[0.35, 0.35, 0.3])
        if kind == "building":
            setback = rng.uniform(0, 3) * (rng.random() < 0.5)
            gap = rng.uniform(0, 3)
            scene.box(BUILDING, rng.uniform(0.15, 0.6), x + gap / 2, x + width - gap / 2,
                      side * (front + setback), side * (front + setback + rng.uniform(8, 20)), 0, rng.uniform(4, 20))
        else:
            if kind == "garden" or rng.random() < 0.7:
                _boundary(scene, rng, x, x + width, side * (front + 0.3))
            if kind == "garden":
                setback = rng.uniform(5, 12)
                scene.box(BUILDING, rng.uniform(0.15, 0.6), x + 1, x + width - 1,
                          side * (front + setback), side * (front + setback + rng.uniform(6, 12)), 0, rng.uniform(3.5, 9))
                depth = setback
            else:
                depth = EXTENT - front
            if rng.random() < 0.5:  # a raised lawn bed: terrain at the height of the sidewalk or above
                scene.box(TERRAIN, rng.uniform(0.3, 0.45), x + 1, x + width - 1, side * (front + 1), side * (front + depth - 1), 0, rng.uniform(0.05, 0.4))
            for _ in range(rng.integers(1, 3 + 3 * (kind == "park"))):
                _tree(scene, rng, rng.uniform(x + 1, x + width - 1), side * (front + rng.uniform(1.5, depth)))
            for _ in range(rng.integers(0, 3 + 3 * (kind == "park"))):
                _bush(scene, rng, rng.uniform(x + 0.5, x + width - 0.5), side * (front + rng.uniform(1, depth)))
            for _ in range(rng.integers(0, 3)):
                _person(scene, rng, rng.uniform(x + 1, x + width - 1), side * (front + rng.uniform(1, depth)), PERSON, next(instance))
        x += width


def _boundary(scene, rng, x0, x1, y):
    """A fence or a hedge along y, with a gate gap."""
    gate = rng.uniform(x0, x1)
    for a, b in ((x0, gate - 0.6), (gate + 0.6, x1)):
        if b - a < 0.5:
            continue
        if rng.random() < 0.6:
            thickness = rng.uniform(0.04, 0.12)
            scene.box(FENCE, rng.uniform(0.2, 0.6), a, b, y - thickness / 2, y + thickness / 2, 0, rng.uniform(0.8, 2.0))
        else:
            thickness = rng.uniform(0.5, 1.2)
            scene.box(VEGETATION, rng.uniform(0.4, 0.6), a, b, y - thickness / 2, y + thickness / 2, 0, rng.uniform(0.6, 1.8))


def _tree(scene, rng, x, y, z=0.0):
    trunk_height = rng.uniform(1.8, 4.0)
    scene.cylinder(TRUNK, rng.uniform(0.15, 0.3), x, y, rng.uniform(0.1, 0.3), trunk_height, z=z)
    crown = rng.uniform(1.2, 3.0)
    crown_z = rng.uniform(1.2, 2.8)
    scene.ellipsoid(VEGETATION, rng.uniform(0.4, 0.6), x, y, z + trunk_height + 0.6 * crown_z, crown, crown * rng.uniform(0.8, 1.2), crown_z)


def _bush(scene, rng, x, y):
    height = rng.uniform(0.4, 1.2)
    scene.ellipsoid(VEGETATION, rng.uniform(0.4, 0.6), x, y, rng.uniform(0, 0.5) * height, rng.uniform(0.4, 1.5), rng.uniform(0.4, 1.5), height)


def _person(scene, rng, x, y, label, instance, z=0.0):
    """Body and head ellipsoids."""
    height = rng.uniform(1.5, 1.95)
    reflectivity = rng.uniform(0.2, 0.6)
    scene.ellipsoid(label, reflectivity, x, y, z + 0.45 * height, rng.uniform(0.18, 0.26), rng.uniform(0.15, 0.22), 0.45 * height, instance)
    scene.ellipsoid(label, reflectivity, x, y, z + height - 0.11, 0.1, 0.1, 0.12, instance)


def _car(scene, rng, x, y, yaw, label, instance):
    """Body and cabin boxes; the cabin (glass) is darker than the paint."""
    length, width = rng.uniform(3.6, 5.0), rng.uniform(1.6, 2.0)
    clearance, body = rng.uniform(0.2, 0.35), rng.uniform(0.55, 0.85)
    scene.box(label, rng.uniform(0.05, 0.8), x - length / 2, x + length / 2, y - width / 2, y + width / 2, clearance, clearance + body, yaw, instance)
    cabin = length * rng.uniform(0.45, 0.6)
    shift = rng.uniform(-0.15, 0.05) * length
    cx, cy = x + shift * np.cos(yaw), y + shift * np.sin(yaw)
    scene.box(label, rng.uniform(0.05, 0.15), cx - cabin / 2, cx + cabin / 2, cy - 0.45 * width, cy + 0.45 * width,
              clearance + body, clearance + body + rng.uniform(0.4, 0.65), yaw, instance)


def _add_traffic(scene, rng, lanes, instance):
    """Moving cars in the lanes, clear of the sensor's own car, and people crossing the road."""
    sensor_x, sensor_y = scene.sensor_xy
    for _ in range(rng.integers(0, 5)):
        x, y = rng.uniform(-EXTENT + 5, EXTENT - 5), float(rng.choice(lanes))
        if abs(x - sensor_x) > 6 or abs(y - sensor_y) > 2:
            _car(scene, rng, x, y, rng.normal(0, 0.03) + np.pi * (rng.random() < 0.5), MOVING_CAR, next(instance))
    for _ in range(rng.integers(0, 3)):
        x, y = sensor_x + rng.uniform(-25, 25), rng.uniform(lanes[0], lanes[-1])
        if abs(x - sensor_x) > 4:
            _person(scene, rng, x, y, MOVING_PERSON, next(instance))


def generate_scan(seed: int | list[int], lidar: SpinningLidar) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scan of a fresh random street; fully determined by `seed`. See `SpinningLidar.scan`."""
    rng = np.random.default_rng(seed)
    return lidar.scan(street_scene(rng), rng)


def write_scan(directory: Path, name: str, points: np.ndarray, intensity: np.ndarray, label: np.ndarray) -> None:
    """Write a scan as `directory/velodyne/<name>.bin` (float32 x, y, z, remission) and `labels/<name>.label`."""
    np.concatenate([points, intensity[:, None]], axis=1).astype(np.float32).tofile(directory / "velodyne" / f"{name}.bin")
    label.astype(np.uint32).tofile(directory / "labels" / f"{name}.label")


def generate_dataset(root: str, splits: dict[str, list[str]], num_scans: dict[str, int], seed: int = 0, lidar: SpinningLidar | None = None) -> None:
    """Generate the synthetic dataset into `root/sequences/<seq>/{velodyne,labels}` unless it is there.

    Every sequence of split s gets num_scans[s] scans; scan i of sequence q comes from seed (seed, q, i).
    `root/synthetic.json` records the parameters and is written last: when it matches, nothing is done;
    when it differs, the sequences are regenerated. A root holding anything else is never overwritten.
    """
    lidar = lidar or SpinningLidar()
    root = Path(root)
    params = {"splits": {s: list(map(str, q)) for s, q in splits.items()}, "num_scans": dict(num_scans), "seed": seed, "lidar": asdict(lidar)}
    params = json.loads(json.dumps(params))  # tuples -> lists, so that it compares equal to the file
    marker = root / MARKER
    if marker.exists() and json.loads(marker.read_text()) == params:
        return
    if root.exists() and any(root.iterdir()) and not marker.exists():
        raise FileExistsError(f"{root}: not empty and not a synthetic dataset ({MARKER} missing); refusing to write into it")
    marker.unlink(missing_ok=True)
    shutil.rmtree(root / "sequences", ignore_errors=True)
    start, total = time.perf_counter(), 0
    for split, sequences in params["splits"].items():
        for sequence in sequences:
            directory = root / "sequences" / sequence
            (directory / "velodyne").mkdir(parents=True)
            (directory / "labels").mkdir()
            for i in range(num_scans[split]):
                write_scan(directory, f"{i:06d}", *generate_scan([seed, int(sequence), i], lidar))
                total += 1
    marker.write_text(json.dumps(params, indent=2))
    log.info("Generated %d synthetic scans in %s (%.2f s per scan)", total, root, (time.perf_counter() - start) / max(total, 1))
