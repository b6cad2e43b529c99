"""What the teacher's targets tell a student beyond the labels: L_kd's gradient beside the cross-entropy's.

    python -m ptdistill.bench.teacher_targets --teacher T.ckpt --student S.ckpt [train.py overrides]

At T = 1 the gradient of KL(p_T ‖ p_S) (Eq. 8's L_kd) at the student's logits is p_S − p_T, that of the
cross-entropy p_S − y: they differ by y − p_T, so where the teacher is right and sure, L_kd is a second
cross-entropy. Over the cells of each split (the train split with the training transforms), this prints:
- how often the teacher's argmax is the label, and its mean probability of the label, p_T(y);
- the student's p_S(y);
- cos(KD, CE): the cosine between the two gradients, over all cells and classes;
- the teacher's share: ‖y − p_T‖ / ‖p_S − p_T‖, the part of the KD gradient that the labels do not give,
  and how much of ‖y − p_T‖² comes from the cells where the teacher's argmax is not the label.
"""

import argparse

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from ptdistill.config import compose_train
from ptdistill.tasks.iou import module_from_checkpoint


def target_sums(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor) -> dict:
    """Sums over one batch's labelled cells: student_logits, teacher_logits (N, K), target (N,), no ignored label."""
    p_s, p_t = student_logits.softmax(1), teacher_logits.softmax(1)  # (N, K)
    y = F.one_hot(target, p_s.shape[1]).to(p_s.dtype)  # (N, K)
    kd, ce, extra = p_s - p_t, p_s - y, y - p_t  # (N, K) each: the gradients at the logits, times N
    right = p_t.argmax(1) == target  # (N,)
    return {
        "cells": len(target),
        "teacher_right": int(right.sum()),
        "teacher_p_label": float((p_t * y).sum()),
        "student_p_label": float((p_s * y).sum()),
        "kd_dot_ce": float((kd * ce).sum()),
        "kd_square": float(kd.square().sum()),
        "ce_square": float(ce.square().sum()),
        "extra_square": float(extra.square().sum()),
        "extra_square_where_wrong": float(extra[~right].square().sum()),
    }


def summarise(sums: dict) -> dict:
    """The printed statistics from the sums of `target_sums` over a split."""
    cells = sums["cells"]
    return {
        "teacher = label": sums["teacher_right"] / cells,
        "p_T(y)": sums["teacher_p_label"] / cells,
        "p_S(y)": sums["student_p_label"] / cells,
        "cos(KD, CE)": sums["kd_dot_ce"] / (sums["kd_square"] * sums["ce_square"]) ** 0.5,
        "teacher's share": (sums["extra_square"] / sums["kd_square"]) ** 0.5,
        "of it, where T ≠ y": sums["extra_square_where_wrong"] / sums["extra_square"],
    }


@torch.no_grad()
def split_statistics(student: torch.nn.Module, teacher: torch.nn.Module, loader, ignore_index: int, seed: int) -> dict:
    """summarise() over every labelled cell the loader gives, as it gives them to training."""
    torch.manual_seed(seed)  # every student sees the train split's same augmentation
    totals: dict = {}
    for batch in loader:
        keep = batch["segment"] != ignore_index  # (N,)
        sums = target_sums(student(batch)[keep], teacher(batch)[keep], batch["segment"][keep])
        totals = {key: totals.get(key, 0) + value for key, value in sums.items()}
    return summarise(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True, action="append", help="one or more student checkpoints")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val"])
    parser.add_argument("overrides", nargs="*", default=["experiment=kd_gain"], help="train.py overrides (the data)")
    args = parser.parse_args()
    if args.teacher in args.student:
        parser.error(f"{args.teacher} is given as the teacher and as a student: KD's gradient is 0 there")
    cfg = compose_train(args.overrides)
    datamodule = instantiate(cfg.dataset.datamodule, num_workers=0)
    datamodule.prepare_data()
    datamodule.setup("fit")
    loaders = {"train": datamodule.train_dataloader, "val": datamodule.val_dataloader}
    teacher = module_from_checkpoint(args.teacher)
    rows = []
    for path in args.student:
        student = module_from_checkpoint(path)
        rows += [(split, path, split_statistics(student, teacher, loaders[split](), cfg.dataset.ignore_index, cfg.seed))
                 for split in args.splits]
    columns = list(rows[0][2])
    print("| split | student | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for split, student, stats in rows:
        print(f"| {split} | {student} | " + " | ".join(f"{value:.4f}" for value in stats.values()) + " |")


if __name__ == "__main__":
    main()
