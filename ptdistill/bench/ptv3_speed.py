"""Forward-pass time of the PTv3 teacher and student on a sparse LiDAR-like scan, on CPU threads.

    python -m ptdistill.bench.ptv3_speed [--points 5000] [--threads 2] [--runs 3] [--grid 0.05]

Reference (DESIGN.md): Pointcept's PT-v3m1 takes 10-12 s (teacher) and 1.6 s (student) for this
input on this machine's 2 threads; ours must be faster. The configs are `conf/model/ptv3.yaml`'s.
"""

import argparse
import math
import statistics
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

MODEL_CONFIG = Path(__file__).resolve().parents[2] / "conf" / "model" / "ptv3.yaml"


def lidar_like_batch(num_points: int = 5000, grid_size: float = 0.05, num_samples: int = 1, seed: int = 0) -> dict:
    """A collated batch of synthetic spinning-LiDAR scans, grid-sampled to `num_points` voxels each.

    32 beams from -25° to +3° elevation sweep the azimuth in evenly spaced steps; low beams hit a ground plane 1.73 m below
    the sensor in rings, high beams hit walls 8-40 m away. feat = (x, y, z, strength), so C_in = 4.
    """
    generator = torch.Generator().manual_seed(seed)
    coords, grid_coords, feats = [], [], []
    for _ in range(num_samples):
        elevation = torch.deg2rad(torch.linspace(-25.0, 3.0, 32))
        per_beam = math.ceil(1.1 * num_points / len(elevation))  # a sparse sweep: rings of far-apart points
        step = 2 * math.pi / per_beam
        azimuth = torch.arange(per_beam) * step + step * torch.rand(len(elevation), per_beam, generator=generator)
        wall = 8.0 + 32.0 * torch.rand(16, generator=generator)  # wall distance per azimuth sector
        sector = (azimuth / (2 * math.pi) * len(wall)).long().clamp_(max=len(wall) - 1)
        ground = 1.73 / torch.tan(-elevation).clamp(min=1e-3)[:, None]
        distance = torch.where(elevation[:, None] < 0, torch.minimum(ground, wall[sector]), wall[sector])
        direction = torch.stack(
            [torch.cos(elevation)[:, None] * torch.cos(azimuth), torch.cos(elevation)[:, None] * torch.sin(azimuth),
             torch.sin(elevation)[:, None].expand_as(azimuth)], dim=-1)
        coord = (direction * distance[..., None]).reshape(-1, 3) + 0.02 * torch.randn(
            per_beam * len(elevation), 3, generator=generator)
        grid = torch.div(coord - coord.amin(0), grid_size, rounding_mode="floor").long()
        _, first = unique_rows(grid)
        keep = first[torch.randperm(len(first), generator=generator)[:num_points]]  # one point per voxel
        coords.append(coord[keep])
        grid_coords.append(grid[keep] - grid[keep].amin(0))
        feats.append(torch.cat([coord[keep], torch.rand(len(keep), 1, generator=generator)], dim=1))
    return {
        "coord": torch.cat(coords),
        "grid_coord": torch.cat(grid_coords),
        "feat": torch.cat(feats),
        "offset": torch.tensor([len(c) for c in coords]).cumsum(0),
    }


def unique_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique rows of an (N, D) int tensor and the index of one occurrence of each."""
    unique, inverse = torch.unique(rows, dim=0, return_inverse=True)
    first = torch.empty(len(unique), dtype=torch.long).scatter_(0, inverse, torch.arange(len(rows)))
    return unique, first


def time_forward(model: torch.nn.Module, batch: dict, runs: int) -> list[float]:
    """Seconds per eval forward, after one warm-up run."""
    model.eval()
    times = []
    with torch.inference_mode():
        for _ in range(runs + 1):
            start = time.perf_counter()
            model(batch)
            times.append(time.perf_counter() - start)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=5000)
    parser.add_argument("--grid", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = OmegaConf.create({"dataset": {"in_channels": 4, "num_classes": 16}, "model": OmegaConf.load(MODEL_CONFIG)})
    batch = lidar_like_batch(args.points, args.grid)
    print(f"PTv3 forward, {len(batch['feat'])} LiDAR-like voxels at {args.grid} m, {args.threads} CPU threads, "
          f"{args.runs} runs after warm-up")
    print(f"{'model':<8} {'params':>11} {'mean s':>8} {'median s':>9} {'min s':>7} {'Pointcept s':>12}")
    for name, pointcept in (("teacher", "10-12"), ("student", "1.6")):
        model = instantiate(cfg.model[name])
        params = sum(p.numel() for p in model.parameters())
        times = time_forward(model, batch, args.runs)
        print(f"{name:<8} {params:>11,} {statistics.mean(times):>8.2f} {statistics.median(times):>9.2f} "
              f"{min(times):>7.2f} {pointcept:>12}")


if __name__ == "__main__":
    main()
