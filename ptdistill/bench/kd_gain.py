"""KD gain with paired seeds: `python -m ptdistill.bench.kd_gain [--seeds 5] [--rows kld labels topo+grad] [OVERRIDE]`.

For every seed it trains the no-KD student (`stage=student`) and the KD student of each row (a loss=
option, optionally with overrides of its own: "kld loss.terms.kd.start_epoch=6") against one stage-1
teacher, or with `--teacher-per-seed` against a teacher of its own (stage 1 trained with that seed). The
arms of a seed share the student's initialisation, the data order and the augmentation, which all come
from the seed alone. With one teacher, the interval covers the spread between seeds for that teacher only:
two teachers of the same recipe have given gains of opposite sign (docs/kd_diagnosis.md, section 13). A
teacher per seed makes it cover the spread between teachers.
The default rows include `labels` (conf/loss/labels.yaml), the kld row with the labels in the teacher's
place: a row's difference from it is what the teacher itself adds (sections 23-24).

Each run is scored on the test split (`test=true`, its best-on-val checkpoint) and, on val, against its
teacher: argmax agreement and KL(teacher ‖ student) at T = 1, per original point. It prints per-seed mIoU,
the per-seed differences KD − no-KD with their mean and 95 % t-interval, on test (with each class's IoU
gain) and then on val, and writes kd_gain.csv (a row as each run ends), kd_gain.md and kd_gain.png.
`--summarize DIR` redoes the tables and the plot from a (partial) kd_gain.csv. Given the --out of an
earlier benchmark, it reuses every run there that finished with the same overrides (its `seconds` is then
the scoring's alone): an interrupted benchmark loses no finished run, and a new row trains only its arms.

Runs are `train.py` processes, `--jobs` at a time with `--threads` torch threads each (two one-thread
jobs use a 2-core machine better than one two-thread job, and never oversubscribe it).
"""

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ptdistill.config import compose_train
from ptdistill.scoring import full_resolution_scores
from ptdistill.tasks.iou import module_from_checkpoint
from ptdistill.tasks.report import paired_difference
from ptdistill.tasks.train import teacher_home

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BASELINE = "student"  # the no-KD arm
CLASS_IOU = "test_IoU/"  # kd_gain.csv's per-class test IoU columns: test_IoU/<class>


def arm_overrides(arm: str, teacher: Path) -> list[str]:
    """A KD row is a loss= option, optionally followed by overrides of its own ("kld loss.terms.kd.stop_epoch=6")."""
    if arm == BASELINE:
        return ["stage=student"]
    loss, *own = arm.split()
    return [f"loss={loss}", f"stage.teacher_checkpoint={teacher}", *own]


def arm_dir(arm: str) -> str:
    """The run folder of an arm, a valid hydra.run.dir value: "topo+grad" -> "topo_grad", "kld a.b=6" -> "kld_a.b_6"."""
    return re.sub(r"[^\w.-]+", "_", arm)


def run_train(overrides: list[str], run_dir: Path, threads: int) -> dict:
    """One `train.py` run into run_dir; its metrics.json. A finished run already there with the same
    overrides (from an interrupted benchmark, or one with fewer rows, in the same --out) is reused."""
    if finished_run(run_dir, overrides):
        print(f"Reusing the finished run in {run_dir}", flush=True)
        return json.loads((run_dir / "metrics.json").read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    args = [sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={run_dir}"]
    with (run_dir / "train.out").open("w") as out:
        done = subprocess.run(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"train.py {' '.join(overrides)} failed (exit {done.returncode}); see {run_dir / 'train.out'}")
    return json.loads((run_dir / "metrics.json").read_text())


def finished_run(run_dir: Path, overrides: list[str]) -> bool:
    """Whether run_dir holds a run that ended (its metrics.json) and was given exactly these overrides."""
    given = run_dir / ".hydra" / "overrides.yaml"
    return (run_dir / "metrics.json").exists() and given.exists() and OmegaConf.load(given) == overrides


@torch.no_grad()
def teacher_agreement(student_checkpoint: str, teacher_checkpoint: str, cfg: DictConfig, split: str = "val") -> dict:
    """Argmax agreement with the teacher and mean KL(p_T ‖ p_S) over the original points of `split`."""
    student, teacher = module_from_checkpoint(student_checkpoint), module_from_checkpoint(teacher_checkpoint)
    datamodule = instantiate(cfg.dataset.datamodule, num_workers=0)
    datamodule.setup("validate" if split == "val" else "test")
    loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    agree = kl = points = 0.0
    for batch in loader:
        p_s = full_resolution_scores(student(batch), batch["inverse"])  # (N_full, K)
        p_t = full_resolution_scores(teacher(batch), batch["inverse"])
        agree += float((p_s.argmax(1) == p_t.argmax(1)).sum())
        kl += float((p_t * (p_t.clamp_min(1e-12).log() - p_s.clamp_min(1e-12).log())).sum())
        points += len(p_s)
    return {"agreement": agree / points, "kl_teacher_student": kl / points}


def run_benchmark(seeds: list[int], rows: list[str], overrides: list[str], out: Path, jobs: int, threads: int,
                  teacher: Path | None = None, teacher_per_seed: bool = False) -> list[dict]:
    """Train and score every (seed, arm) against `teacher` (default: the registered one, trained first if
    missing) or, with `teacher_per_seed`, against a teacher trained with the seed; the rows of kd_gain.csv."""
    # The project's data and teacher registry (under PTDISTILL_ROOT or the repository), this benchmark's runs.
    base = [*overrides, f"paths.root_dir={os.environ.get('PTDISTILL_ROOT', ROOT)}", "test=true"]
    cfg = compose_train(base)  # the dataset config of every arm's scoring
    out.mkdir(parents=True, exist_ok=True)
    instantiate(cfg.dataset.datamodule).prepare_data()  # once, before runs in parallel would generate it together
    if teacher_per_seed:  # registered in the benchmark's folder, so that they leave the project's registry alone
        stage1 = [*base, "stage=teacher", f"paths.teacher_dir={out / 'teachers'}"]

        def stage1_run(seed):
            return run_train([*stage1, f"seed={seed}"], out / f"seed{seed}" / "teacher", threads)

        with ThreadPoolExecutor(jobs) as pool:
            teachers = {seed: Path(metrics["checkpoint"]) for seed, metrics in zip(seeds, pool.map(stage1_run, seeds))}
    else:
        teacher = teacher or teacher_home(cfg) / "teacher.ckpt"
        if not teacher.exists():  # trained once, before the arms, so that parallel arms share it
            run_train([*base, "stage=teacher"], out / "teacher", threads * jobs)
        teachers = dict.fromkeys(seeds, teacher)
    # Row by row, so that an interrupted benchmark still holds every seed of its first rows.
    arms = [(seed, arm) for seed in seeds for arm in (BASELINE, rows[0])]
    arms += [(seed, arm) for arm in rows[1:] for seed in seeds]
    log = out / "kd_gain.csv"
    lock = threading.Lock()

    def one(seed_arm):
        seed, arm = seed_arm
        start = time.perf_counter()
        metrics = run_train([*base, *arm_overrides(arm, teachers[seed]), f"seed={seed}"],
                            out / f"seed{seed}" / arm_dir(arm), threads)
        torch.set_num_threads(threads)
        scores = teacher_agreement(metrics["checkpoint"], str(teachers[seed]), cfg)
        classes = {CLASS_IOU + key.removeprefix("test/IoU/"): 100 * value
                   for key, value in metrics.items() if key.startswith("test/IoU/")}
        row = {"seed": seed, "arm": arm, "val_mIoU": 100 * metrics["val/mIoU"], "test_mIoU": 100 * metrics["test/mIoU"],
               **scores, "seconds": time.perf_counter() - start, **classes}
        with lock:  # rewritten as each run ends; a reused run of an older version may lack the class columns
            ended.append(row)
            with log.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(key for r in ended for key in r)))
                writer.writeheader()
                writer.writerows(ended)
        return row

    ended = []
    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(one, arms))


def read_results(path: Path) -> list[dict]:
    """kd_gain.csv back as rows (possibly from an unfinished benchmark); a row lacks the columns it left empty."""
    with path.open() as f:
        return [{k: v if k == "arm" else int(v) if k == "seed" else float(v) for k, v in r.items() if v != ""}
                for r in csv.DictReader(f)]


def paired_cells(value: dict, arm: str, reference: str, metric: str) -> list[str]:
    """[mean, 95 % t-interval, n] of arm − reference in `metric`, over the seeds that have both; value maps
    (seed, arm) to a kd_gain.csv row."""
    both = sorted(seed for seed, a in value if a == arm and metric in value[(seed, a)]
                  and metric in value.get((seed, reference), {}))
    if arm == reference or not both:
        return ["—", "—", "—"]
    d = paired_difference([value[(s, arm)][metric] for s in both], [value[(s, reference)][metric] for s in both])
    return [f"{d['mean']:+.2f}", f"[{d['low']:+.2f}, {d['high']:+.2f}]", str(d["n"])]


def summary(results: list[dict], rows: list[str], metric: str = "test_mIoU") -> str:
    """Markdown: per-seed mIoU of each arm, then each row's paired difference from the no-KD arm and from
    the first KD row (`kld`), each over the seeds that have both."""
    seeds = sorted({r["seed"] for r in results})
    value = {(r["seed"], r["arm"]): r for r in results}
    arms = [BASELINE, *rows]

    def cell(seed, arm):
        return f"{value[(seed, arm)][metric]:.2f}" if (seed, arm) in value else ""

    def gain(seed, arm):
        both = (seed, arm) in value and (seed, BASELINE) in value
        return f"{value[(seed, arm)][metric] - value[(seed, BASELINE)][metric]:+.2f}" if both else ""

    lines = ["| seed | " + " | ".join(arms) + " | " + " | ".join(f"{a} − {BASELINE}" for a in rows) + " |",
             "|" + "---|" * (1 + len(arms) + len(rows))]
    for seed in seeds:
        lines.append(f"| {seed} | " + " | ".join([*(cell(seed, a) for a in arms), *(gain(seed, a) for a in rows)]) + " |")
    first = rows[0] if rows else None  # the other KD rows are also paired against the first (kld)
    lines += ["", f"| row | mean {metric} | paired difference from {BASELINE} | 95 % t-interval | n "
              f"| paired difference from {first} | 95 % t-interval | n | val agreement with teacher | val KL(T‖S) |",
              "|---|---|---|---|---|---|---|---|---|---|"]

    for arm in arms:
        mine = [s for s in seeds if (s, arm) in value]
        if not mine:
            continue
        mean = sum(value[(s, arm)][metric] for s in mine) / len(mine)
        agreement = sum(value[(s, arm)]["agreement"] for s in mine) / len(mine)
        kl = sum(value[(s, arm)]["kl_teacher_student"] for s in mine) / len(mine)
        versus_first = paired_cells(value, arm, first, metric) if arm != BASELINE else ["—", "—", "—"]
        cells = [f"{mean:.2f}", *paired_cells(value, arm, BASELINE, metric), *versus_first,
                 f"{100 * agreement:.2f} %", f"{kl:.4f}"]
        name = f"{arm} (no KD)" if arm == BASELINE else arm
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def class_summary(results: list[dict], rows: list[str]) -> str:
    """Markdown: each class's test IoU of the no-KD arm (mean over its seeds), then each KD row's paired
    difference from it with its 95 % t-interval: which classes a gain comes from. Empty without per-class
    columns."""
    classes = sorted({key.removeprefix(CLASS_IOU) for r in results for key in r if key.startswith(CLASS_IOU)})
    value = {(r["seed"], r["arm"]): r for r in results}
    lines = ["| class | " + BASELINE + " | " + " | ".join(f"{a} − {BASELINE}" for a in rows) + " |",
             "|" + "---|" * (2 + len(rows))]
    for name in classes:
        metric = CLASS_IOU + name
        baseline = [r[metric] for (_, arm), r in value.items() if arm == BASELINE and metric in r]
        cells = [f"{mean} {interval}" if n != "—" else "—"
                 for mean, interval, n in (paired_cells(value, arm, BASELINE, metric) for arm in rows)]
        mean = f"{sum(baseline) / len(baseline):.2f}" if baseline else "—"
        lines.append(f"| {name} | {mean} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if classes else ""


def report(results: list[dict], rows: list[str]) -> str:
    """The test split's tables, which the benchmark reports, and its per-class IoU gains when the runs
    give them; then val's tables, the split a recipe is chosen on."""
    classes = class_summary(results, rows)
    per_class = f"\n\nPer class, test IoU:\n\n{classes}" if classes else ""
    return summary(results, rows) + per_class + "\n\nOn val:\n\n" + summary(results, rows, metric="val_mIoU")


def short_label(arm: str) -> str:
    """A row's axis label: its loss, then each distinct override by its last key ("start_epoch=6"), a line each."""
    loss, *own = arm.split()
    return "\n".join([loss, *dict.fromkeys(override.rsplit(".", 1)[-1] for override in own)])


def plot(results: list[dict], rows: list[str], path: Path, metric: str = "test_mIoU") -> None:
    """Each seed's arms joined by a line: paired seeds show the gain whatever the seed's level."""
    arms = [BASELINE, *rows]
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(arms), 3.2))
    for seed in sorted({r["seed"] for r in results}):
        by_arm = {r["arm"]: r[metric] for r in results if r["seed"] == seed}
        ax.plot(range(len(arms)), [by_arm.get(a, float("nan")) for a in arms], marker="o", label=f"seed {seed}")
    ax.set_xticks(range(len(arms)), [f"{a}\n(no KD)" if a == BASELINE else short_label(a) for a in arms])
    ax.set_ylabel(metric.replace("_", " ") + " (%)")
    ax.set_title("KD gain, paired seeds")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. S-1")
    parser.add_argument("--rows", nargs="+", default=["kld", "labels", "topo+grad"],
                        help='the KD arms: loss= options, each optionally with overrides of its own, '
                             'e.g. "kld loss.terms.kd.stop_epoch=6"; labels: the teacher-free control')
    parser.add_argument("--out", type=Path, default=None, help="default: outputs/kd_gain/<time>")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("overrides", nargs="*", default=["experiment=kd_gain"], help="train.py overrides of every run")
    parser.add_argument("--teacher", type=Path, default=None, help="a stage-1 teacher checkpoint (default: the registry's)")
    parser.add_argument("--teacher-per-seed", action="store_true",
                        help="distil each seed from a teacher trained with that seed (the interval covers teachers)")
    parser.add_argument("--summarize", type=Path, default=None, help="only tabulate DIR/kd_gain.csv")
    args = parser.parse_args()
    if args.summarize:
        results = read_results(args.summarize / "kd_gain.csv")
        rows = [arm for arm in args.rows if any(r["arm"] == arm for r in results)]
        text = report(results, rows)
        (args.summarize / "kd_gain.md").write_text(text + "\n")
        print(text)
        plot(results, rows, args.summarize / "kd_gain.png")
        return
    if args.teacher and args.teacher_per_seed:
        parser.error("--teacher and --teacher-per-seed exclude each other")
    out = (args.out or ROOT / "outputs" / "kd_gain" / time.strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    start = time.perf_counter()
    results = run_benchmark(list(range(args.seeds)), args.rows, args.overrides, out, args.jobs, args.threads,
                            args.teacher, args.teacher_per_seed)
    text = report(results, args.rows)
    text += f"\n\nWall time: {time.perf_counter() - start:.0f} s, {args.jobs} jobs × {args.threads} threads."
    (out / "kd_gain.md").write_text(text + "\n")
    plot(results, args.rows, out / "kd_gain.png")
    print(text)
    print(f"\nWrote {out}/kd_gain.csv, kd_gain.md, kd_gain.png")


if __name__ == "__main__":
    main()
