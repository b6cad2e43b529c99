"""Collect a Table 7 multirun into the paper's layout: `python -m ptdistill.report <multirun dir>`.

Rows are the loss configurations, columns the datasets, cells mIoU mean ± std over seeds. Writes
`table7.md`, `table7.csv` and `table7.png` into the multirun folder.
"""

import argparse
import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROW_ORDER = ["kld", "topo", "grad", "topo+grad"]
ROW_LABELS = {"kld": "L_seg + L_KLD", "topo": "+ L_topo", "grad": "+ L_grad", "topo+grad": "+ L_topo + L_grad"}


def collect(root: Path) -> dict[tuple[str, str], list[float]]:
    """{(loss, dataset): [val mIoU (%) of each seed]} from every run's metrics.json under `root`."""
    runs = defaultdict(list)
    for path in sorted(root.rglob("metrics.json")):
        run = json.loads(path.read_text())
        runs[(run["loss"], run["dataset"])].append(100.0 * run["val/mIoU"])
    if not runs:
        raise SystemExit(f"no metrics.json under {root}: is it a `train.py -m` output folder?")
    return runs


def summarise(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def write_report(root: Path) -> str:
    runs = collect(root)
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
    ax.set_ylabel("val mIoU (%)")
    ax.set_title("Table 7: influence of each loss component")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("multirun_dir", type=Path)
    print(write_report(parser.parse_args().multirun_dir))


if __name__ == "__main__":
    main()
