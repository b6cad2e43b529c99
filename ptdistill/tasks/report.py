"""Collect a Table 7 multirun into the paper's layout: `python -m ptdistill.tasks.report <multirun dir>`.

Rows are the loss configurations (and the no-KD `student`, when the folder has it), columns the datasets,
cells mIoU mean ± std over seeds. A second table gives each row's paired difference from the `kld` row
over the seeds both have, with its 95 % t-interval. Writes `table7.md`, `table7.csv` and `table7.png`
(and `table7_paired.csv`) into the multirun folder.
"""

import argparse
import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib
from scipy import stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROW_ORDER = ["student", "kld", "topo", "grad", "topo+grad"]
ROW_LABELS = {"student": "L_seg (no KD)", "kld": "L_seg + L_KLD", "topo": "+ L_topo", "grad": "+ L_grad",
              "topo+grad": "+ L_topo + L_grad"}


def paired_difference(treated: list[float], control: list[float], confidence: float = 0.95) -> dict:
    """Mean of the per-seed differences treated - control, with its t-interval (n - 1 degrees of freedom).

    n = 1 has no interval (NaN bounds)."""
    if len(treated) != len(control) or not treated:
        raise ValueError(f"paired_difference needs two equally long, non-empty lists, got {len(treated)} and {len(control)}")
    diffs = [t - c for t, c in zip(treated, control)]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return {"n": 1, "mean": mean, "low": float("nan"), "high": float("nan"), "diffs": diffs}
    half = stats.t.ppf(0.5 + confidence / 2, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return {"n": len(diffs), "mean": mean, "low": mean - half, "high": mean + half, "diffs": diffs}


def collect_runs(root: Path) -> list[dict]:
    """Every run's metrics.json under `root`."""
    runs = [json.loads(path.read_text()) for path in sorted(root.rglob("metrics.json"))]
    if not runs:
        raise SystemExit(f"no metrics.json under {root}: is it a `train.py -m` output folder?")
    return runs


def collect(root: Path, metric: str = "val/mIoU") -> dict[tuple[str, str], dict[int, float]]:
    """{(loss, dataset): {seed: mIoU (%)}} of the runs under `root` (the teacher's own runs left out)."""
    runs = defaultdict(dict)
    for run in collect_runs(root):
        if run.get("stage") != "teacher" and metric in run:
            runs[(run["loss"], run["dataset"])][run["seed"]] = 100.0 * run[metric]
    return runs


def summarise(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_rows(runs: dict, losses: list[str], datasets: list[str], reference: str = "kld") -> list[list[str]]:
    """[loss, cell per dataset]: the paired difference from `reference` over their common seeds."""
    rows = []
    for loss in losses:
        if loss == reference:
            continue
        cells = []
        for dataset in datasets:
            mine, theirs = runs.get((loss, dataset), {}), runs.get((reference, dataset), {})
            seeds = sorted(set(mine) & set(theirs))
            if not seeds:
                cells.append("—")
                continue
            d = paired_difference([mine[s] for s in seeds], [theirs[s] for s in seeds])
            cells.append(f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] (n={d['n']})")
        rows.append([loss, *cells])
    return rows


def write_report(root: Path, metric: str = "val/mIoU") -> str:
    by_seed = collect(root, metric)
    runs = {key: list(values.values()) for key, values in by_seed.items()}
    losses = sorted({loss for loss, _ in runs}, key=lambda l: ROW_ORDER.index(l) if l in ROW_ORDER else 99)
    datasets = sorted({dataset for _, dataset in runs})
    header = ["loss", *datasets]
    markdown = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table = [header]
    for loss in losses:
        cells = []
        for dataset in datasets:
            values = runs.get((loss, dataset))
            cells.append("—" if not values else "{:.2f} ± {:.2f} (n={})".format(*summarise(values), len(values)))
        markdown.append(f"| {ROW_LABELS.get(loss, loss)} | " + " | ".join(cells) + " |")
        table.append([loss, *cells])
    paired = paired_rows(by_seed, losses, datasets)
    if paired and any(cell != "—" for row in paired for cell in row[1:]):
        markdown += ["", f"Paired difference from L_seg + L_KLD ({metric}, mean [95 % t-interval]):", "",
                     "| loss | " + " | ".join(datasets) + " |", "|" + "---|" * len(header)]
        markdown += [f"| {ROW_LABELS.get(row[0], row[0])} | " + " | ".join(row[1:]) + " |" for row in paired]
        with (root / "table7_paired.csv").open("w", newline="") as f:
            csv.writer(f).writerows([["loss (minus kld)", *datasets], *paired])
    text = "\n".join(markdown)
    (root / "table7.md").write_text(text + "\n")
    with (root / "table7.csv").open("w", newline="") as f:
        csv.writer(f).writerows(table)
    _bar_plot(runs, losses, datasets, root / "table7.png")
    return text


def _bar_plot(runs, losses, datasets, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(datasets) * len(losses) / 2, 3.2))
    width = 0.8 / len(losses)
    for i, loss in enumerate(losses):
        stats = [summarise(runs[(loss, d)]) if (loss, d) in runs else (0.0, 0.0) for d in datasets]
        xs = [j + i * width for j in range(len(datasets))]
        ax.bar(xs, [m for m, _ in stats], width, yerr=[s for _, s in stats], capsize=3, label=ROW_LABELS.get(loss, loss))
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(datasets))], datasets)
    ax.set_ylabel("mIoU (%)")
    ax.set_title("Table 7: influence of each loss component")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("multirun_dir", type=Path)
    parser.add_argument("--metric", default="val/mIoU", help="val/mIoU, or test/mIoU for runs made with test=true")
    args = parser.parse_args()
    print(write_report(args.multirun_dir, args.metric))


if __name__ == "__main__":
    main()
