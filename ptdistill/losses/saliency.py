"""L_grad (Sec. 3.3, Eq. 4-7): gradient-guided saliency alignment between teacher and student."""

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ptdistill.losses.term import DistillationTerm, DistillStep
from ptdistill.points import one_point_per_cell, sample_index


def channel_weights(seg_loss: torch.Tensor, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Eq. 4 at every tapped layer: ω_k = mean_i |∂L_seg/∂F_ik|, detached. feats [(N_l, C_l)] must lie on the
    path to `seg_loss`; one backward serves them all, however many layers are tapped."""
    grads = torch.autograd.grad(seg_loss, list(feats), retain_graph=True)  # [(N_l, C_l)]
    return [grad.abs().mean(dim=0).detach() for grad in grads]  # [(C_l,)]


def saliency_map(
    feat: torch.Tensor, weights: torch.Tensor, offset: torch.Tensor, eps: float, signed: bool = False
) -> torch.Tensor:
    """Eq. 5-6: M_i = Σ_k |ω_k F_ik| (or the signed Σ_k ω_k F_ik), min-max normalised within each sample.

    feat (N, C), weights (C,), offset (B,) -> (N,) in [0, 1).
    """
    weighted = feat * weights  # (N, C)
    saliency = weighted.sum(dim=1) if signed else weighted.abs().sum(dim=1)  # (N,)
    sample = sample_index(offset)  # (N,)
    low = saliency.new_full((len(offset),), float("inf"))
    high = saliency.new_full((len(offset),), float("-inf"))
    low = low.scatter_reduce(0, sample, saliency, reduce="amin")  # (B,)
    high = high.scatter_reduce(0, sample, saliency, reduce="amax")  # (B,)
    return (saliency - low[sample]) / (high[sample] - low[sample] + eps)


class SaliencyLoss(nn.Module):
    """Eq. 7 for one tapped layer: the mean over rows of the distance between M̂_T and M̂_S.

    distance: "l1", |M̂_T - M̂_S| as in the paper, or "smooth_l1" (Huber with `beta`), as in the authors'
    code; signed: the authors' Σ_k ω_k F_k instead of the paper's Σ_k |ω_k F_k|. The channel weights of
    both models come from `channel_weights` and are detached, so the loss reaches the student only
    through its features F_S.
    """

    def __init__(
        self, eps: float = 1e-8, distance: Literal["l1", "smooth_l1"] = "l1", beta: float = 1.0, signed: bool = False
    ):
        super().__init__()
        if distance not in ("l1", "smooth_l1"):
            raise ValueError(f"SaliencyLoss: distance must be l1 or smooth_l1, got {distance!r}")
        self.eps, self.distance, self.beta, self.signed = eps, distance, beta, signed

    def forward(
        self,
        student_feat: torch.Tensor,  # (N, C_S), row-aligned with the teacher's
        student_weights: torch.Tensor,  # (C_S,)
        teacher_feat: torch.Tensor,  # (N, C_T)
        teacher_weights: torch.Tensor,  # (C_T,)
        offset: torch.Tensor,  # (B,)
    ) -> torch.Tensor:
        student_map = saliency_map(student_feat, student_weights.detach(), offset, self.eps, self.signed)
        teacher_map = saliency_map(teacher_feat.detach(), teacher_weights.detach(), offset, self.eps, self.signed)
        if self.distance == "smooth_l1":
            return F.smooth_l1_loss(student_map, teacher_map, beta=self.beta)
        return (teacher_map - student_map).abs().mean()


class SaliencyDistillation(DistillationTerm):
    """λ_grad·L_grad of Eq. 8, summed over the tapped layers.

    resolution: "points" compares the maps at every input point (the tapped features mapped back through
    the pooling inverse); "cells" compares each cell of the tapped level once, as the authors' code does
    at the bottleneck.
    """

    feature_term = True
    needs_teacher_grad = True

    def __init__(
        self, weight: float, taps: list[str], loss: SaliencyLoss, resolution: Literal["points", "cells"] = "points",
        start_epoch: int = 0, stop_epoch: int | None = None,
    ):
        super().__init__(weight, taps, start_epoch, stop_epoch)
        if resolution not in ("points", "cells"):
            raise ValueError(f"resolution must be points or cells, got {resolution!r}")
        self.loss, self.resolution = loss, resolution

    def forward(self, step: DistillStep) -> torch.Tensor:
        teacher_seg = step.criterion(step.teacher["logits"], step.batch["segment"])
        students = [step.student["taps"][name] for name in self.taps]
        teachers = [step.teacher["taps"][name] for name in self.taps]
        student_weights = channel_weights(step.seg_loss, [s.feat for s in students])  # [(C_S,)] Eq. 4
        teacher_weights = channel_weights(teacher_seg, [t.feat for t in teachers])  # [(C_T,)]
        loss = step.seg_loss.new_zeros(())
        for s, t, w_s, w_t in zip(students, teachers, student_weights, teacher_weights):
            if self.resolution == "cells":
                points, offset = one_point_per_cell((s, t), step.batch["offset"])  # (N_cells,), (B,)
            else:
                points, offset = torch.arange(len(s.index), device=s.index.device), step.batch["offset"]
            loss = loss + self.loss(s.feat[s.index[points]], w_s, t.feat[t.index[points]].detach(), w_t, offset)
        return loss
