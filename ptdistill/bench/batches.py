"""Synthetic collated batches of LiDAR-like points, for the benchmarks, the efficiency task and the tests.

Each is one sample in the model's input convention (coord, grid_coord, feat = x, y, z, strength; offset),
one point per voxel.
"""

import math

import torch


def lidar_like_batch(num_points: int = 5000, grid_size: float = 0.05, seed: int = 0) -> dict:
    """One synthetic spinning-LiDAR scan, grid-sampled to `num_points` voxels, as a collated batch.

    32 beams from -25° to +3° elevation sweep the azimuth in evenly spaced steps; low beams hit a
    ground plane 1.73 m below the sensor in rings, high beams hit walls 8-40 m away.
    feat = (x, y, z, strength), so C_in = 4.
    """
    generator = torch.Generator().manual_seed(seed)
    elevation = torch.deg2rad(torch.linspace(-25.0, 3.0, 32))[:, None]  # (beams, 1)
    per_beam = math.ceil(1.1 * num_points / len(elevation))  # a sparse sweep: rings of far-apart points
    step = 2 * math.pi / per_beam
    azimuth = torch.arange(per_beam) * step + step * torch.rand(len(elevation), per_beam, generator=generator)
    wall = 8.0 + 32.0 * torch.rand(16, generator=generator)  # wall distance per azimuth sector
    wall = wall[(azimuth / (2 * math.pi) * len(wall)).long().clamp_(max=len(wall) - 1)]  # (beams, per_beam)
    ground = 1.73 / torch.tan(-elevation).clamp(min=1e-3)
    distance = torch.where(elevation < 0, torch.minimum(ground, wall), wall)
    direction = torch.stack([torch.cos(elevation) * torch.cos(azimuth), torch.cos(elevation) * torch.sin(azimuth),
                             torch.sin(elevation).expand_as(azimuth)], dim=-1)
    coord = (direction * distance[..., None]).reshape(-1, 3)
    coord = coord + 0.02 * torch.randn(coord.shape, generator=generator)
    grid = torch.div(coord - coord.amin(0), grid_size, rounding_mode="floor").long()
    _, first = unique_rows(grid)
    keep = first[torch.randperm(len(first), generator=generator)[:num_points]]  # one point per voxel
    return {
        "coord": coord[keep],
        "grid_coord": grid[keep] - grid[keep].amin(0),
        "feat": torch.cat([coord[keep], torch.rand(len(keep), 1, generator=generator)], dim=1),
        "offset": torch.tensor([len(keep)]),
    }


def scattered_batch(num_points: int = 5000, grid_size: float = 0.05, seed: int = 0) -> dict:
    """One sample of points spread uniformly over 100 m x 100 m x 4 m: the worst case for pooling."""
    generator = torch.Generator().manual_seed(seed)
    coord = torch.rand(num_points, 3, generator=generator) * torch.tensor([100.0, 100.0, 4.0])
    grid = torch.div(coord, grid_size, rounding_mode="floor").long()
    _, first = unique_rows(grid)
    coord, grid = coord[first], grid[first]
    return {
        "coord": coord,
        "grid_coord": grid - grid.amin(0),
        "feat": torch.cat([coord, torch.rand(len(coord), 1, generator=generator)], dim=1),
        "offset": torch.tensor([len(coord)]),
    }


def points_per_stage(batch: dict, stages: int = 5) -> list[int]:
    """Voxels left after each stride-2 pooling (one sample)."""
    return [len(torch.unique(batch["grid_coord"] >> s, dim=0)) for s in range(stages)]


def unique_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique rows of an (N, D) int tensor and the index of one occurrence of each."""
    unique, inverse = torch.unique(rows, dim=0, return_inverse=True)
    first = torch.empty(len(unique), dtype=torch.long).scatter_(0, inverse, torch.arange(len(rows)))
    return unique, first
