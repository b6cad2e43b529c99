"""Analytic ray casting against planes, boxes, cylinders and ellipsoids, vectorised in numpy.

All rays start at one origin (the sensor). `cast` pairs each primitive only with the rays whose
azimuth can reach its bounding sphere, computes the distance of every (ray, primitive) pair
analytically in one vectorised call per primitive family, and keeps the nearest hit of every ray,
so occlusion comes for free.
"""

from dataclasses import dataclass

import numpy as np


def _unrotate(x: np.ndarray, y: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotate the vectors (x, y) by -yaw, given cos(yaw) and sin(yaw): into the frame of a turned primitive."""
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

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.center, np.linalg.norm(self.half, axis=1)

    def distance(self, origin: np.ndarray, dirs: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Slab test in each box's frame. origin (3,), dirs (M, 3), index (M,) -> t (M,)."""
        cos, sin = np.cos(self.yaw), np.sin(self.yaw)  # (P,)
        offset = origin - self.center  # (P, 3)
        ox, oy = _unrotate(offset[:, 0], offset[:, 1], cos, sin)
        local_origin = np.stack([ox, oy, offset[:, 2]], axis=1)[index]  # (M, 3)
        dx, dy = _unrotate(dirs[:, 0], dirs[:, 1], cos[index], sin[index])
        half = self.half[index]
        t_near, t_far = np.zeros(len(dirs)), np.full(len(dirs), np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            for axis, d in enumerate((dx, dy, dirs[:, 2])):
                t1, t2 = (-half[:, axis] - local_origin[:, axis]) / d, (half[:, axis] - local_origin[:, axis]) / d
                t_near = np.maximum(t_near, np.minimum(t1, t2))
                t_far = np.minimum(t_far, np.maximum(t1, t2))
        return np.where((t_near <= t_far) & (t_near > 0), t_near, np.inf)

    def normal(self, points: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Outward normal of the face each hit lies on. points (M, 3), index (M,) -> (M, 3)."""
        cos, sin = np.cos(self.yaw[index]), np.sin(self.yaw[index])
        offset, rows = points - self.center[index], np.arange(len(points))
        lx, ly = _unrotate(offset[:, 0], offset[:, 1], cos, sin)
        local = np.stack([lx, ly, offset[:, 2]], axis=1) / self.half[index]  # |local| = 1 on the hit face
        axis = np.abs(local).argmax(axis=1)
        normal = np.zeros_like(points)
        normal[rows, axis] = np.sign(local[rows, axis])
        nx, ny = _unrotate(normal[:, 0], normal[:, 1], cos, -sin)  # back into the world frame
        return np.stack([nx, ny, normal[:, 2]], axis=1)


@dataclass
class Cylinders:
    """Upright cylinders with a top cap. base (P, 3) centre of the bottom, radius (P,), height (P,)."""

    base: np.ndarray
    radius: np.ndarray
    height: np.ndarray

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.base + np.outer(self.height / 2, [0, 0, 1]), np.hypot(self.radius, self.height / 2)

    def distance(self, origin: np.ndarray, dirs: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Side wall (a quadratic in the xy plane) or top cap. origin (3,), dirs (M, 3), index (M,) -> t (M,)."""
        o, radius, height = origin - self.base[index], self.radius[index], self.height[index]  # o (M, 3)
        dx, dy, dz = dirs.T
        side = _nearest_root(dx**2 + dy**2, o[:, 0] * dx + o[:, 1] * dy, o[:, 0] ** 2 + o[:, 1] ** 2 - radius**2)
        z = o[:, 2] + side * dz
        side = np.where((z >= 0) & (z <= height), side, np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            cap = (height - o[:, 2]) / dz
            in_cap = (o[:, 0] + cap * dx) ** 2 + (o[:, 1] + cap * dy) ** 2 <= radius**2
        return np.minimum(side, np.where((cap > 0) & in_cap, cap, np.inf))

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

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.center, self.radii.max(axis=1)

    def distance(self, origin: np.ndarray, dirs: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Unit-sphere test after scaling space by 1 / radii. origin (3,), dirs (M, 3), index (M,) -> t (M,)."""
        radii = self.radii[index]
        o, d = (origin - self.center[index]) / radii, dirs / radii  # (M, 3)
        return _nearest_root((d * d).sum(axis=1), (d * o).sum(axis=1), (o * o).sum(axis=1) - 1)

    def normal(self, points: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Gradient of the implicit function. points (M, 3), index (M,) -> (M, 3)."""
        normal = (points - self.center[index]) / self.radii[index] ** 2
        return normal / np.linalg.norm(normal, axis=1, keepdims=True)


@dataclass
class GroundPlane:
    """The plane z = 0, seen from above: one primitive that every ray may hit."""

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((1, 3)), np.array([np.inf])

    def distance(self, origin: np.ndarray, dirs: np.ndarray, index: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            t = -origin[2] / dirs[:, 2]
        return np.where(t > 0, t, np.inf)

    def normal(self, points: np.ndarray, index: np.ndarray) -> np.ndarray:
        return np.broadcast_to([0.0, 0.0, 1.0], points.shape)


@dataclass
class Hits:
    """Nearest hit of every ray. t (R,) distance, inf where nothing was hit; primitive (R,) index into the
    concatenated primitives of all families, -1 where nothing was hit; point (R, 3) and unit outward
    normal (R, 3) of the hit, the origin and zero where nothing was hit."""

    t: np.ndarray
    primitive: np.ndarray
    point: np.ndarray
    normal: np.ndarray


def _candidate_pairs(
    order: np.ndarray, turns: np.ndarray, origin: np.ndarray, center: np.ndarray, radius: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(ray, primitive) pairs where the ray's azimuth lies in the azimuth range of the primitive's bounding
    sphere, centre (P, 3) and radius (P,). order (R,) sorts the rays by azimuth; turns (2R,) holds the
    sorted azimuths over two turns, so that a range across -pi is one slice. -> ray (M,), primitive (M,)."""
    rel = center - origin
    horizontal = np.hypot(rel[:, 0], rel[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        half_width = np.where(horizontal > radius, np.arcsin(radius / horizontal), np.pi)  # of the sphere's shadow
    low = np.mod(np.arctan2(rel[:, 1], rel[:, 0]) - half_width + np.pi, 2 * np.pi) - np.pi  # in [-pi, pi)
    start = np.searchsorted(turns, low)
    count = np.minimum(np.searchsorted(turns, low + 2 * half_width, side="right") - start, len(order))
    primitive = np.repeat(np.arange(len(center)), count)
    position = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count - start, count)
    return order[position % len(order)], primitive


def cast(origin: np.ndarray, dirs: np.ndarray, families: list) -> Hits:
    """Nearest hit of the rays origin + t dirs among all primitives of `families`. origin (3,), dirs (R, 3) unit."""
    azimuth = np.arctan2(dirs[:, 1], dirs[:, 0])
    order = np.argsort(azimuth)
    turns = np.concatenate([azimuth[order], azimuth[order] + 2 * np.pi])
    t, primitive, family_of = np.full(len(dirs), np.inf), np.full(len(dirs), -1), np.full(len(dirs), -1)
    firsts = [0]  # index of each family's first primitive in the concatenation
    for k, family in enumerate(families):
        center, radius = family.bounds()
        ray, index = _candidate_pairs(order, turns, origin, center, radius)
        distance = family.distance(origin, dirs[ray], index)  # (M,)
        nearest = t.copy()
        np.minimum.at(nearest, ray, distance)
        won = (distance == nearest[ray]) & (distance < t[ray])
        t[ray[won]], primitive[ray[won]], family_of[ray[won]] = distance[won], firsts[k] + index[won], k
        firsts.append(firsts[k] + len(center))
    point = origin + np.where(primitive >= 0, t, 0.0)[:, None] * dirs
    normal = np.zeros_like(dirs)
    for k, family in enumerate(families):
        mine = family_of == k
        normal[mine] = family.normal(point[mine], primitive[mine] - firsts[k])
    return Hits(t, primitive, point, normal)
