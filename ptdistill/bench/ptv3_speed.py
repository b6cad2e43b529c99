"""Forward-pass time of the PTv3 teacher and student on sparse LiDAR-like points, on CPU threads.

    python -m ptdistill.bench.ptv3_speed [--points 5000] [--threads 2] [--runs 3] [--grid 0.05]

Reference, measured on this 2-core machine: Pointcept's PT-v3m1 takes 10-12 s (teacher) and 1.6 s (student) for one
forward on 5,000 sparse LiDAR-like points at a 0.05 m grid on this machine's 2 threads, its points
barely merging under pooling (4,112 left at stage 4); ours must be faster. Two scenes bracket that
input: a ring-pattern scan, and points scattered so sparsely that pooling merges almost none (the
most work per point). The configs are `conf/model/ptv3.yaml`'s.
"""

import argparse
import math
import statistics
import time

import torch
from hydra.utils import instantiate

from ptdistill.config import model_config


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


def time_forward(model: torch.nn.Module, batch: dict, runs: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds per eval forward, after one warm-up run.

    CPU time adds up all threads; wall time far above CPU time / threads means other processes held
    the cores, and the wall times are not this code's.
    """
    model.eval()
    wall, cpu = [], []
    with torch.inference_mode():
        model(batch)
        for _ in range(runs):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            model(batch)
            wall.append(time.perf_counter() - start_wall)
            cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=5000)
    parser.add_argument("--grid", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = model_config("ptv3")
    scenes = {"ring scan": lidar_like_batch(args.points, args.grid),
              "scattered": scattered_batch(args.points, args.grid)}
    models = {name: instantiate(cfg.model[name]) for name in ("teacher", "student")}
    pointcept = {"teacher": "10-12", "student": "1.6"}
    print(f"PTv3 eval forward at a {args.grid} m grid on {args.threads} CPU threads, {args.runs} runs after warm-up")
    print(f"{'scene':<10} {'points per stage':<32} {'model':<8} {'params':>11} {'mean s':>7} {'median s':>9} "
          f"{'min s':>6} {'min CPU s':>10} {'Pointcept s':>12}")
    for scene, batch in scenes.items():
        stages = " > ".join(map(str, points_per_stage(batch)))
        for name, model in models.items():
            params = sum(p.numel() for p in model.parameters())
            wall, cpu = time_forward(model, batch, args.runs)
            print(f"{scene:<10} {stages:<32} {name:<8} {params:>11,} {statistics.mean(wall):>7.2f} "
                  f"{statistics.median(wall):>9.2f} {min(wall):>6.2f} {min(cpu):>10.2f} {pointcept[name]:>12}")


if __name__ == "__main__":
    main()
