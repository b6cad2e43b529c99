"""L_seg of Eq. 8: point-wise cross-entropy, with Lovász-softmax as an option (as in Pointcept's configs)."""

import torch
import torch.nn.functional as F
from torch import nn

from ptdistill.losses.class_balance import checked_power, class_balanced_mean


def lovasz_softmax(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """Lovász-softmax (Berman et al., 2018), averaged over the classes present in `target`.

    Written by hand: it is a dozen lines, and no maintained library ships it without a heavy dependency.
    logits (N, K), target (N,) -> scalar.
    """
    valid = target != ignore_index
    probs = logits[valid].softmax(dim=1)  # (N', K)
    target = target[valid]  # (N',)
    losses = []
    for c in target.unique():
        foreground = (target == c).to(probs.dtype)  # (N',)
        errors = (foreground - probs[:, c]).abs()
        errors, order = errors.sort(descending=True)
        foreground = foreground[order]
        # Gradient of the Lovász extension of the Jaccard loss, at the sorted errors.
        intersection = foreground.sum() - foreground.cumsum(0)
        union = foreground.sum() + (1.0 - foreground).cumsum(0)
        jaccard = 1.0 - intersection / union
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        losses.append(torch.dot(errors, jaccard))
    if not losses:
        return logits.sum() * 0.0
    return torch.stack(losses).mean()


class SegmentationLoss(nn.Module):
    """L_seg: `ce_weight * CE + lovasz_weight * Lovász`, ignoring `ignore_index` points.

    class_balance (α, beyond the paper's point-averaged CE, 0): each point's CE weighs n_c^(-α), n_c the
    batch's points of its label (`class_balanced_mean`).
    """

    def __init__(self, ignore_index: int = -1, ce_weight: float = 1.0, lovasz_weight: float = 0.0,
                 class_balance: float = 0.0):
        super().__init__()
        self.ignore_index = ignore_index
        self.ce_weight = ce_weight
        self.lovasz_weight = lovasz_weight
        self.class_balance = checked_power(class_balance)

    def cross_entropy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (N, K), target (N,) with at least one point kept -> scalar."""
        if self.class_balance == 0.0:  # the paper's point average, the same reduction as before the option
            return F.cross_entropy(logits, target, ignore_index=self.ignore_index)
        keep = target != self.ignore_index  # (N,)
        per_point = F.cross_entropy(logits[keep], target[keep], reduction="none")  # (N',)
        return class_balanced_mean(per_point, target[keep], self.class_balance)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (N, K), target (N,) -> scalar."""
        loss = logits.new_zeros(())
        if self.ce_weight:
            if (target != self.ignore_index).any():
                loss = loss + self.ce_weight * self.cross_entropy(logits, target)
            else:  # every point ignored: a zero loss that still reaches the graph
                loss = loss + logits.sum() * 0.0
        if self.lovasz_weight:
            loss = loss + self.lovasz_weight * lovasz_softmax(logits, target, self.ignore_index)
        return loss
