"""A distillation term of Eq. 8 as one self-contained module: its λ, the layers it taps, and its loss.

`DistillModule` computes L_seg, runs both models once, hands every term the same `DistillStep`, and sums
L_seg + Σ λ·L_term. A new term is one subclass (beside its loss) and one `conf/loss/` file.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DistillStep:
    """What one stage-2 step has when the terms are computed."""

    batch: dict  # the collated batch: feat (N, C_in), segment (N,), offset (B,), ...
    student: dict  # the student's outputs: logits (N, K) and taps {name: Tap}
    teacher: dict | None  # the teacher's, same points; None in an epoch where no term is on
    seg_loss: torch.Tensor  # L_seg of the student, on the student's graph
    criterion: nn.Module  # L_seg itself, for terms that need the teacher's (Eq. 4)


class DistillationTerm(nn.Module):
    """One λ·L of Eq. 8. A subclass's `forward(step: DistillStep) -> Tensor` returns the unweighted L (a
    scalar); `DistillModule` applies `weight` (λ). A subclass may also override `start`.

    taps: the layers whose features the term compares (none for logit terms). A feature term with no
    tap would compare nothing, so it is refused.
    start_epoch, stop_epoch: the term is on in the 0-based epochs start_epoch ≤ e < stop_epoch (None: to
    the end), and off (λ = 0, not computed) in the others. The default is every epoch, as in Eq. 8;
    `stop_epoch` gives early-stopped KD (Cho & Hariharan, 2019), `start_epoch` KD only late in training.
    """

    feature_term = False  # compares tapped features: needs at least one tap
    needs_teacher_grad = False  # needs ∂L_seg/∂F of the teacher (the teacher then keeps a graph)

    def __init__(self, weight: float, taps: Sequence[str] = (), start_epoch: int = 0, stop_epoch: int | None = None):
        super().__init__()
        self.weight = float(weight)
        self.taps = tuple(taps)
        if start_epoch < 0 or (stop_epoch is not None and stop_epoch <= start_epoch):
            raise ValueError(f"start_epoch={start_epoch}, stop_epoch={stop_epoch}: the term would be on in no epoch; "
                             "start_epoch must be ≥ 0 and stop_epoch (null: to the end) above it")
        self.start_epoch, self.stop_epoch = start_epoch, stop_epoch
        if self.feature_term and not self.taps:
            raise ValueError("taps is empty: this term compares tapped features, so name at least one layer, "
                             "e.g. taps=[enc4]; to leave the term out, choose a loss= option without it")
        if not self.feature_term and self.taps:
            raise ValueError(f"taps={list(self.taps)}: this term compares logits and taps no layer")

    def active(self, epoch: int) -> bool:
        """Whether the term is on in the 0-based `epoch`."""
        return self.start_epoch <= epoch and (self.stop_epoch is None or epoch < self.stop_epoch)

    def start(self, batch: dict, student_taps: dict, teacher_taps: dict) -> None:
        """Called during the teacher's forward, as soon as both models have produced this term's taps
        ({name: Tap}): a term may begin work on them here that overlaps the rest of the step, and finish it
        in `forward`. By default it does nothing."""
