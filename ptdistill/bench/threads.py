"""Thread policy on a real, busy machine: training throughput over intra-op threads × loader workers, two
runs side by side, and the forward beside a busy process.

    python -m ptdistill.bench.threads [--steps 10] [--points 34000] [OVERRIDE ...]

Every measurement runs in a fresh process, so that OMP_NUM_THREADS and OMP_WAIT_POLICY hold before torch
starts its thread pool. The tables:
1. Training steps/s of the demo's stage-1 teacher step and stage-2 `kld` step (`train.py experiment=demo`),
   fed by the real DataModule and its workers (the wait for a batch counts), over torch threads {1, 2, 2 with
   `AdaptiveThreads`, the default} × `num_workers` {0, 1, 2}.
2. Two one-thread runs side by side, as `stage.baseline_alongside` runs them: their steps/s added up,
   against one run on two threads.
3. The OpenMP wait (the `omp_spin_count` config key) on 2 threads, quiet and beside one busy process (a
   spin loop that the benchmark starts and stops): the paper student's eval forward on
   `lidar_like_batch(34000)` and the demo's `kld` training steps/s. Rows: libgomp's default, spin counts,
   OMP_WAIT_POLICY active and passive; the default on one thread, where no thread waits; and the project's
   default, the spin count with `AdaptiveThreads` deciding before every forward or step, as it does before
   every batch in training (its first window closes in the warm-up).
Tables 1 and 2 run with the project's `omp_spin_count`. Needs the synthetic scans (`make train` generates
them, or any train.py run).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from itertools import islice
from pathlib import Path

from omegaconf import OmegaConf

from ptdistill.thread_policy import OPENMP_WAIT_VARIABLES

STEPS = ("teacher", "kld")
PROJECT_WAIT = {"GOMP_SPINCOUNT": str(OmegaConf.load(Path(__file__).parents[2] / "conf" / "train.yaml").omp_spin_count)}
WAIT_ROWS = [  # table 3's rows: (threads, name, the OpenMP environment, adaptive threads)
    (1, "libgomp default", {}, False),
    (2, "libgomp default", {}, False),
    (2, "GOMP_SPINCOUNT=1000", {"GOMP_SPINCOUNT": "1000"}, False),
    (2, "GOMP_SPINCOUNT=2000", {"GOMP_SPINCOUNT": "2000"}, False),
    (2, "GOMP_SPINCOUNT=3000", {"GOMP_SPINCOUNT": "3000"}, False),
    (2, "OMP_WAIT_POLICY=ACTIVE", {"OMP_WAIT_POLICY": "ACTIVE"}, False),
    (2, "OMP_WAIT_POLICY=PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"}, False),
    (2, f"GOMP_SPINCOUNT={PROJECT_WAIT['GOMP_SPINCOUNT']} + adaptive threads (default)", PROJECT_WAIT, True),
]


def _adapt(adaptive: bool):
    """What runs before each forward or step: AdaptiveThreads' decision, or nothing."""
    from ptdistill.modules.adaptive_threads import AdaptiveThreads

    return AdaptiveThreads().update if adaptive else lambda: None


def _train_steps(kind: str, workers: int, steps: int, overrides: list[str], adaptive: bool) -> float:
    """Steps/s of one training step kind, data loading included, after two warm-up steps."""
    from hydra.utils import instantiate

    from ptdistill.bench.distill_step import row_config, training_step

    stage = ["stage=teacher"] if kind == "teacher" else []
    cfg = row_config("kld", [*stage, f"dataset.datamodule.num_workers={workers}", *overrides])
    step = training_step(cfg)
    datamodule = instantiate(cfg.dataset.datamodule)
    datamodule.prepare_data()
    datamodule.setup("fit")
    warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer: nothing is logged
    batches = iter(islice(datamodule.train_dataloader(), steps + 2))
    adapt = _adapt(adaptive)
    for batch in islice(batches, 2):
        adapt()
        step(batch)
    start = time.perf_counter()
    for batch in batches:
        adapt()
        step(batch)
    return steps / (time.perf_counter() - start)


def _forward_seconds(points: int, runs: int, adaptive: bool) -> float:
    """Median seconds of the paper student's eval forward on a LiDAR-like scan."""
    import torch
    from hydra.utils import instantiate

    from ptdistill.bench.batches import lidar_like_batch
    from ptdistill.config import model_config

    model = instantiate(model_config("ptv3").model.student).eval()
    batch = lidar_like_batch(points)
    times = []
    adapt = _adapt(adaptive)
    with torch.inference_mode():
        adapt()
        model(batch)
        for _ in range(runs):
            adapt()
            start = time.perf_counter()
            model(batch)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(job: dict, threads: int, wait: dict[str, str] = PROJECT_WAIT, steps: int = 10) -> subprocess.Popen:
    """Start one measurement in a fresh process, its OpenMP wait set by `wait` alone; its result is the JSON
    line it prints."""
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_WAIT_VARIABLES}
    env |= {"OMP_NUM_THREADS": str(threads)} | wait
    return subprocess.Popen([sys.executable, "-m", "ptdistill.bench.threads", "--steps", str(steps),
                             "--job", json.dumps(job)], env=env, stdout=subprocess.PIPE, text=True)


def quiet_and_busy(job: dict, threads: int, wait: dict[str, str], steps: int) -> tuple[float, float]:
    """The measurement alone, then beside a busy process (a spin loop on another core)."""
    quiet = result(measure(job, threads, wait, steps))
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        return quiet, result(measure(job, threads, wait, steps))
    finally:
        spin.kill()
        spin.wait()


def result(process: subprocess.Popen) -> float:
    out, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"a measurement failed (exit {process.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--points", type=int, default=34000)
    parser.add_argument("--runs", type=int, default=3, help="forwards per measurement (median)")
    parser.add_argument("--tables", type=int, nargs="+", default=[1, 2, 3], choices=[1, 2, 3])
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the training steps")
    args = parser.parse_args()
    if args.job:  # a measurement process
        job = json.loads(args.job)
        adaptive = job.get("adaptive", False)
        value = (_train_steps(job["kind"], job["workers"], args.steps, job["overrides"], adaptive) if "kind" in job
                 else _forward_seconds(job["points"], job["runs"], adaptive))
        print(json.dumps(value))
        return

    if 1 in args.tables:
        table_threads_by_workers(args)
    if 2 in args.tables:
        table_side_by_side(args)
    if 3 in args.tables:
        table_openmp_wait(args)


def table_threads_by_workers(args: argparse.Namespace) -> None:
    print(f"\n1. Training steps/s, experiment=demo, data loading included ({args.steps} steps after 2)\n")
    print("| step | threads | num_workers=0 | num_workers=1 | num_workers=2 |")
    print("|---|---|---|---|---|")
    for kind in STEPS:
        for threads, adaptive in ((1, False), (2, False), (2, True)):
            rates = [result(measure({"kind": kind, "workers": w, "overrides": args.overrides, "adaptive": adaptive},
                                    threads, steps=args.steps))
                     for w in (0, 1, 2)]
            label = f"{threads}, adaptive" if adaptive else str(threads)
            print(f"| {kind} | {label} | " + " | ".join(f"{r:.2f}" for r in rates) + " |", flush=True)


def table_side_by_side(args: argparse.Namespace) -> None:
    print("\n2. Two runs side by side (stage.baseline_alongside), one thread each, num_workers=0\n")
    print("| steps | steps/s, 1 run × 2 threads | steps/s, 2 runs × 1 thread (sum) |")
    print("|---|---|---|")
    for pair in (("teacher", "kld"), ("kld", "kld")):
        alone = result(measure({"kind": pair[0], "workers": 0, "overrides": args.overrides}, 2, steps=args.steps))
        both = [measure({"kind": kind, "workers": 0, "overrides": args.overrides}, 1, steps=args.steps) for kind in pair]
        print(f"| {' + '.join(pair)} | {alone:.2f} ({pair[0]}) | {sum(result(p) for p in both):.2f} |", flush=True)


def table_openmp_wait(args: argparse.Namespace) -> None:
    print(f"\n3. The OpenMP wait beside a busy process: the paper student's eval forward, {args.points} points "
          f"(median of {args.runs}, seconds), and kld training steps/s ({args.steps} steps after 2)\n")
    print("| threads | OpenMP wait | forward quiet | forward busy | ratio | steps/s quiet | steps/s busy | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    forward, kld = {"points": args.points, "runs": args.runs}, {"kind": "kld", "workers": 0, "overrides": args.overrides}
    for threads, name, wait, adaptive in WAIT_ROWS:
        fq, fb = quiet_and_busy(forward | {"adaptive": adaptive}, threads, wait, args.steps)
        sq, sb = quiet_and_busy(kld | {"adaptive": adaptive}, threads, wait, args.steps)
        print(f"| {threads} | {name} | {fq:.3f} | {fb:.3f} | {fb / fq:.2f}x | {sq:.2f} | {sb:.2f} | {sq / sb:.2f}x |",
              flush=True)


if __name__ == "__main__":
    main()
