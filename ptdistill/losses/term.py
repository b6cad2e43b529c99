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
    teacher: dict  # the teacher's, same points
    seg_loss: torch.Tensor  # L_seg of the student, on the student's graph
    criterion: nn.Module  # L_seg itself, for terms that need the teacher's (Eq. 4)


class DistillationTerm(nn.Module):
    """One λ·L of Eq. 8. A subclass's `forward(step: DistillStep) -> Tensor` returns the unweighted L (a
    scalar); `DistillModule` applies `weight` (λ). A subclass may also override `start`.

    taps: the layers whose features the term compares (none for logit terms). A feature term with no
    tap would compare nothing, so it is refused.
    """

    feature_term = False  # compares tapped features: needs at least one tap
    needs_teacher_grad = False  # needs ∂L_seg/∂F of the teacher (the teacher then keeps a graph)

    def __init__(self, weight: float, taps: Sequence[str] = ()):
        super().__init__()
        self.weight = float(weight)
        self.taps = tuple(taps)
        if self.feature_term and not self.taps:
            raise ValueError("taps is empty: this term compares tapped features, so name at least one layer, "
                             "e.g. taps=[enc4]; to leave the term out, choose a loss= option without it")
        if not self.feature_term and self.taps:
            raise ValueError(f"taps={list(self.taps)}: this term compares logits and taps no layer")

    def start(self, batch: dict, student_taps: dict, teacher_taps: dict) -> None:
        """Called during the teacher's forward, as soon as both models have produced this term's taps
        ({name: Tap}): a term may begin work on them here that overlaps the rest of the step, and finish it
        in `forward`. By default it does nothing."""
