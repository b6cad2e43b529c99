"""A simulated spinning multi-beam LiDAR: ray pattern, pose, range noise, dropout and intensity."""

from dataclasses import dataclass

import numpy as np

from ptdistill.data.synthetic.raycast import cast
from ptdistill.data.synthetic.street import TERRAIN, VEGETATION, Scene


@dataclass(frozen=True)
class SpinningLidar:
    """Beams spread evenly over the vertical field of view, each fired at `azimuth_steps` angles a turn.

    Defaults: Velodyne HDL-32E (+10.67..-30.67 deg); HDL-64E is beams=64, fov_up=2.0, fov_down=-24.8.
    A return is lost at random (`dropout`) and more likely when weak: it survives with probability
    1 - exp(-power / weak_return), power = reflectivity * cos(incidence) / (range / 10 m)^2.
    Intensity is reflectivity * (0.3 + 0.7 cos(incidence)), a Lambertian share plus a floor that keeps
    grazing returns (far ground) telling materials apart, times a surface texture, plus read-out noise.
    """

    beams: int = 32
    fov_up: float = 10.67  # degrees
    fov_down: float = -30.67
    azimuth_steps: int = 1024
    max_range: float = 80.0  # metres
    range_noise: float = 0.02  # std of the range error, metres
    dropout: float = 0.05
    weak_return: float = 2e-4
    mount_height: tuple[float, float] = (1.7, 1.9)  # metres above the road, drawn per scan
    tilt: float = 1.0  # std of the car's pitch and roll on an uneven road, degrees

    def directions(self) -> np.ndarray:
        """Unit rays in the sensor frame (x forward, y left, z up), beam by beam. (beams * azimuth_steps, 3)"""
        elevation = np.radians(np.linspace(self.fov_up, self.fov_down, self.beams))[:, None]
        azimuth = np.linspace(0.0, 2 * np.pi, self.azimuth_steps, endpoint=False)[None, :]
        x, y = np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth)
        return np.stack(np.broadcast_arrays(x, y, np.sin(elevation)), axis=-1).reshape(-1, 3)

    def pose(self, scene: Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Sensor origin (3,) in the scene and rotation (3, 3) sensor -> scene: any heading, a small tilt."""
        yaw = rng.uniform(0, 2 * np.pi)
        pitch, roll = np.radians(rng.normal(0, self.tilt, 2))
        cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
        rotation = np.array([  # Rz(yaw) Ry(pitch) Rx(roll)
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ])  # fmt: skip
        return np.array([*scene.sensor_xy, rng.uniform(*self.mount_height)]), rotation

    def scan(self, scene: Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One turn in `scene`. Returns points (N, 3) float32 in the sensor frame, intensity (N,) float32
        and label (N,) uint32 (raw semantic id | instance id << 16)."""
        rays = self.directions()  # (R, 3) sensor frame
        origin, rotation = self.pose(scene, rng)
        world_rays = rays @ rotation.T
        hits = cast(origin, world_rays, scene.families())
        label, instance, reflectivity = scene.surface(hits.primitive, hits.point)
        incidence = np.abs((hits.normal * world_rays).sum(axis=1))  # cos of the incidence angle (R,)
        distance = hits.t + rng.normal(0, self.range_noise, len(rays))
        distance += np.where(label == VEGETATION, rng.exponential(0.1, len(rays)), 0.0)  # rays enter foliage
        power = reflectivity * incidence / np.maximum(distance / 10.0, 1e-3) ** 2
        kept = (
            (hits.primitive >= 0)
            & (hits.t < self.max_range)
            & (rng.random(len(rays)) >= self.dropout)
            & (rng.random(len(rays)) < 1 - np.exp(-power / self.weak_return))
        )
        texture = 1 + rng.normal(0, 1, len(rays)) * np.where(label == TERRAIN, 0.25, 0.1)
        shading = 0.3 + 0.7 * incidence
        intensity = np.clip(reflectivity * shading * texture + rng.normal(0, 0.01, len(rays)), 0, 1)
        points = distance[kept, None] * rays[kept]  # sensor frame
        label = (label | instance << 16)[kept].astype(np.uint32)
        return points.astype(np.float32), intensity[kept].astype(np.float32), label
