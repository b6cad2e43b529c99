"""L_grad (Sec. 3.3, Eq. 4-7): gradient-guided saliency alignment between teacher and student."""

import torch
from torch import nn

from ptdistill.models.ptv3.structure import sample_index


def channel_weights(seg_loss: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
    """Eq. 4: ω_k = mean_i |∂L_seg/∂F_ik|, detached. feat (N_l, C) must lie on the path to `seg_loss`."""
    (grad,) = torch.autograd.grad(seg_loss, feat, retain_graph=True)  # (N_l, C)
    return grad.abs().mean(dim=0).detach()  # (C,)


def saliency_map(feat: torch.Tensor, weights: torch.Tensor, offset: torch.Tensor, eps: float) -> torch.Tensor:
    """Eq. 5-6: M_i = Σ_k |ω_k F_ik|, min-max normalised within each sample.

    feat (N, C), weights (C,), offset (B,) -> (N,) in [0, 1).
    """
    saliency = (feat * weights).abs().sum(dim=1)  # (N,)
    sample = sample_index(offset)  # (N,)
    low = saliency.new_full((len(offset),), float("inf"))
    high = saliency.new_full((len(offset),), float("-inf"))
    low = low.scatter_reduce(0, sample, saliency, reduce="amin")  # (B,)
    high = high.scatter_reduce(0, sample, saliency, reduce="amax")  # (B,)
    return (saliency - low[sample]) / (high[sample] - low[sample] + eps)


class SaliencyLoss(nn.Module):
    """Eq. 7 for one tapped layer: mean over points of |M̂_T - M̂_S|.

    The channel weights of both models come from `channel_weights` and are detached, so the loss
    reaches the student only through its features F_S.
    """

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(
        self,
        student_feat: torch.Tensor,  # (N, C_S), row-aligned with the teacher's
        student_weights: torch.Tensor,  # (C_S,)
        teacher_feat: torch.Tensor,  # (N, C_T)
        teacher_weights: torch.Tensor,  # (C_T,)
        offset: torch.Tensor,  # (B,)
    ) -> torch.Tensor:
        student_map = saliency_map(student_feat, student_weights.detach(), offset, self.eps)
        teacher_map = saliency_map(teacher_feat.detach(), teacher_weights.detach(), offset, self.eps)
        return (teacher_map - student_map).abs().mean()
