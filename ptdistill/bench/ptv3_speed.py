"""Forward-pass time of the PTv3 teacher and student on sparse LiDAR-like points, on CPU threads.

    python -m ptdistill.bench.ptv3_speed [--points 5000] [--threads 2] [--runs 3] [--grid 0.05]

Reference, measured on this 2-core machine: Pointcept's PT-v3m1 takes 10-12 s (teacher) and 1.6 s (student) for one
forward on 5,000 sparse LiDAR-like points at a 0.05 m grid on this machine's 2 threads, its points
barely merging under pooling (4,112 left at stage 4); ours must be faster. Two scenes bracket that
input: a ring-pattern scan, and points scattered so sparsely that pooling merges almost none (the
most work per point). The configs are `conf/model/ptv3.yaml`'s.
"""

import argparse
import statistics
import time

import torch
from hydra.utils import instantiate

from ptdistill.bench.batches import lidar_like_batch, points_per_stage, scattered_batch
from ptdistill.config import model_config


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
