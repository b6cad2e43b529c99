"""Full-resolution class scores: every original point scored through its voxel's logits (and TTA views)."""

import torch


def full_resolution_scores(logits: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Class scores (N_full, K) of every original point: the softmax of its voxel's logits (N, K), summed
    over the TTA views when `inverse` is (V, N_full) rather than (N_full,)."""
    probabilities = logits.softmax(dim=1)[inverse]  # (N_full, K) or (V, N_full, K)
    return probabilities if inverse.dim() == 1 else probabilities.sum(dim=0)
