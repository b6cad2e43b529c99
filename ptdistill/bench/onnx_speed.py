"""onnxruntime vs PyTorch eager for the paper student on CPU: latency and peak memory.

    python -m ptdistill.bench.onnx_speed [--points 34000 120000] [--runs 5] [--threads 2]

The student of conf/model/ptv3.yaml (2.78M parameters, random weights: they time the same) is
exported once (`ptdistill.deploy.onnx_student`, onnxruntime's fused attention) and run on synthetic
spinning-LiDAR scans of `--points` voxels (`batches.lidar_like_batch`, grid 0.05 m).

- latency: median of `--runs` runs after one warm-up, each in a fresh spawned process per runtime.
  PyTorch: `model(batch)` from the collated voxels, its index structures built inside the forward;
  onnxruntime: the numpy preprocessing (`structure_np.graph_inputs`, reported apart as well) plus
  `session.run`, so both start from the same voxels. Grid sampling is left out of both.
- peak memory: as `ptdistill.tasks.efficiency.measure_memory` (the PyTorch side is that function):
  in a process of its own, the peak resident set (VmHWM, reset through /proc/self/clear_refs once the
  libraries are imported) above the resident set then, with glibc unmapping freed blocks at once;
  it holds the weights, the input and the live activations (onnxruntime: also its arena and the
  graph optimisation at session start). The whole process's peak is listed too. The onnxruntime
  process never imports torch, as in deployment (`bench/memory.py` holds the helpers both sides use).
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ptdistill.bench.memory import proc_status_mib, reset_peak_rss, unmap_freed_blocks
from ptdistill.deploy.onnx_predict import load_onnx
from ptdistill.deploy.structure_np import graph_inputs

MIB = 2**20


# --- the onnxruntime side: spawned processes that never import torch ----------------------------


def _onnx_forward(predictor, scan: dict[str, np.ndarray]) -> np.ndarray:
    inputs = graph_inputs(scan["feat"], scan["grid_coord"], scan["offset"], predictor.spec)
    return predictor.logits(inputs)


def onnx_latency(path: str, scan: dict[str, np.ndarray], threads: int, runs: int) -> dict[str, list[float]]:
    """Seconds per run: total (preprocessing + session.run) and preprocessing alone."""
    predictor = load_onnx(path, threads)
    _onnx_forward(predictor, scan)  # warm-up
    total, preprocessing = [], []
    for _ in range(runs):
        start = time.perf_counter()
        inputs = graph_inputs(scan["feat"], scan["grid_coord"], scan["offset"], predictor.spec)
        prepared = time.perf_counter()
        predictor.logits(inputs)
        total.append(time.perf_counter() - start)
        preprocessing.append(prepared - start)
    return {"total": total, "preprocessing": preprocessing}


def onnx_memory(path: str, scan: dict[str, np.ndarray], threads: int) -> dict[str, float]:
    """Peak memory of opening the session and one run (see the module docstring)."""
    unmap_freed_blocks()
    resident_before = reset_peak_rss()
    _onnx_forward(load_onnx(path, threads), scan)
    process_peak = proc_status_mib("VmHWM")
    return {"peak_memory_mib": process_peak - resident_before, "process_peak_mib": process_peak}


# --- the PyTorch side ----------------------------------------------------------------------------

def torch_latency(model_config: dict, state_dict: dict, batch: dict, threads: int, runs: int) -> list[float]:
    import torch
    from hydra.utils import instantiate

    torch.set_num_threads(threads)
    model = instantiate(model_config)
    model.load_state_dict(state_dict)
    model.eval()
    latency = []
    with torch.inference_mode():
        model(batch)  # warm-up
        for _ in range(runs):
            start = time.perf_counter()
            model(batch)
            latency.append(time.perf_counter() - start)
    return latency


def measure(points: int, runs: int, threads: int, grid_size: float, onnx_path: str, model_config: dict,
            state_dict: dict, seed: int = 0) -> dict:
    from ptdistill.bench.batches import lidar_like_batch
    from ptdistill.tasks.efficiency import measure_memory, run_isolated

    batch = lidar_like_batch(points, grid_size, seed=seed)
    # Copies: sending a tensor to a spawned process moves its storage to shared memory, which would
    # leave a `.numpy()` view of it pointing at freed memory.
    scan = {key: batch[key].numpy().copy() for key in ("feat", "grid_coord", "offset")}
    return {
        "PyTorch eager": {
            "latency": run_isolated(torch_latency, model_config, state_dict, batch, threads, runs),
            **run_isolated(measure_memory, model_config, state_dict, batch, "cpu", threads),
        },
        "onnxruntime": {
            **{("latency" if k == "total" else k): v
               for k, v in run_isolated(onnx_latency, onnx_path, scan, threads, runs).items()},
            **run_isolated(onnx_memory, onnx_path, scan, threads),
        },
    }


def format_table(results: dict[int, dict], threads: int, runs: int, model: str = "ptv3", params: int | None = None) -> str:
    size = f", {params / 1e6:.2f}M parameters" if params else ""
    title = f"## The student of conf/model/{model}.yaml{size} on CPU, {threads} threads: median of {runs} runs"
    lines = [f"{title} after a warm-up",
             "",
             ("| voxels | runtime | latency (ms) | of which numpy preprocessing (ms) | peak memory (MiB) | "
              "process peak RSS (MiB) |"),
             "|---:|---|---:|---:|---:|---:|"]
    for points, by_runtime in results.items():
        for runtime, r in by_runtime.items():
            pre = f"{statistics.median(r['preprocessing']) * 1e3:,.1f}" if "preprocessing" in r else "(in the forward)"
            lines.append(f"| {points:,} | {runtime} | {statistics.median(r['latency']) * 1e3:,.1f} | {pre} | "
                         f"{r['peak_memory_mib']:,.1f} | {r['process_peak_mib']:,.1f} |")
        eager, ort = by_runtime["PyTorch eager"], by_runtime["onnxruntime"]
        speedup = statistics.median(eager["latency"]) / statistics.median(ort["latency"])
        memory = eager["peak_memory_mib"] / ort["peak_memory_mib"]
        lines.append(f"| {points:,} | onnxruntime's advantage | {speedup:.2f}× | | {memory:.2f}× | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, nargs="+", default=[34000, 120000], help="voxels per scan")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--grid-size", type=float, default=0.05)
    parser.add_argument("--model", default="ptv3", help="conf/model/<name>.yaml; its student is measured")
    args = parser.parse_args(argv)

    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from ptdistill.config import model_config
    from ptdistill.deploy.onnx_student import export_onnx, student_metadata

    config = OmegaConf.to_container(model_config(args.model).model.student, resolve=True)
    torch.manual_seed(0)
    model = instantiate(config).eval()
    state_dict = model.state_dict()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "student.onnx",
                           student_metadata(config, [str(i) for i in range(config["num_classes"])],
                                            args.grid_size, None))
        for points in args.points:
            results[points] = measure(points, args.runs, args.threads, args.grid_size, str(path), config,
                                      state_dict)
    print(format_table(results, args.threads, args.runs, args.model, sum(p.numel() for p in model.parameters())))
    return results


if __name__ == "__main__":
    main()
