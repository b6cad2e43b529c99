"""Table 8: forward/backward time and peak memory of differentiable H0+H1 Rips persistence layers.

    python -m ptdistill.bench.persistence [--quick] [--approximate-only] [--threads 2] [--repeats 5] [--naive-limit 60]

Input: a synthetic LiDAR scan of N points (`batches.lidar_like_batch`) lifted to 64 channels by a
fixed random MLP and normalised as L_topo does; a second MLP gives the teacher cloud. The same inputs
go to each layer:
  ours   `rips_diagrams` (gudhi + critical-edge routing),
  naive  `naive_rips_diagrams` (enumerates simplices, reduces the Z2 boundary matrix; stopped at a time limit),
  peer   torch-topological's `VietorisRipsComplex` (giotto-ph generators), where installed.
Forward computes the diagrams; backward takes the PWCD loss's gradient (computed outside the timing)
back to the features. Each (layer, N) runs in a fresh process: peak memory is the growth of its peak
resident size over one cold step (Linux VmHWM, reset through /proc/self/clear_refs, so C++ buffers
count too); times are medians of warm repeats. Then: ours against the raw gudhi call at N=1024, and a
batch of 12 clouds on 1 and 2 workers against the peer. Last, the approximate mode (`max_bottleneck`)
against exact at N = 256, 512 and 1024, on clouds normalised as L_topo's default (RMS pairwise distance 1):
forward and backward times, the landmarks it kept, its bound, and the bottleneck distance of each of its
diagrams to the exact one. Other processes on the machine add noise.
"""

import argparse
import multiprocessing
import statistics
import time

import gudhi
import torch
from scipy.spatial.distance import pdist, squareform

from ptdistill.bench.batches import lidar_like_batch
from ptdistill.bench.naive_rips import naive_rips_diagrams
from ptdistill.losses.topo import normalize
from ptdistill.topology.chamfer import pwcd
from ptdistill.topology.persistence import PendingDiagrams, greedy_landmarks, rips_diagrams

SIZES = (30, 60, 100, 200, 400, 800, 1024)
BATCH, BATCH_POINTS = 12, 1024
APPROXIMATE_SIZES, BOUNDS = (256, 512, 1024), (None, 0.05, 0.1, 0.2)


def feature_cloud(num_points: int, seed: int, mlp_seed: int) -> torch.Tensor:
    """(N, 64) features: a LiDAR-like scan's (x, y, z, strength) through a fixed random 2-layer MLP."""
    feat = lidar_like_batch(num_points=num_points, seed=seed)["feat"]
    g = torch.Generator().manual_seed(mlp_seed)
    hidden = torch.relu(feat @ (torch.randn(4, 64, generator=g) / 2) + torch.randn(64, generator=g))
    return normalize(hidden @ (torch.randn(64, 64, generator=g) / 8), "mean_pairwise")


def _peer():
    try:
        from torch_topological.nn import VietorisRipsComplex
    except ImportError:
        return None
    complex_ = VietorisRipsComplex(dim=1)
    return lambda clouds: [[info.diagram for info in infos] for infos in complex_(clouds)]


def diagram_fns(workers: int = 1, naive_limit: float | None = None):
    """name -> function from a list of clouds to their [H0, H1] diagrams (None where unavailable)."""
    return {
        "ours": lambda clouds: PendingDiagrams(clouds, (0, 1), workers=workers).result(),
        "naive": lambda clouds: [naive_rips_diagrams(x, (0, 1), time_limit=naive_limit) for x in clouds],
        "peer": _peer(),
    }


def inputs(num_points: int, clouds: int):
    """Student clouds and the teacher diagrams they are compared with, for `clouds` scans."""
    students = [feature_cloud(num_points, seed=k, mlp_seed=0) for k in range(clouds)]
    teachers = [rips_diagrams(feature_cloud(num_points, seed=k, mlp_seed=1)) for k in range(clouds)]
    return students, teachers


def _step(fn, students, teachers):
    """Forward and backward times (s) of the layer on one step; the backward gets the PWCD loss's gradient."""
    students = [s.detach().requires_grad_() for s in students]
    start = time.perf_counter()
    diagrams = fn(students)
    forward = time.perf_counter() - start
    flat = [d for dgms in diagrams for d in dgms]
    loss = sum(pwcd(t, s) for dgms_t, dgms_s in zip(teachers, diagrams) for t, s in zip(dgms_t, dgms_s))
    upstream = torch.autograd.grad(loss, flat)
    start = time.perf_counter()
    torch.autograd.backward(flat, upstream)
    return forward, time.perf_counter() - start


def _peak_rss_mb() -> float:
    """Peak resident memory (VmHWM) of this process in MB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def _measure(name: str, students, teachers, workers: int, repeats: int, threads: int, limit: float):
    """In a fresh process: peak-memory growth (MB) of one cold step, then median warm fwd/bwd times (s),
    or None past the naive baseline's time limit."""
    torch.set_num_threads(threads)
    fn = diagram_fns(workers, limit)[name]
    _step(fn, [s[:8] for s in students], teachers)  # first-call imports and caches stay out of the peak
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets the peak to the current resident size (Linux)
    before = _peak_rss_mb()
    try:
        times = [_step(fn, students, teachers)]
        peak_mb = _peak_rss_mb() - before
        times += [_step(fn, students, teachers) for _ in range(repeats)]
    except TimeoutError:
        return None
    fwd, bwd = (statistics.median(t[k] for t in times[1:] or times) for k in (0, 1))
    return fwd, bwd, peak_mb


def _raw_overhead(repeats: int, threads: int):
    """Median times of ours (forward with edge recovery) and the raw gudhi call on the same 1024-point cloud."""
    from gudhi.sklearn.rips_persistence import RipsPersistence

    torch.set_num_threads(threads)
    x = feature_cloud(BATCH_POINTS, seed=0, mlp_seed=0).requires_grad_()
    raw = RipsPersistence([0, 1], homology_coeff_field=2)  # point cloud in, its own scipy distances
    ours_t, raw_t = [], []
    for _ in range(repeats + 1):  # interleaved, so load from other processes hits both alike
        start = time.perf_counter()
        rips_diagrams(x)
        ours_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        raw.fit_transform([x.detach().double().numpy()])
        raw_t.append(time.perf_counter() - start)
    return statistics.median(ours_t[1:]), statistics.median(raw_t[1:])


def _approximate(num_points: int, bound: float | None, repeats: int, threads: int):
    """Median fwd and bwd times (s) of the H0+H1 layer, exact (bound None) or approximate, on one cloud; the
    landmarks kept, the mode's bound 2r, and the bottleneck distance of its H0 and H1 to the exact ones."""
    torch.set_num_threads(threads)
    x = normalize(feature_cloud(num_points, seed=0, mlp_seed=0), "rms_pairwise").detach()
    teacher = [rips_diagrams(normalize(feature_cloud(num_points, seed=0, mlp_seed=1), "rms_pairwise"))]
    fn = lambda clouds: PendingDiagrams(clouds, (0, 1), max_bottleneck=bound).result()  # noqa: E731
    times = [_step(fn, [x], teacher) for _ in range(repeats + 1)][1:]
    fwd, bwd = (statistics.median(t[k] for t in times) for k in (0, 1))
    exact, approx = rips_diagrams(x), rips_diagrams(x, max_bottleneck=bound)
    errors = [gudhi.bottleneck_distance(a.numpy(), e.numpy()) for a, e in zip(approx, exact)]
    kept, realised = num_points, 0.0
    if bound is not None:
        landmarks, realised = greedy_landmarks(squareform(pdist(x.double().numpy())), bound)
        kept = len(landmarks)
    return fwd, bwd, kept, realised, *errors


def _approximate_table(repeats: int, threads: int, ctx) -> None:
    print("\n| N | max_bottleneck | fwd (s) | bwd (s) | fwd+bwd (s) | landmarks | bound 2r | d_B H0 | d_B H1 |")
    print("|---" * 9 + "|")
    for n in APPROXIMATE_SIZES:
        for bound in BOUNDS:
            fwd, bwd, kept, realised, h0, h1 = _in_fresh_process(ctx, _approximate, n, bound, repeats, threads,
                                                                 timeout=600)
            print(f"| {n} | {'exact' if bound is None else bound} | {fwd:.3f} | {bwd:.4f} | {fwd + bwd:.3f} | {kept} "
                  f"| {realised:.3f} | {h0:.4f} | {h1:.4f} |", flush=True)


def _in_fresh_process(pool_context, fn, *args, timeout: float):
    with pool_context.Pool(1) as pool:
        try:
            return pool.apply_async(fn, args).get(timeout)
        except multiprocessing.TimeoutError:
            return None


def _fmt(result, cell: str = "{:.4f} | {:.6f} | {:.1f}") -> str:
    return cell.format(*result) if result else "timeout | - | -"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 30, 100, 1024; 2 repeats; naive limit 10 s")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--naive-limit", type=float, default=60.0, help="seconds before the naive baseline stops")
    parser.add_argument("--approximate-only", action="store_true", help="only the approximate mode against exact")
    args = parser.parse_args(argv)
    sizes, repeats, limit = ((30, 100, 1024), 2, 10.0) if args.quick else (SIZES, args.repeats, args.naive_limit)
    ctx = multiprocessing.get_context("spawn")
    if args.approximate_only:
        return _approximate_table(repeats, args.threads, ctx)
    has_peer = diagram_fns()["peer"] is not None

    print("| N | ours fwd (s) | ours bwd (s) | ours mem (MB) | naive fwd (s) | naive bwd (s) | naive mem (MB) "
          "| torch-topological fwd (s) | bwd (s) | mem (MB) |")
    print("|---" * 10 + "|")
    naive_alive = True
    for n in sizes:
        students, teachers = inputs(n, 1)
        row = {}
        for name in ("ours", "naive", "peer"):
            if (name == "naive" and not naive_alive) or (name == "peer" and not has_peer):
                row[name] = None
                continue
            row[name] = _in_fresh_process(ctx, _measure, name, students, teachers, 1, repeats, args.threads, limit,
                                          timeout=30 * limit + 600)
        naive_alive = row["naive"] is not None
        peer = _fmt(row["peer"]) if has_peer else "n/a | n/a | n/a"
        print(f"| {n} | {_fmt(row['ours'])} | {_fmt(row['naive'])} | {peer} |", flush=True)

    ours, raw = _in_fresh_process(ctx, _raw_overhead, repeats, args.threads, timeout=600)
    print(f"\nN={BATCH_POINTS} forward: ours {ours:.3f} s, raw gudhi RipsPersistence {raw:.3f} s, "
          f"overhead {100 * (ours / raw - 1):+.1f}%")
    students, teachers = inputs(BATCH_POINTS, BATCH)
    batch = {}
    runs = (("ours, 1 worker", "ours", 1), ("ours, 2 workers", "ours", 2), ("torch-topological", "peer", 1))
    for label, name, workers in runs:
        if name == "peer" and not has_peer:
            continue
        result = _in_fresh_process(ctx, _measure, name, students, teachers, workers, max(1, repeats // 2),
                                   args.threads, limit, timeout=1800)
        batch[label] = result[0] + result[1]
        print(f"batch of {BATCH} x {BATCH_POINTS} points, fwd+bwd, {label}: {batch[label]:.2f} s", flush=True)
    print(f"2 workers vs 1: {batch['ours, 1 worker'] / batch['ours, 2 workers']:.2f}x" + (
        f"; ours (2 workers) vs torch-topological: {batch['torch-topological'] / batch['ours, 2 workers']:.2f}x"
        if has_peer else ""))
    _approximate_table(repeats, args.threads, ctx)


if __name__ == "__main__":
    main()
