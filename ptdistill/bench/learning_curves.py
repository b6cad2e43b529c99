"""Learning curves and term scales of train.py runs: `python -m ptdistill.bench.learning_curves RUN_DIR ...`.

Reads each run's CSV log (`logger=csv`). Prints val mIoU per epoch side by side and, for distillation runs
made with `stage.module.grad_norm_every_n_steps=N`, the norm of each weighted term's gradient at the
student's parameters beside L_seg's, averaged over each epoch: a term far below L_seg is negligible, one
far above swamps it.
"""

import argparse
import csv
from collections import defaultdict
from pathlib import Path


def read_log(run_dir: Path) -> list[dict[str, str]]:
    logs = sorted(run_dir.glob("csv/version_*/metrics.csv"))
    if not logs:
        raise SystemExit(f"{run_dir}: no csv/version_*/metrics.csv (was it run with logger=csv?)")
    with logs[-1].open() as f:
        return list(csv.DictReader(f))


def per_epoch(rows: list[dict[str, str]], key: str) -> dict[int, float]:
    """The mean of `key` over the rows of each epoch that log it."""
    values = defaultdict(list)
    for row in rows:
        if row.get(key):
            values[int(row["epoch"])].append(float(row[key]))
    return {epoch: sum(v) / len(v) for epoch, v in sorted(values.items())}


def curves_table(runs: dict[str, list[dict[str, str]]]) -> str:
    curves = {name: per_epoch(rows, "val/mIoU") for name, rows in runs.items()}
    epochs = sorted({e for curve in curves.values() for e in curve})
    lines = ["| epoch | " + " | ".join(curves) + " |", "|" + "---|" * (len(curves) + 1)]
    for e in epochs:
        cells = [f"{100 * curve[e]:.2f}" if e in curve else "" for curve in curves.values()]
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def grad_norm_table(name: str, rows: list[dict[str, str]]) -> str | None:
    keys = sorted({k for row in rows for k in row if k.startswith("train/grad_norm/")})
    if not keys:
        return None
    terms = [k.rsplit("/", 1)[-1] for k in keys]
    norms = {term: per_epoch(rows, key) for term, key in zip(terms, keys)}
    others = [t for t in terms if t != "seg"]
    lines = [f"{name}: ‖∂(λ·L)/∂θ_S‖ per epoch (mean), and each term's ratio to L_seg's", "",
             "| epoch | " + " | ".join(terms) + " | " + " | ".join(f"{t}/seg" for t in others) + " |",
             "|" + "---|" * (1 + len(terms) + len(others))]
    for e in sorted(norms["seg"]):
        cells = [f"{norms[t].get(e, float('nan')):.4f}" for t in terms]
        cells += [f"{norms[t].get(e, float('nan')) / norms['seg'][e]:.3f}" for t in others]
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="train.py run folders (hydra.run.dir)")
    args = parser.parse_args()
    runs = {path.name: read_log(path) for path in args.runs}
    print("val mIoU (%) per epoch\n")
    print(curves_table(runs))
    for name, rows in runs.items():
        table = grad_norm_table(name, rows)
        if table:
            print("\n" + table)


if __name__ == "__main__":
    main()
