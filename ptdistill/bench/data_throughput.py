"""Data pipeline throughput in one process: transforms, reader + transform, and scan generation.

    python -m ptdistill.bench.data_throughput [--repeats 20] [--grid 0.05]

The SemanticKITTI-sized scan is a synthetic HDL-64E scan (64 beams, 2048 azimuth steps: about 120k
points, as in SemanticKITTI); the default synthetic scan is an HDL-32E one (about 30k points, as a
nuScenes keyframe). Each is written in the SemanticKITTI layout and, as copies, in the preprocessed
Waymo layout and in nuScenes' layout (devkit tables, .pcd.bin, lidarseg .bin), giving a row per reader.
Target: the full training transform reaches >= 10 scans/s on the SemanticKITTI-sized scan. A second
table gives the voxels per default synthetic scan at the grid sizes a demo may use.
"""

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from ptdistill.bench.nuscenes_layout import write_nuscenes
from ptdistill.data.nuscenes import NuScenesDataset
from ptdistill.data.semantickitti import SemanticKITTIDataset
from ptdistill.data.synthetic.generate import generate_scan, write_scan
from ptdistill.data.synthetic.lidar import SpinningLidar
from ptdistill.data.transforms import (
    Compose,
    ConcatFeatures,
    GridSample,
    RandomFlip,
    RandomJitter,
    RandomRotateZ,
    RandomScale,
)
from ptdistill.data.waymo import WaymoDataset

CONFIGS = Path(__file__).resolve().parents[2] / "conf" / "dataset"
SYNTHETIC = OmegaConf.load(CONFIGS / "synthetic.yaml")
NUSCENES = OmegaConf.load(CONFIGS / "nuscenes.yaml")
SENSORS = {
    "SemanticKITTI-sized (HDL-64E)": SpinningLidar(beams=64, fov_up=2.0, fov_down=-24.8, azimuth_steps=2048),
    "synthetic default (HDL-32E)": SpinningLidar(),
}


def median_seconds(function: Callable[[int], object], repeats: int) -> float:
    """Median wall time of function(i) over i = 1..repeats, after a warm-up call function(0)."""
    function(0)
    times = []
    for i in range(1, repeats + 1):
        start = time.perf_counter()
        function(i)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def write_dataset(root: Path, lidar: SpinningLidar, count: int) -> SemanticKITTIDataset:
    """`count` scans of `lidar` in SemanticKITTI's layout under `root`, opened as the train split."""
    directory = root / "sequences" / "00"
    (directory / "velodyne").mkdir(parents=True)
    (directory / "labels").mkdir()
    for i in range(count):
        write_scan(directory, f"{i:06d}", *generate_scan([0, 0, i], lidar))
    learning_map = {int(k): int(v) for k, v in SYNTHETIC.learning_map.items()}
    return SemanticKITTIDataset(str(root), "train", {"train": ["00"]}, learning_map)


def waymo_copy(dataset: SemanticKITTIDataset, root: Path) -> WaymoDataset:
    """The scans of `dataset` in the preprocessed Waymo layout under `root`, opened as the train split."""
    for i in range(len(dataset)):
        sample, frame = dataset.read(i), root / "training" / "segment" / f"{i:06d}"
        frame.mkdir(parents=True)
        for key in ("coord", "strength", "segment"):
            np.save(frame / f"{key}.npy", sample[key])
    return WaymoDataset(str(root), "train", {"train": "training"})


def nuscenes_copy(dataset: SemanticKITTIDataset, root: Path) -> NuScenesDataset:
    """The scans of `dataset` as v1.0-mini keyframes of one mini_train scene, opened as the train split.

    Intensity becomes nuScenes' 0-255 range; the labels are lidarseg ids drawn at random (the reader's
    work does not depend on them).
    """
    rng, keyframes = np.random.default_rng(0), []
    for i in range(len(dataset)):
        sample = dataset.read(i)
        ring = np.zeros((len(sample["coord"]), 1))
        points = np.concatenate([sample["coord"], 255 * sample["strength"], ring], axis=1)
        keyframes.append((points, rng.integers(0, 32, len(points))))
    write_nuscenes(root, "v1.0-mini", [("scene-0061", keyframes)])  # the first scene of mini_train
    learning_map = {int(k): int(v) for k, v in NUSCENES.learning_map.items()}
    return NuScenesDataset(str(root), "train", {"train": "mini_train"}, {"train": "v1.0-mini"}, learning_map)


def throughput_rows(grid: float, repeats: int, tmp: Path) -> list[tuple]:
    """(scan, step, points, voxels or None, seconds per scan) for every sensor and pipeline step."""
    augment = [RandomRotateZ(1.0), RandomScale(), RandomFlip(), RandomJitter()]
    train = Compose([*augment, GridSample(grid, train=True), ConcatFeatures()])
    evaluate = Compose([GridSample(grid, train=False), ConcatFeatures()])
    rows = []
    for name, lidar in SENSORS.items():
        dataset = write_dataset(tmp / name.split()[0], lidar, count=4)
        sample, rng = dataset.read(0), np.random.default_rng(0)
        for step, transform in (("train transform", train), ("eval transform", evaluate)):
            voxels = len(transform(dict(sample), rng)["coord"])
            seconds = median_seconds(lambda i, t=transform, s=sample, r=rng: t(dict(s), r), repeats)
            rows.append((name, step, len(sample["coord"]), voxels, seconds))
        readers = {
            "SemanticKITTI": dataset,
            "Waymo": waymo_copy(dataset, tmp / f"{name.split()[0]}-waymo"),
            "nuScenes": nuscenes_copy(dataset, tmp / f"{name.split()[0]}-nuscenes"),
        }
        for reader, data in readers.items():
            data.transform = train
            seconds = median_seconds(lambda i, d=data: d[i % len(d)], repeats)
            rows.append((name, f"{reader} reader + train transform", len(sample["coord"]), None, seconds))
        seconds = median_seconds(lambda i, s=lidar: generate_scan([1, 0, i], s), max(repeats // 4, 3))
        rows.append((name, "generate scan", len(sample["coord"]), None, seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--grid", type=float, default=0.05)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        rows = throughput_rows(args.grid, args.repeats, Path(tmp))
    print(f"Data pipeline throughput, one process, grid {args.grid} m (median of {args.repeats} runs)\n")
    print("| scan | step | points | voxels | ms / scan | scans / s |")
    print("|---|---|---|---|---|---|")
    for scan, step, points, voxels, seconds in rows:
        voxels = "" if voxels is None else f"{voxels:,}"
        print(f"| {scan} | {step} | {points:,} | {voxels} | {1000 * seconds:.1f} | {1 / seconds:.1f} |")

    scans = [generate_scan([0, 0, i], SpinningLidar())[0] for i in range(10)]  # points (N, 3) each
    print("\nPoints and voxels per default synthetic scan (10 scans)\n")
    print("| grid (m) | min | mean | max |")
    print("|---|---|---|---|")
    for grid in (None, 0.05, 0.1, 0.15, 0.2):
        counts = [
            len(s) if grid is None else len(np.unique(np.floor(s / grid).astype(np.int64), axis=0)) for s in scans
        ]
        print(f"| {grid or 'none (points)'} | {min(counts):,} | {np.mean(counts):,.0f} | {max(counts):,} |")


if __name__ == "__main__":
    main()
