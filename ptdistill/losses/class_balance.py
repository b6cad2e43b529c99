"""Class-balanced averaging of per-point losses: an option beyond the paper, whose losses average over points."""

import torch


def checked_power(power: float) -> float:
    """`power` if it lies in [0, 1] (0: the paper's point average), else a ValueError naming the option."""
    if not 0.0 <= power <= 1.0:
        raise ValueError(f"class_balance must lie in [0, 1] (0: the paper's point average), got {power}")
    return power


def class_balanced_mean(per_point: torch.Tensor, labels: torch.Tensor, power: float) -> torch.Tensor:
    """The mean of `per_point` (N,) with each point weighed n_c^(-power), n_c the number of points whose
    label (N,) is its own. power 0 is the plain mean; power 1 the mean over the classes present of each
    class's mean, so a class of 1 % of the points counts as much as one of 50 %."""
    _, label_index, label_count = labels.unique(return_inverse=True, return_counts=True)
    weight = label_count[label_index].to(per_point.dtype) ** -power  # (N,)
    return (weight * per_point).sum() / weight.sum()
