"""Analytic ray casting against planes, boxes, cylinders and ellipsoids, vectorised in numpy.

All rays start at one origin (the sensor). Each primitive family returns the distance `t (R, P)` from
the origin along every ray `dirs (R, 3)` (unit vectors) to every primitive, `inf` where the ray misses;
`cast` keeps the nearest hit, so occlusion comes for free.
"""

from dataclasses import dataclass

import numpy as np


def _rotate_z(x: np.ndarray, y: np.ndarray, yaw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotate the vectors (x, y) by -yaw: world frame into the frame of a primitive with that yaw."""
    cos, sin = np.cos(yaw), np.sin(yaw)
    return cos * x + sin * y, cos * y - sin * x


def _nearest_root(a: np.ndarray, half_b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Smaller root of a t^2 + 2 half_b t + c = 0 where it is positive, else inf."""
    disc = half_b**2 - a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (-half_b - np.sqrt(disc)) / a
    return np.where((disc >= 0) & (t > 0), t, np.inf)


@dataclass
class Boxes:
    """Boxes rotated about z. center (P, 3), half (P, 3) half extents, yaw (P,) radians."""

    center: np.ndarray
    half: np.ndarray
    yaw: np.ndarray

    def distance(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Slab test in each box's frame. origin (3,), dirs (R, 3) -> t (R, P)."""
        ox, oy = _rotate_z(*(origin[:2] - self.center[:, :2]).T, self.yaw)  # (P,)
        local_origin = np.stack([ox, oy, origin[2] - self.center[:, 2]], axis=1)  # (P, 3)
        dx, dy = _rotate_z(dirs[:, :1], dirs[:, 1:2], self.yaw)  # (R, P)
        t_near = np.zeros(dx.shape, dtype=dirs.dtype)
        t_far = np.full(dx.shape, np.inf, dtype=dirs.dtype)
        with np.errstate(divide="ignore", invalid="ignore"):
            for axis, d in enumerate((dx, dy, dirs[:, 2:3])):
                inv = 1.0 / d
                t1 = (-self.half[:, axis] - local_origin[:, axis]) * inv
                t2 = (self.half[:, axis] - local_origin[:, axis]) * inv
                t_near = np.maximum(t_near, np.minimum(t1, t2))
                t_far = np.minimum(t_far, np.maximum(t1, t2))
        return np.where((t_near <= t_far) & (t_near > 0), t_near, np.inf)

    def normal(self, points: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Outward normal of the face each hit lies on. points (M, 3), index (M,) -> (M, 3)."""
        yaw = self.yaw[index]
        offset = points - self.center[index]
        lx, ly = _rotate_z(offset[:, 0], offset[:, 1], yaw)
        local = np.stack([lx, ly, offset[:, 2]], axis=1) / self.half[index]  # on the face: |coord| = 1
        axis = np.abs(local).argmax(axis=1)
        normal = np.zeros_like(points)
        normal[np.arange(len(points)), axis] = np.sign(local[np.arange(len(points)), axis])
        cos, sin = np.cos(yaw), np.sin(yaw)
        return np.stack([cos * normal[:, 0] - sin * normal[:, 1], sin * normal[:, 0] + cos * normal[:, 1], normal[:, 2]], axis=1)


@dataclass
class Cylinders:
    """Upright cylinders with a top cap. base (P, 3) centre of the bottom, radius (P,), height (P,)."""

    base: np.ndarray
    radius: np.ndarray
    height: np.ndarray

    def distance(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Side wall (quadratic in the xy plane) or top cap. origin (3,), dirs (R, 3) -> t (R, P)."""
        o = origin - self.base  # (P, 3)
        dx, dy, dz = dirs[:, :1], dirs[:, 1:2], dirs[:, 2:3]
        side = _nearest_root(dx**2 + dy**2, o[:, 0] * dx + o[:, 1] * dy, o[:, 0] ** 2 + o[:, 1] ** 2 - self.radius**2)
        z = o[:, 2] + side * dz
        side = np.where((z >= 0) & (z <= self.height), side, np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            cap = (self.height - o[:, 2]) / dz
        radial = (o[:, 0] + cap * dx) ** 2 + (o[:, 1] + cap * dy) ** 2
        cap = np.where((cap > 0) & (radial <= self.radius**2), cap, np.inf)
        return np.minimum(side, cap)

    def normal(self, points: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Up on the cap, radial on the wall. points (M, 3), index (M,) -> (M, 3)."""
        offset = points - self.base[index]
        on_cap = np.hypot(offset[:, 0], offset[:, 1]) < self.radius[index] * (1 - 1e-3)
        normal = np.where(on_cap[:, None], [0.0, 0.0, 1.0], offset * [1.0, 1.0, 0.0])
        return normal / np.linalg.norm(normal, axis=1, keepdims=True)


@dataclass
class Ellipsoids:
    """Axis-aligned ellipsoids. center (P, 3), radii (P, 3)."""

    center: np.ndarray
    radii: np.ndarray

    def distance(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Unit-sphere test after scaling space by 1 / radii. origin (3,), dirs (R, 3) -> t (R, P)."""
        o = (origin - self.center) / self.radii  # (P, 3)
        d = dirs[:, None, :] / self.radii  # (R, P, 3)
        return _nearest_root((d**2).sum(axis=2), (d * o).sum(axis=2), (o**2).sum(axis=1) - 1)

    def normal(self, points: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Gradient of the implicit function. points (M, 3), index (M,) -> (M, 3)."""
        normal = (points - self.center[index]) / self.radii[index] ** 2
        return normal / np.linalg.norm(normal, axis=1, keepdims=True)


@dataclass
class GroundPlane:
    """The plane z = 0, seen from above."""

    def distance(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """origin (3,) with z > 0, dirs (R, 3) -> t (R, 1)."""
        with np.errstate(divide="ignore"):
            t = -origin[2] / dirs[:, 2:3]
        return np.where(t > 0, t, np.inf)

    def normal(self, points: np.ndarray, index: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.array([0.0, 0.0, 1.0]), points.shape)


@dataclass
class Hits:
    """Nearest hit of every ray. t (R,) distance, inf where nothing was hit; primitive (R,) index into the
    concatenation of all families' primitives, -1 where nothing was hit; normal (R, 3) unit outward normal."""

    t: np.ndarray
    primitive: np.ndarray
    normal: np.ndarray


def cast(origin: np.ndarray, dirs: np.ndarray, families: list) -> Hits:
    """Nearest hit of rays origin + t dirs among all primitives of `families`. origin (3,), dirs (R, 3)."""
    t = np.full(len(dirs), np.inf)
    primitive = np.full(len(dirs), -1)
    family_of = np.full(len(dirs), -1)
    first = 0
    for k, family in enumerate(families):
        distance = family.distance(origin, dirs)  # (R, P_k)
        nearest = distance.argmin(axis=1)
        t_k = distance[np.arange(len(dirs)), nearest]
        closer = t_k < t
        t[closer], primitive[closer], family_of[closer] = t_k[closer], first + nearest[closer], k
        first += distance.shape[1]
    normal = np.zeros_like(dirs)
    points = origin + t[:, None] * dirs
    first = 0
    for k, family in enumerate(families):
        mine = family_of == k
        normal[mine] = family.normal(points[mine], primitive[mine] - first)
        first += family.distance(origin, dirs[:1]).shape[1]
    return Hits(t, primitive, normal)
