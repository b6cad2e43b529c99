"""Teacher and student side by side: parameters, FLOPs, latency, FPS, memory (paper Tables 3, 5, 6).

    python evaluate.py task=efficiency dataset=nuscenes [ckpt_path=STUDENT.ckpt] [efficiency.points=34000]

Input: the first scan of `split` when the dataset is on disk, otherwise a synthetic spinning-LiDAR
scan of `efficiency.points` voxels at the dataset's grid (`bench.batches.lidar_like_batch`; 34,000
by default, a nuScenes keyframe). The models are `cfg.model.teacher` and `cfg.model.student`, or
the student of `ckpt_path`; random weights time the same.

Each model is measured in its own spawned process, so that peak memories do not mix:
- latency: mean and median of `runs` eval forwards after `warmup`, the input already on the device;
- FPS: 1 / mean latency;
- peak memory, of one forward in a process of its own: `torch.cuda.max_memory_allocated` on a GPU;
  on CPU (Linux), the process's peak resident set (VmHWM, reset through /proc/self/clear_refs
  before the model is built) above its resident set then, so it holds what max_memory_allocated
  holds (weights, input, live activations) and not the interpreter and libraries, with glibc set
  to unmap freed tensors at once (`bench.memory.unmap_freed_blocks`); the whole process's peak is reported too;
- operators: one profiled forward (`torch.profiler`), self time and self memory per operator;
- parameters and FLOPs: `bench.flops.count_model` (on CPU, see there how sparse conv and attention count).

Writes `efficiency_<dataset>.md` and `.json` in the run directory and prints the Markdown.
"""

import json
import logging
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.profiler import ProfilerActivity, profile

from ptdistill.bench.batches import lidar_like_batch, points_per_stage
from ptdistill.bench.flops import ModelCount, count_model
from ptdistill.bench.memory import proc_status_mib, reset_peak_rss, unmap_freed_blocks
from ptdistill.checkpoint_io import checkpoint_model
from ptdistill.data.collate import collate
from ptdistill.data.errors import DatasetNotFoundError
from ptdistill.errors import UserError

log = logging.getLogger(__name__)

MODELS = ("teacher", "student")
MIB = 2**20
# Paper Tables 5 and 6 (nuScenes, GPU): teacher, student, and the student's advantage.
PAPER = {
    "parameters (M)": (46.16, 2.78, 16.6),
    "encoder GFLOPs": (380.25, 10.36, 36.7),
    "encoder attention GFLOPs": (22.58, 0.60, 37.63),
    "decoder GFLOPs": (116.44, 33.45, 3.48),
    "FPS": (16.9, 27.7, 1.64),
    "profiled CPU time (ms)": (501.11, 203.10, 2.47),
    "profiled CUDA time (ms)": (427.31, 102.07, 4.19),
}


@dataclass(frozen=True)
class OpStat:
    """One operator of the profiled forward, summed over its calls."""

    name: str
    calls: int
    self_time_ms: float  # CPU, or the device's on a GPU
    self_memory_mib: float  # allocated minus freed inside the operator itself


@dataclass(frozen=True)
class Measurement:
    latency_s: list[float]
    profiled_time_ms: float  # self time of every operator of the profiled forward
    profiled_on: str  # "CPU" or "CUDA"
    ops: list[OpStat]
    count: ModelCount
    peak_memory_mib: float = math.nan  # from `measure_memory`; see the module docstring
    process_peak_mib: float | None = None  # CPU: the whole process's peak resident set

    @property
    def fps(self) -> float:
        return 1.0 / statistics.mean(self.latency_s)


def _model_and_batch(model_config: dict, state_dict: dict | None, batch: dict, device: str) -> tuple:
    model = instantiate(model_config)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    batch = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}
    return model.to(device).eval(), batch


def measure_memory(model_config: dict, state_dict: dict | None, batch: dict, device: str,
                   threads: int | None) -> dict[str, float | None]:
    """Peak memory of building the model and one forward; meant for a fresh process (`run_isolated`)."""
    if threads:
        torch.set_num_threads(threads)
    on_gpu = device.startswith("cuda")
    if not on_gpu:
        unmap_freed_blocks()
    resident_before = reset_peak_rss()
    model, batch = _model_and_batch(model_config, state_dict, batch, device)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        model(batch)
    if on_gpu:
        return {"peak_memory_mib": torch.cuda.max_memory_allocated(device) / MIB, "process_peak_mib": None}
    process_peak = proc_status_mib("VmHWM")
    return {"peak_memory_mib": process_peak - resident_before, "process_peak_mib": process_peak}


def measure(model_config: dict, state_dict: dict | None, batch: dict, device: str, warmup: int, runs: int,
            threads: int | None) -> Measurement:
    """Time, profile and FLOPs of one model; meant for a fresh process (`run_isolated`)."""
    if threads:
        torch.set_num_threads(threads)
    model, batch = _model_and_batch(model_config, state_dict, batch, device)
    on_gpu = device.startswith("cuda")
    latency = []
    with torch.inference_mode():
        for run in range(warmup + runs):
            start = time.perf_counter()
            model(batch)
            if on_gpu:
                torch.cuda.synchronize(device)
            if run >= warmup:
                latency.append(time.perf_counter() - start)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
        with profile(activities=activities, profile_memory=True) as profiler:
            model(batch)
    events = profiler.key_averages()
    ops = [
        OpStat(e.key, e.count, (e.self_device_time_total if on_gpu else e.self_cpu_time_total) / 1e3,
               (e.self_device_memory_usage if on_gpu else e.self_cpu_memory_usage) / MIB)
        for e in events
    ]
    return Measurement(latency, sum(op.self_time_ms for op in ops), "CUDA" if on_gpu else "CPU", ops,
                       count_model(model, batch))


def run_isolated(function, *args):
    """`function(*args)` in a freshly spawned process."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def report_input(cfg: DictConfig) -> tuple[dict, str]:
    """A model batch of one scan and a line describing it (see the module docstring)."""
    if cfg.efficiency.source not in ("auto", "synthetic"):
        raise UserError(f"efficiency.source must be auto or synthetic, got {cfg.efficiency.source!r}")
    if cfg.efficiency.source == "auto":
        try:
            dataset = instantiate(cfg.dataset.datamodule.dataset)(
                split=cfg.split, transform=instantiate(cfg.dataset.datamodule.eval_transform))
            batch = collate([dataset[0]])
            return batch, f"{cfg.dataset.name} {cfg.split} scan {batch['name'][0]}"
        except DatasetNotFoundError:
            log.info("dataset=%s is not on disk: using a synthetic scan", cfg.dataset.name)
    batch = lidar_like_batch(cfg.efficiency.points, cfg.dataset.grid_size, seed=cfg.seed)
    return batch, f"synthetic 32-beam scan, {cfg.efficiency.points} points"


def efficiency_report(cfg: DictConfig) -> dict:
    """The evaluate.py task: measure both models, print the Markdown report, write it and its JSON."""
    batch, source = report_input(cfg)
    configs = {name: (OmegaConf.to_container(cfg.model[name], resolve=True), None) for name in MODELS}
    if cfg.ckpt_path:
        student_config, weights, hparams = checkpoint_model(cfg.ckpt_path)
        if hparams["num_classes"] != cfg.dataset.num_classes:
            raise UserError(f"checkpoint {cfg.ckpt_path} predicts {hparams['num_classes']} classes, "
                            f"dataset={cfg.dataset.name} has {cfg.dataset.num_classes}")
        configs["student"] = (student_config, weights)
    settings = cfg.efficiency
    on_gpu = settings.device.startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        raise UserError(f"efficiency.device={settings.device} but CUDA is not available; use efficiency.device=cpu")
    results = {}
    for name, (model_config, weights) in configs.items():
        log.info("Measuring the %s", name)
        memory = run_isolated(measure_memory, model_config, weights, batch, settings.device, settings.threads)
        speed = run_isolated(measure, model_config, weights, batch, settings.device, settings.warmup, settings.runs,
                             settings.threads)
        results[name] = replace(speed, **memory)
    where = torch.cuda.get_device_name(settings.device) if on_gpu else \
        f"CPU, {settings.threads or torch.get_num_threads()} threads"
    header = (f"Input: {source}, grid {cfg.dataset.grid_size} m; points per level "
              f"{' > '.join(map(str, points_per_stage(batch)))}. {where}; {settings.warmup} warm-up + "
              f"{settings.runs} timed runs. Student: {cfg.ckpt_path or 'cfg.model.student, random weights'}.")
    report = {"input": header, "models": {name: _as_dict(result) for name, result in results.items()}}
    markdown = format_report(header, results, settings.top_ops)
    print(markdown)
    out = Path(cfg.paths.output_dir) / f"efficiency_{cfg.dataset.name}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(markdown + "\n")
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("Wrote %s.md and .json", out)
    return report


def _as_dict(result: Measurement) -> dict:
    count = result.count
    return {
        "parameters": {"total": count.params, "encoder": count.encoder.params, "decoder": count.decoder.params},
        "flops": {part: {"total": c.flops, "attention": c.attention, "conv": c.conv, "linear": c.linear}
                  for part, c in {"encoder": count.encoder, "decoder": count.decoder, **count.per_stage}.items()},
        "latency_s": {"runs": result.latency_s, "mean": statistics.mean(result.latency_s),
                      "median": statistics.median(result.latency_s)},
        "fps": result.fps,
        "peak_memory_mib": result.peak_memory_mib,
        "process_peak_mib": result.process_peak_mib,
        "profiled_time_ms": result.profiled_time_ms,
        "ops": [asdict(op) for op in result.ops],
    }


def summary_rows(results: dict[str, Measurement]) -> list[tuple[str, float, float, float]]:
    """(metric, teacher, student, student's advantage): teacher / student for costs, student / teacher for FPS."""
    teacher, student = results["teacher"], results["student"]
    giga, mega = 1e-9, 1e-6
    metrics = [
        ("parameters (M)", lambda r: r.count.params * mega),
        ("encoder parameters (M)", lambda r: r.count.encoder.params * mega),
        ("decoder parameters (M)", lambda r: r.count.decoder.params * mega),
        ("encoder GFLOPs", lambda r: r.count.encoder.flops * giga),
        ("encoder attention GFLOPs", lambda r: r.count.encoder.attention * giga),
        ("encoder sparse conv GFLOPs", lambda r: r.count.encoder.conv * giga),
        ("encoder linear GFLOPs", lambda r: r.count.encoder.linear * giga),
        ("decoder GFLOPs", lambda r: r.count.decoder.flops * giga),
        ("decoder attention GFLOPs", lambda r: r.count.decoder.attention * giga),
        ("decoder sparse conv GFLOPs", lambda r: r.count.decoder.conv * giga),
        ("decoder linear GFLOPs", lambda r: r.count.decoder.linear * giga),
        ("latency, mean (ms)", lambda r: statistics.mean(r.latency_s) * 1e3),
        ("latency, median (ms)", lambda r: statistics.median(r.latency_s) * 1e3),
        ("FPS", lambda r: r.fps),
        ("peak memory (MiB)", lambda r: r.peak_memory_mib),
        (f"profiled {teacher.profiled_on} time (ms)", lambda r: r.profiled_time_ms),
    ]
    if teacher.process_peak_mib is not None:
        metrics.append(("process peak RSS (MiB)", lambda r: r.process_peak_mib))
    rows = []
    for name, value in metrics:
        t, s = value(teacher), value(student)
        better, worse = (s, t) if name == "FPS" else (t, s)  # FPS is the one benefit; the rest are costs
        rows.append((name, t, s, better / worse if worse else math.nan))
    return rows


def format_report(header: str, results: dict[str, Measurement], top: int) -> str:
    lines = ["## Teacher vs student (Tables 3 and 5)", "", header, "",
             "| metric | teacher | student | student's advantage | paper: teacher, student, advantage |",
             "|---|---:|---:|---:|---|"]
    for name, teacher, student, ratio in summary_rows(results):
        paper = PAPER.get(name)
        paper_text = f"{paper[0]:g}, {paper[1]:g}, {paper[2]:g}×" if paper else ""
        lines.append(f"| {name} | {teacher:,.2f} | {student:,.2f} | {ratio:.2f}× | {paper_text} |")
    lines += ["", without_attention(results), ""]
    for title, key, unit in (("self time", "self_time_ms", "ms"), ("self memory", "self_memory_mib", "MiB")):
        lines += [f"## Operators by {title} (Table 6): the top {top} of each model", "",
                  f"| operator | teacher ({unit}) | student ({unit}) | ratio |", "|---|---:|---:|---:|"]
        for name, teacher, student in top_ops(results, key, top):
            ratio = f"{teacher / student:.2f}×" if student else "n/a"
            lines.append(f"| `{name}` | {teacher:,.1f} | {student:,.1f} | {ratio} |")
        lines.append("")
    return "\n".join(lines).rstrip()


def without_attention(results: dict[str, Measurement]) -> str:
    """The FLOP ratios without the attention matmuls, the figure that matches the paper's (see the note)."""
    ratios = []
    for part in ("encoder", "decoder"):
        teacher, student = (getattr(results[model].count, part) for model in MODELS)
        ratios.append((teacher.flops - teacher.attention) / (student.flops - student.attention))
    return (f"Attention GFLOPs: QKᵀ and AV inside the patches. Without them (linear + sparse conv), the student's "
            f"advantage is {ratios[0]:.2f}× in the encoder and {ratios[1]:.2f}× in the decoder (paper: 36.7× and "
            "3.48×, counted on a GPU where flash-attn's kernel is invisible to FLOP counters).")


def top_ops(results: dict[str, Measurement], key: str, top: int) -> list[tuple[str, float, float]]:
    """(operator, teacher, student) for the union of each model's `top` operators by `key`, teacher's first."""
    values = {model: {op.name: getattr(op, key) for op in result.ops} for model, result in results.items()}
    names = set()
    for by_name in values.values():
        names |= set(sorted(by_name, key=by_name.get, reverse=True)[:top])
    rows = [(name, values["teacher"].get(name, 0.0), values["student"].get(name, 0.0)) for name in names]
    return sorted(rows, key=lambda row: row[1], reverse=True)
