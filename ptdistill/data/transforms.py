"""Point cloud transforms (paper C.3): random rotation, scaling, flipping and jitter, then grid sampling.

A transform maps `(sample, rng) -> sample`: a sample is a dict of numpy arrays (coord (N, 3) float32
metres, strength (N, 1) float32, segment (N,) int64, ...), rng a `numpy.random.Generator`.
"""

from collections.abc import Sequence

import numpy as np

from ptdistill.data.dataset import Transform


class Compose:
    """Apply `transforms` in order."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample


class RandomRotateZ:
    """Rotate about z by an angle uniform in [-max_degrees, max_degrees] (paper: 1 degree; Pointcept's
    LiDAR configs: 180)."""

    def __init__(self, max_degrees: float = 1.0):
        self.max_radians = np.radians(max_degrees)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        angle = rng.uniform(-self.max_radians, self.max_radians)
        cos, sin = np.cos(angle), np.sin(angle)
        rotation = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], dtype=np.float32)
        sample["coord"] = sample["coord"] @ rotation.T
        return sample


class RandomScale:
    """Scale all coordinates by one factor uniform in [low, high] (paper: 0.9-1.1)."""

    def __init__(self, low: float = 0.9, high: float = 1.1):
        self.low, self.high = low, high

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        sample["coord"] = sample["coord"] * np.float32(rng.uniform(self.low, self.high))
        return sample


class RandomFlip:
    """Mirror x, and independently y, each with probability p."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        sign = np.where(rng.random(2) < self.p, -1, 1)
        sample["coord"] = sample["coord"] * np.array([*sign, 1], dtype=np.float32)
        return sample


class RandomJitter:
    """Add Gaussian noise of std sigma, clipped to [-clip, clip], to every coordinate (paper: sigma 0.005)."""

    def __init__(self, sigma: float = 0.005, clip: float = 0.02):
        self.sigma, self.clip = sigma, clip

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        noise = rng.standard_normal(sample["coord"].shape, dtype=np.float32) * np.float32(self.sigma)
        sample["coord"] = sample["coord"] + np.clip(noise, -self.clip, self.clip)
        return sample


class GridSample:
    """Keep one point per cubic voxel of side `grid_size` and add grid_coord (N, 3) int64, the voxel of
    each kept point, (coord - min coord) // grid_size.

    train=True keeps a random point per voxel. train=False keeps the first point of each voxel and adds
    inverse (N_full,), the row of every original point's voxel, and origin_segment (N_full,), so that
    predictions reach every original point.
    """

    def __init__(self, grid_size: float = 0.05, train: bool = True):
        if grid_size <= 0:
            raise ValueError(f"grid_size: must be positive, got {grid_size}")
        self.grid_size, self.train = grid_size, train

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        coord = sample["coord"]
        grid = np.floor((coord - coord.min(axis=0)) / self.grid_size).astype(np.int64)  # (N_full, 3)
        extent = grid.max(axis=0) + 1
        key = (grid[:, 0] * extent[1] + grid[:, 1]) * extent[2] + grid[:, 2]  # one int64 per voxel
        if self.train:
            order = rng.permutation(len(key))
            _, first = np.unique(key[order], return_index=True)  # first in a random order: a random point
            keep = order[first]
        else:
            _, keep, sample["inverse"] = np.unique(key, return_index=True, return_inverse=True)
            sample["origin_segment"] = sample["segment"]
        for name in ("coord", "strength", "segment"):
            sample[name] = sample[name][keep]
        sample["grid_coord"] = grid[keep]
        return sample


class ConcatFeatures:
    """feat (N, C) float32: the concatenation of `keys`, by default xyz + strength (C = 4)."""

    def __init__(self, keys: Sequence[str] = ("coord", "strength")):
        self.keys = list(keys)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        sample["feat"] = np.concatenate([sample[key] for key in self.keys], axis=1).astype(np.float32)
        return sample
