"""Topology-Preserving Sampling (TPS, Alg. 5): greedy k-center selection in feature space.

Greedy farthest-point selection is a 2-approximation of the k-center problem, so it keeps the covering
radius, and with it the bottleneck error of the subsample's Rips diagrams (Prop. 1), small.
"""

import torch


def tps(x: torch.Tensor, m: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices (m,) of m distinct rows of x (N, C), chosen greedily farthest from those already chosen.

    The first index is drawn from `generator`; ties go to the lowest index. Memory is O(N) beyond a
    centred copy of x, and every step stays on x's device (no host synchronisation), so it runs on the
    GPU as well. Cost O(N M C).
    """
    if x.dim() != 2:
        raise ValueError(f"tps: x must be a (N, C) feature matrix, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("tps: x contains NaN or Inf")
    n = x.shape[0]
    if not 0 <= m <= n:
        raise ValueError(f"tps: cannot choose m={m} of {n} points")
    index = torch.empty(m, dtype=torch.long, device=x.device)
    if m == 0:
        return index
    draw_device = generator.device if generator is not None else x.device
    index[0] = torch.randint(n, (1,), generator=generator, device=draw_device)[0].to(x.device)
    # Squared distances in Gram form, ||x||^2 - 2 x.y + ||y||^2: one matrix-vector product per step.
    # Centring changes no distance and keeps the norms, and so the rounding, small.
    x = x - x.mean(0)
    norms = x.square().sum(1)  # (N,)
    nearest = torch.full((n,), torch.inf, dtype=x.dtype, device=x.device)  # (N,) to the chosen set
    for k in range(1, m):
        last = index[k - 1]
        nearest = torch.minimum(nearest, torch.addmv(norms, x, x[last], alpha=-2).add_(norms[last]))
        nearest[last] = -1.0  # chosen points are never chosen again, even among duplicates
        index[k] = torch.argmax(nearest)
    return index
