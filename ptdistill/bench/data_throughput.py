"""Data pipeline throughput in one process: transforms, scan generation and reader + transform.

    python -m ptdistill.bench.data_throughput [--repeats 20] [--grid 0.05]

The SemanticKITTI-sized scan is a synthetic HDL-64E scan (64 beams, 2048 azimuth steps: about 120k
points, like SemanticKITTI's), written in SemanticKITTI's layout for the reader rows. Target: the full
training transform reaches >= 10 scans/s on it.
"""

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from ptdistill.data.semantickitti import SemanticKITTIDataset
from ptdistill.data.synthetic import SpinningLidar, generate_scan, write_scan
from ptdistill.data.transforms import Compose, ConcatFeatures, GridSample, RandomFlip, RandomJitter, RandomRotateZ, RandomScale

SYNTHETIC = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "dataset" / "synthetic.yaml")
HDL64 = SpinningLidar(beams=64, fov_up=2.0, fov_down=-24.8, azimuth_steps=2048)


def seconds_per_call(function: Callable[[int], object], repeats: int) -> float:
    """Median wall time of function(i), i = 0..repeats-1, after one warm-up call."""
    function(0)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        function(i)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def write_dataset(root: Path, lidar: SpinningLidar, count: int) -> SemanticKITTIDataset:
    directory = root / "sequences" / "00"
    (directory / "velodyne").mkdir(parents=True)
    (directory / "labels").mkdir()
    for i in range(count):
        write_scan(directory, f"{i:06d}", *generate_scan([0, 0, i], lidar))
    learning_map = {int(k): int(v) for k, v in SYNTHETIC.learning_map.items()}
    return SemanticKITTIDataset(str(root), "train", {"train": ["00"]}, learning_map)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--grid", type=float, default=0.05)
    args = parser.parse_args()

    train = Compose([RandomRotateZ(1.0), RandomScale(), RandomFlip(), RandomJitter(), GridSample(args.grid, train=True), ConcatFeatures()])
    evaluate = Compose([GridSample(args.grid, train=False), ConcatFeatures()])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, lidar in (("SemanticKITTI-sized (HDL-64E)", HDL64), ("synthetic default (HDL-32E)", SpinningLidar())):
            dataset = write_dataset(Path(tmp) / name.split()[0], lidar, count=4)
            sample = dataset.read(0)
            points = len(sample["coord"])
            for label, transform in (("train transform", train), ("eval transform", evaluate)):
                rng = np.random.default_rng(0)
                voxels = len(transform(dict(sample), rng)["coord"])
                rows.append((name, label, points, voxels, seconds_per_call(lambda i: transform(dict(sample), rng), args.repeats)))
            dataset.transform = train
            rows.append((name, "read + train transform", points, None, seconds_per_call(lambda i: dataset[i % len(dataset)], args.repeats)))
            rows.append((name, "generate scan", points, None, seconds_per_call(lambda i: generate_scan([1, 0, i], lidar), max(args.repeats // 4, 3))))

    print(f"Data pipeline throughput, one process, grid {args.grid} m (median of {args.repeats} runs)\n")
    print("| scan | step | points | voxels | ms / scan | scans / s |")
    print("|---|---|---|---|---|---|")
    for scan, step, points, voxels, seconds in rows:
        print(f"| {scan} | {step} | {points:,} | {'' if voxels is None else f'{voxels:,}'} | {1000 * seconds:.1f} | {1 / seconds:.1f} |")

    scans = [generate_scan([0, 0, i], SpinningLidar())[0] for i in range(10)]
    print("\nVoxels per default synthetic scan (10 scans: min / mean / max)\n")
    print("| grid (m) | min | mean | max |")
    print("|---|---|---|---|")
    print(f"| none (points) | {min(map(len, scans)):,} | {np.mean([len(s) for s in scans]):,.0f} | {max(map(len, scans)):,} |")
    for grid in (0.05, 0.1, 0.15, 0.2):
        voxels = [len(np.unique(np.floor(s / grid).astype(np.int64), axis=0)) for s in scans]
        print(f"| {grid} | {min(voxels):,} | {np.mean(voxels):,.0f} | {max(voxels):,} |")


if __name__ == "__main__":
    main()
