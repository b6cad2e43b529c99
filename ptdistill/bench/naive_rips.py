"""Naive pure-PyTorch Vietoris-Rips persistence: the benchmark baseline of Table 8 and a test oracle.

Enumerates every simplex up to dimension max(dims) + 1, orders each dimension by filtration value (the
longest edge, Theorem 1), and reduces each boundary matrix over Z2 column by column (the standard
algorithm). Diagram values index the autograd distance matrix, so it is differentiable too. Its cost
grows with the number of triangles, O(N^3): use it on small clouds only.
"""

import itertools
import time
from collections.abc import Sequence

import torch


def _filtration(dist: torch.Tensor, simplices: torch.Tensor) -> torch.Tensor:
    """Filtration values (S,) of simplices (S, k+1): their longest edge; 0 for vertices."""
    if simplices.shape[1] == 1:
        return dist.new_zeros(len(simplices))
    pairs = list(itertools.combinations(range(simplices.shape[1]), 2))
    return torch.stack([dist[simplices[:, a], simplices[:, b]] for a, b in pairs], 1).amax(1)


def naive_rips_diagrams(
    x: torch.Tensor, dims: Sequence[int] = (0, 1), time_limit: float | None = None
) -> list[torch.Tensor]:
    """Finite Rips diagrams of x (N, C), one (K_d, 2) tensor per dim; TimeoutError past time_limit seconds."""
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    n = len(x)
    dist = torch.cdist(x, x)  # (N, N)
    simplices, values = [], []  # per dimension k: (S_k, k+1) vertices and (S_k,) values, in filtration order
    for k in range(max(dims) + 2):
        s = torch.combinations(torch.arange(n), k + 1) if k else torch.arange(n)[:, None]
        v = _filtration(dist, s)
        order = torch.sort(v.detach(), stable=True).indices
        simplices.append(s[order])
        values.append(v[order])
    diagrams = []
    for d in dims:
        faces, cofaces = simplices[d], simplices[d + 1]
        face_index = {tuple(f): i for i, f in enumerate(faces.tolist())}
        pivot_column = {}  # lowest row -> reduced column (dense bool over faces) that owns it
        pairs = []
        for j, coface in enumerate(cofaces.tolist()):
            column = torch.zeros(len(faces), dtype=torch.bool)
            column[[face_index[f] for f in itertools.combinations(coface, d + 1)]] = True
            while column.any():
                low = int(column.nonzero().max())
                if low not in pivot_column:
                    pivot_column[low] = column
                    pairs.append((low, j))
                    break
                column = column ^ pivot_column[low]
            if deadline is not None and time.perf_counter() > deadline:
                raise TimeoutError(f"naive persistence of {n} points passed {time_limit} s")
        rows, cols = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).unbind(1)  # (face, coface) positions
        diagram = torch.stack([values[d][rows], values[d + 1][cols]], 1)  # (K, 2)
        diagrams.append(diagram[diagram[:, 1] > diagram[:, 0]])
    return diagrams
