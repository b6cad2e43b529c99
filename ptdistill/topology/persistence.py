"""Differentiable Vietoris-Rips persistence by critical-edge routing (Theorem 1, Alg. 3).

A Rips birth or death value is the length of one edge: the longest edge of the simplex that creates or
destroys the feature. So the diagram is computed by a fast backend on a detached float64 copy of the
distance matrix, each finite value is traced back to its critical edge, and the differentiable diagram
is those edge lengths evaluated on the features. Autograd then routes dL/dD to exactly the critical
edges (Eq. 1) and on to the features with the stabilised gradient (h_i - h_j) / (D_ij + eps_dist).

Recovering the edges. gudhi's Ripser returns values only, but every value is an exact entry of the
float64 matrix it was given, so each is looked up by value, and a value found nowhere raises
`CriticalEdgeError`. giotto-ph returns generator edges; their float64 lengths enter the same lookup.
Ties (Alg. 3): a value realised by several edges of equal length, as duplicated points give, spreads
its gradient uniformly over them, since the backend does not say which one it used. Lengths within
`tie_tol` of the value also count as tied when they touch an exactly matching edge (the tied maximizers
of one simplex share a vertex); keep `tie_tol` at rounding level.

H0 births are 0. Infinite (essential) and zero-persistence pairs are dropped. With dims (0,) the gudhi
backend hands over to a minimum spanning tree (`_mst_pairs`), which gives the same H0 values.

Approximate mode (`max_bottleneck`): H0 stays exact (the spanning tree of the whole cloud), and the higher
dims are computed on landmarks, the shortest prefix of a greedy permutation whose covering radius r has
2r <= max_bottleneck (`greedy_landmarks`). Rips stability (Chazal, de Silva and Oudot, 2014: the bottleneck
distance between Rips diagrams is at most 2 d_GH, and d_GH(X, L) <= d_H(X, L) = r for L in X) bounds the
error of every higher diagram by 2r. Landmark edges are edges of the cloud, so every value still has an
exact critical edge.
"""

import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from gudhi.sklearn.rips_persistence import RipsPersistence
from scipy.spatial.distance import pdist, squareform


class CriticalEdgeError(RuntimeError):
    """A backend returned a persistence value that is no edge length of the matrix it was given."""


def _gudhi_pairs(dist: np.ndarray, dims: tuple[int, ...]) -> list[np.ndarray]:
    """(birth, death) pairs per dim from gudhi's Ripser (MIT; releases the GIL), exact float64 entries of dist."""
    rips = RipsPersistence(list(dims), input_type="full distance matrix", homology_coeff_field=2)
    return rips.fit_transform([dist])[0]


def _giotto_pairs(dist: np.ndarray, dims: tuple[int, ...]) -> list[np.ndarray]:
    """(birth, death) pairs per dim as float64 lengths of giotto-ph's generator edges (it computes in float32)."""
    try:
        from gph import ripser_parallel  # AGPL-3: an optional extra, imported only when chosen
    except ImportError as error:
        raise ImportError("backend='giotto' needs giotto-ph (AGPL-3): pip install 'ptdistill[giotto]'") from error

    gens = ripser_parallel(dist, maxdim=max(dims), metric="precomputed", coeff=2, return_generators=True)["gens"]
    h0 = np.stack([np.zeros(len(gens[0])), dist[gens[0][:, 1], gens[0][:, 2]]], 1)  # (vertex, death edge)
    higher = [np.stack([dist[g[:, 0], g[:, 1]], dist[g[:, 2], g[:, 3]]], 1) for g in gens[1]]  # (birth, death edge)
    return [h0 if d == 0 else higher[d - 1] if d - 1 < len(higher) else np.empty((0, 2)) for d in dims]


def _mst_pairs(dist: np.ndarray, dims: tuple[int, ...]) -> list[np.ndarray]:
    """H0 only: the finite H0 deaths of a Rips filtration are the edge lengths of a minimum spanning tree,
    exact float64 entries of dist. Prim's algorithm on the dense matrix, O(M^2) in M vectorised steps
    (scipy's sparse MST spends most of its time converting the dense matrix)."""
    if dims != (0,):
        raise ValueError(f"the mst backend computes H0 only, got dims {dims}")
    m = len(dist)
    outside = np.ones(m, dtype=bool)  # vertices not yet in the tree
    outside[0] = False
    reach = np.where(outside, dist[0], np.inf)  # (M,) shortest edge from the tree to each vertex
    deaths = np.empty(m - 1)
    for k in range(m - 1):
        j = int(np.argmin(reach))
        deaths[k] = reach[j]
        outside[j] = False
        reach = np.where(outside, np.minimum(reach, dist[j]), np.inf)
    return [np.stack([np.zeros(m - 1), deaths], 1)]


def greedy_landmarks(dist: np.ndarray, max_bottleneck: float) -> tuple[np.ndarray, float]:
    """Landmarks (L,) of the cloud with distance matrix dist (M, M), and their bottleneck bound 2r.

    Farthest-point order from vertex 0, stopped at the first prefix whose covering radius r (the largest
    distance from a point to its nearest landmark) has 2r <= max_bottleneck; all M points if none does
    (then r = 0 and the diagrams are exact). O(M) per landmark on the precomputed matrix. Not `tps`, which
    picks a fixed count in torch on the caller's thread: this stops at a radius, inside the backend's thread.
    """
    m = len(dist)
    landmarks = [0]
    reach = dist[0].copy()  # (M,) distance from each point to its nearest landmark
    while len(landmarks) < m:
        farthest = int(np.argmax(reach))
        if 2 * reach[farthest] <= max_bottleneck:
            break
        landmarks.append(farthest)
        reach = np.minimum(reach, dist[farthest])
    return np.array(landmarks), 2 * float(reach.max())


def _landmark_pairs(dist: np.ndarray, dims: tuple[int, ...], backend: str, max_bottleneck: float):
    """The approximate mode's pairs per dim: H0 exact from the whole cloud's spanning tree, the higher dims
    from the backend on `greedy_landmarks`, each within bottleneck distance 2r of the exact diagram."""
    higher = tuple(d for d in dims if d > 0)
    pairs = {}
    if higher:
        landmarks, _ = greedy_landmarks(dist, max_bottleneck)
        pairs = dict(zip(higher, BACKENDS[backend](dist[np.ix_(landmarks, landmarks)], higher)))
    if 0 in dims:
        pairs[0] = _mst_pairs(dist, (0,))[0]
    return [pairs[d] for d in dims]


BACKENDS: dict[str, Callable[[np.ndarray, tuple[int, ...]], list[np.ndarray]]] = {
    "gudhi": _gudhi_pairs,
    "giotto": _giotto_pairs,
    "mst": _mst_pairs,
}


class _EdgeLength(torch.autograd.Function):
    """Edge lengths ||h_i - h_j|| of diff (E, C) with Theorem 1's gradient diff / (length + eps_dist), finite at 0."""

    @staticmethod
    def forward(ctx, diff: torch.Tensor, eps_dist: float) -> torch.Tensor:
        length = torch.linalg.vector_norm(diff, dim=1)  # (E,)
        ctx.save_for_backward(diff, length)
        ctx.eps_dist = eps_dist
        return length

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        diff, length = ctx.saved_tensors
        return grad[:, None] * diff / (length + ctx.eps_dist)[:, None], None


@dataclass(frozen=True)
class _Routing:
    """The critical edges of one cloud's diagrams.

    Distinct value v is the weighted mean length of the edges with value_of_edge == v; slots[k] (K_d, 2)
    indexes those values for each (birth, death), with num_values standing for an H0 birth (0).
    """

    edges: np.ndarray  # (E, 2)
    value_of_edge: np.ndarray  # (E,)
    weight: np.ndarray  # (E,) 1 / number of tied edges
    num_values: int
    slots: list[np.ndarray]


def _critical_edges(length: np.ndarray, m: int, values: np.ndarray, tie_tol: float):
    """Alg. 3 (critical-edge routing): critical edges (E, 2), their value index (E,) and tie weight (E,) for the
    sorted distinct diagram values (Q,), looked up among the condensed (pdist-order) edge lengths of a cloud
    of m points; tied maximiser edges share a value's gradient uniformly."""
    q = len(values)
    if q == 0:
        return np.empty((0, 2), dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0)
    # Candidates: edges within tie_tol of some value: the first value >= length - tie_tol is <= length + tie_tol.
    first = np.minimum(np.searchsorted(values, length - tie_tol), q - 1)
    near = np.abs(values[first] - length) <= tie_tol
    candidates = near.nonzero()[0]
    order = np.argsort(length[candidates], kind="stable")
    candidates, sorted_length = candidates[order], length[candidates[order]]
    start = np.searchsorted(sorted_length, values - tie_tol)  # (Q,) window of each value
    count = np.searchsorted(sorted_length, values + tie_tol, side="right") - start
    value_of_edge = np.repeat(np.arange(q), count)
    found = candidates[np.arange(len(value_of_edge)) + np.repeat(start - (np.cumsum(count) - count), count)]
    exact = length[found] == values[value_of_edge]
    missing = np.bincount(value_of_edge[exact], minlength=q) == 0
    if missing.any():
        raise CriticalEdgeError(
            f"persistence value {values[missing][0]!r} is no entry of the float64 distance matrix the backend "
            "was given, so its critical edge cannot be recovered"
        )
    i, j = (index[found] for index in _edge_vertices(m))
    touches = np.zeros((q, m), dtype=bool)  # vertices of the exactly matching edges of each value
    touches[value_of_edge[exact], i[exact]] = True
    touches[value_of_edge[exact], j[exact]] = True
    tied = touches[value_of_edge, i] | touches[value_of_edge, j]
    value_of_edge = value_of_edge[tied]
    weight = 1.0 / np.bincount(value_of_edge, minlength=q)[value_of_edge]
    return np.stack([i[tied], j[tied]], 1), value_of_edge, weight


@functools.lru_cache(maxsize=4)
def _edge_vertices(m: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (i, j), i < j, of the m(m-1)/2 edges in condensed (pdist) order; cached, as m rarely changes."""
    return np.triu_indices(m, 1)


def _persistence(
    x64: np.ndarray, dims: tuple[int, ...], backend: str, tie_tol: float, route: bool, max_bottleneck: float | None
):
    """Finite pairs per dim (float64) of cloud x64 (M, C), and their _Routing if `route`; approximate (the
    module docstring) when max_bottleneck is set.

    Runs single-threaded in numpy/scipy, which release the GIL, so clouds can run side by side on threads.
    """
    m = len(x64)
    length = pdist(x64)  # (M(M-1)/2,) condensed, from exact per-pair differences (no matrix-product rounding)
    if dims == (0,) and backend == "gudhi":  # the H0-only fast path: same values, a fraction of the time
        backend = "mst"
    if m < 2:
        raw = [np.empty((0, 2)) for _ in dims]
    elif max_bottleneck is None:
        raw = BACKENDS[backend](squareform(length), dims)
    else:
        raw = _landmark_pairs(squareform(length), dims, backend, max_bottleneck)
    pairs = [p[np.isfinite(p[:, 1]) & (p[:, 1] > p[:, 0])] for p in raw]
    if not route:
        return pairs, None
    values = np.unique(np.concatenate([p[:, 1] if d == 0 else p.ravel() for d, p in zip(dims, pairs)]))
    edges, value_of_edge, weight = _critical_edges(length, m, values, tie_tol)
    slots = [np.searchsorted(values, p) for p in pairs]
    for d, s in zip(dims, slots):
        if d == 0:
            s[:, 0] = len(values)
    return pairs, _Routing(edges, value_of_edge, weight, len(values), slots)


def _differentiable(x: torch.Tensor, routing: _Routing, eps_dist: float) -> list[torch.Tensor]:
    """The diagrams of x (M, C) as critical edge lengths evaluated on x (Eq. 1)."""
    i, j = torch.as_tensor(routing.edges, device=x.device).unbind(1)
    length = _EdgeLength.apply(x[i] - x[j], eps_dist)  # (E,)
    weighted = torch.as_tensor(routing.weight).to(x) * length
    value_of_edge = torch.as_tensor(routing.value_of_edge, device=x.device)
    values = x.new_zeros(routing.num_values + 1).index_add(0, value_of_edge, weighted)  # last: an H0 birth, 0
    return [values[torch.as_tensor(s, device=x.device)] for s in routing.slots]


def _check(clouds: Sequence[torch.Tensor], dims: Sequence[int], backend: str, workers: int,
           max_bottleneck: float | None) -> None:
    if max_bottleneck is not None and not max_bottleneck >= 0:
        raise ValueError(f"max_bottleneck must be >= 0 (or None for exact diagrams), got {max_bottleneck}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
    if not dims or len(set(dims)) != len(dims) or min(dims) < 0:
        raise ValueError(f"dims must be distinct homology dimensions >= 0, got {tuple(dims)}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    for k, x in enumerate(clouds):
        if x.dim() != 2:
            raise ValueError(f"cloud {k} must be a (M, C) feature matrix, got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError(f"cloud {k} contains NaN or Inf features")


@functools.lru_cache(maxsize=None)
def _thread_pool(workers: int, pid: int) -> ThreadPoolExecutor:
    """One long-lived pool per worker count, so a step does not pay for starting threads; keyed by the
    process id too, as a forked child (a data-loader worker, a side run) inherits the pool without its
    threads."""
    return ThreadPoolExecutor(workers, thread_name_prefix="persistence")


class PendingDiagrams:
    """Finite Rips diagrams of clouds (M_b, C_b) being computed on a thread pool of `workers` threads (gudhi,
    numpy and scipy release the GIL), so that the caller's thread goes on meanwhile; `result()` joins them.

    Start it as soon as the clouds exist. The backend works on detached float64 copies made here; the
    differentiable diagrams (Eq. 1) are built on the caller's thread by `result()`. A cloud that needs no
    gradient gets its diagrams straight from the backend values, without edge recovery. max_bottleneck:
    None for exact diagrams; else the approximate mode, every diagram within this bottleneck distance of
    the exact one (H0 exact).
    """

    def __init__(
        self,
        clouds: Sequence[torch.Tensor],
        dims: Sequence[int] = (0, 1),
        backend: str = "gudhi",
        workers: int = 1,
        eps_dist: float = 1e-8,
        tie_tol: float = 0.0,
        max_bottleneck: float | None = None,
    ):
        dims = tuple(int(d) for d in dims)
        _check(clouds, dims, backend, workers, max_bottleneck)
        self.clouds = list(clouds)
        self.eps_dist = eps_dist
        pool = _thread_pool(workers, os.getpid())
        self._futures = [
            pool.submit(
                _persistence, x.detach().to("cpu", torch.float64).numpy(), dims, backend, tie_tol,
                torch.is_grad_enabled() and x.requires_grad, max_bottleneck,
            )
            for x in self.clouds
        ]

    def result(self) -> list[list[torch.Tensor]]:
        """Per cloud, one (K_d, 2) tensor of (birth, death) per dim, differentiable through the critical edges."""
        results = [future.result() for future in self._futures]
        return [
            _differentiable(x, routing, self.eps_dist) if routing else [torch.as_tensor(p).to(x) for p in pairs]
            for x, (pairs, routing) in zip(self.clouds, results)
        ]


def rips_diagrams(
    x: torch.Tensor,
    dims: Sequence[int] = (0, 1),
    backend: str = "gudhi",
    eps_dist: float = 1e-8,
    tie_tol: float = 0.0,
    max_bottleneck: float | None = None,
) -> list[torch.Tensor]:
    """Finite Vietoris-Rips diagrams of x (N, C): one (K_d, 2) tensor of (birth, death) per dim in dims,
    differentiable with respect to x through the critical edges (Theorem 1); approximate within
    max_bottleneck when it is set."""
    return PendingDiagrams([x], dims, backend, 1, eps_dist, tie_tol, max_bottleneck).result()[0]
