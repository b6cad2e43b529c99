"""Differentiable Rips persistence (Theorem 1, Alg. 3): exact diagrams, exact critical edges, true gradients."""

import importlib.util

import gudhi
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import pdist, squareform

from ptdistill.bench.naive_rips import naive_rips_diagrams
from ptdistill.topology import persistence
from ptdistill.topology.persistence import CriticalEdgeError, PendingDiagrams, rips_diagrams


def cloud(n: int, c: int, seed: int) -> torch.Tensor:
    return torch.randn(n, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def exact_pairs(x: torch.Tensor):
    """gudhi's exact SimplexTree on the same float64 distances: per dim, the finite positive-persistence
    (birth edge, death edge, birth, death) pairs."""
    dist = squareform(pdist(x.numpy()))
    tree = gudhi.SimplexTree.create_from_array(dist, max_filtration=np.inf)
    tree.expansion(2)
    tree.compute_persistence(homology_coeff_field=2)
    h0, higher, _, _ = tree.flag_persistence_generators()
    h1 = higher[0] if higher else np.empty((0, 4), dtype=int)
    as_edge = lambda a, b: (min(a, b), max(a, b))  # noqa: E731
    pairs = {
        0: [(None, as_edge(u, v), 0.0, dist[u, v]) for _, u, v in h0],
        1: [(as_edge(a, b), as_edge(u, v), dist[a, b], dist[u, v]) for a, b, u, v in h1],
    }
    return {d: [p for p in ps if p[3] > p[2]] for d, ps in pairs.items()}


def our_pairs(x: torch.Tensor):
    """Our routing as the same (birth edge, death edge, birth, death) tuples, on a tie-free cloud."""
    diagrams, routing = persistence._persistence(x.numpy(), (0, 1), "gudhi", 0.0, route=True, max_bottleneck=None)
    assert len(set(routing.value_of_edge.tolist())) == len(routing.value_of_edge)  # one edge per value: no ties
    edge = dict(zip(routing.value_of_edge.tolist(), map(tuple, routing.edges.tolist())))
    return {
        d: [(edge.get(b), edge[e], *pair) for (b, e), pair in zip(slots.tolist(), diagram.tolist())]
        for d, slots, diagram in zip((0, 1), routing.slots, diagrams)
    }


@settings(max_examples=20, deadline=None)
@given(n=st.integers(4, 22), c=st.integers(2, 4), seed=st.integers(0, 2**31 - 1))
def test_diagrams_and_critical_edges_equal_gudhi_exact_generators(n, c, seed):
    x = cloud(n, c, seed)
    ours, exact = our_pairs(x), exact_pairs(x)
    for d, diagram in enumerate(rips_diagrams(x)):
        reference = np.array([p[2:] for p in exact[d]]).reshape(-1, 2)
        assert gudhi.bottleneck_distance(diagram.numpy(), reference) == pytest.approx(0, abs=1e-12)
        assert np.array_equal(np.sort(diagram.numpy(), 0), np.sort(reference, 0))  # exact values, no rounding
        assert sorted(ours[d], key=str) == sorted(exact[d], key=str)  # the same critical edges


def test_diagrams_equal_the_naive_boundary_reduction():
    x = cloud(14, 3, 0)
    for ours, naive in zip(rips_diagrams(x), naive_rips_diagrams(x)):
        assert gudhi.bottleneck_distance(ours.numpy(), naive.numpy()) == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_gradient_matches_finite_differences(seed):
    x = cloud(16, 3, seed).requires_grad_()
    weights = [torch.rand(n, 2, generator=torch.Generator().manual_seed(seed), dtype=x.dtype) for n in (15, 8)]

    def f(x):
        return sum((w[: len(d)] * d).sum() for w, d in zip(weights, rips_diagrams(x, eps_dist=0.0)))

    assert len(rips_diagrams(x)[1]) > 0  # H1 gradients are exercised too
    torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-7)


def test_gradient_routes_each_value_to_its_critical_edge_only():
    x = cloud(12, 3, 1).requires_grad_()
    death = rips_diagrams(x)[0][0, 1]
    (grad,) = torch.autograd.grad(death, x)
    u, v = grad.abs().sum(1).nonzero().squeeze(1).tolist()
    unit = (x[u] - x[v]).detach() / (x[u] - x[v]).norm()
    assert (x[u] - x[v]).norm().item() == pytest.approx(death.item())
    torch.testing.assert_close(grad[u], unit)
    torch.testing.assert_close(grad[v], -unit)


def test_duplicated_points_share_the_gradient_of_tied_edges():
    base = cloud(8, 3, 2)
    x = torch.cat([base, base[:2]]).requires_grad_()  # points 8, 9 duplicate 0, 1: zero distances and ties
    diagrams = rips_diagrams(x)
    for ours, reference in zip(diagrams, rips_diagrams(base)):
        assert gudhi.bottleneck_distance(ours.detach().numpy(), reference.numpy()) == pytest.approx(0, abs=1e-12)
    sum(d.sum() for d in diagrams).backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad[8:], x.grad[:2])  # tied edges split the gradient uniformly


def test_near_ties_within_tie_tol_are_averaged():
    base = cloud(8, 3, 4)
    x = torch.cat([base, base[:1] + 1e-13]).requires_grad_()  # point 8 is 1e-13 from point 0
    for tol, shared in ((0.0, False), (1e-9, True)):
        (grad,) = torch.autograd.grad(sum(d.sum() for d in rips_diagrams(x, tie_tol=tol)), x)
        assert torch.allclose(grad[0], grad[8], atol=1e-3) == shared


def test_identical_points_and_tiny_clouds_give_empty_finite_diagrams():
    x = torch.zeros(6, 3, requires_grad=True)
    diagrams = rips_diagrams(x)
    assert [d.shape for d in diagrams] == [(0, 2), (0, 2)]
    sum(d.sum() for d in diagrams).backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    for n, h0 in ((0, 0), (1, 0), (2, 1), (3, 2)):
        assert [len(d) for d in rips_diagrams(torch.randn(n, 2))] == [h0, 0]


def test_no_grad_path_gives_the_same_values():
    x = cloud(30, 4, 5)
    with_grad = rips_diagrams(x.clone().requires_grad_())
    for a, b in zip(rips_diagrams(x), with_grad):
        torch.testing.assert_close(a, b.detach())


def test_thread_pool_equals_sequential_and_keeps_dims_order():
    clouds = [cloud(n, 3, n) for n in (5, 20, 33, 12)]
    sequential = PendingDiagrams(clouds, dims=(1, 0), workers=1).result()
    pooled = PendingDiagrams(clouds, dims=(1, 0), workers=2).result()
    for s, p in zip(sequential, pooled):
        assert all(torch.equal(a, b) for a, b in zip(s, p))
    assert len(sequential[1][1]) == 19  # dims (1, 0): H0 second


def test_bad_input_gets_a_clear_error():
    with pytest.raises(ValueError, match="NaN or Inf"):
        rips_diagrams(torch.tensor([[0.0, 1.0], [float("inf"), 0.0]]))
    with pytest.raises(ValueError, match="backend"):
        rips_diagrams(torch.randn(4, 2), backend="ripser")
    with pytest.raises(ValueError, match="dims"):
        rips_diagrams(torch.randn(4, 2), dims=(0, 0))
    with pytest.raises(ValueError, match="shape"):
        rips_diagrams(torch.randn(4))


def test_a_value_that_is_no_matrix_entry_is_refused(monkeypatch):
    real = persistence.BACKENDS["gudhi"]
    monkeypatch.setitem(persistence.BACKENDS, "gudhi", lambda dist, dims: [p * (1 + 1e-12) for p in real(dist, dims)])
    with pytest.raises(CriticalEdgeError, match="no entry"):
        rips_diagrams(cloud(10, 3, 0).requires_grad_())


@pytest.mark.skipif(importlib.util.find_spec("gph") is None, reason="giotto-ph (AGPL, optional) not installed")
def test_giotto_backend_agrees_with_gudhi():
    x = cloud(40, 3, 6).requires_grad_()
    for a, b in zip(rips_diagrams(x, backend="giotto"), rips_diagrams(x)):
        assert np.array_equal(np.sort(a.detach().numpy(), 0), np.sort(b.detach().numpy(), 0))


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 80), st.integers(1, 6), st.integers(0, 3), st.integers(0, 2**31 - 1))
def test_h0_fast_path_equals_gudhi_values_and_gradients(n, c, duplicates, seed):
    """dims=(0,) runs Prim's minimum spanning tree instead of gudhi: the same diagram, the same critical edges."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, dtype=torch.float64)
    x[1 : 1 + min(duplicates, n - 1)] = x[0]  # coincident points: zero-length edges
    fast = x.clone().requires_grad_()
    full = x.clone().requires_grad_()
    (h0,) = rips_diagrams(fast, (0,))
    h0_full, _ = rips_diagrams(full, (0, 1))  # gudhi computes this one
    assert torch.equal(h0.sort(0).values, h0_full.sort(0).values)
    weights = torch.rand(len(h0), generator=g, dtype=torch.float64)
    (h0.sort(0).values[:, 1] * weights).sum().backward()
    (h0_full.sort(0).values[:, 1] * weights).sum().backward()
    torch.testing.assert_close(fast.grad, full.grad)


def test_greedy_landmarks_stop_at_the_first_prefix_within_the_bound():
    x = torch.tensor([[0.0], [10.0], [4.0], [7.0]], dtype=torch.float64)
    dist = squareform(pdist(x.numpy()))
    # From point 0: 10 is farthest; then 4 is 4 from its nearest landmark (0), 7 is 3 (from 10).
    landmarks, bound = persistence.greedy_landmarks(dist, 8.0)
    assert landmarks.tolist() == [0, 1] and bound == 8.0
    landmarks, bound = persistence.greedy_landmarks(dist, 7.9)
    assert landmarks.tolist() == [0, 1, 2] and bound == 6.0
    landmarks, bound = persistence.greedy_landmarks(dist, 0.0)
    assert sorted(landmarks.tolist()) == [0, 1, 2, 3] and bound == 0.0


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 60), c=st.integers(2, 5), limit=st.floats(0.0, 3.0), seed=st.integers(0, 2**31 - 1))
def test_approximate_mode_is_within_its_bottleneck_bound_with_h0_exact(n, c, limit, seed):
    x = cloud(n, c, seed)
    landmarks, bound = persistence.greedy_landmarks(squareform(pdist(x.numpy())), limit)
    exact = rips_diagrams(x)
    approx = rips_diagrams(x, max_bottleneck=limit)
    assert bound <= limit
    assert torch.equal(approx[0].sort(0).values, exact[0].sort(0).values)  # H0 from the whole cloud
    assert gudhi.bottleneck_distance(approx[1].numpy(), exact[1].numpy()) <= bound + 1e-12
    # The higher diagrams are the landmarks' exact diagrams.
    assert torch.equal(approx[1].sort(0).values, rips_diagrams(x[landmarks])[1].sort(0).values)


def test_approximate_higher_diagrams_route_gradients_to_the_landmarks_critical_edges():
    x = cloud(80, 3, 7)
    landmarks, _ = persistence.greedy_landmarks(squareform(pdist(x.numpy())), 1.0)
    assert 3 < len(landmarks) < 80  # a real subsample
    whole, part = x.clone().requires_grad_(), x[landmarks].clone().requires_grad_()
    approx_h1, exact_h1 = rips_diagrams(whole, max_bottleneck=1.0)[1], rips_diagrams(part)[1]
    assert len(exact_h1) > 0
    approx_h1.sum().backward()
    exact_h1.sum().backward()
    expected = torch.zeros_like(x).index_add(0, torch.as_tensor(landmarks), part.grad)
    torch.testing.assert_close(whole.grad, expected)


def test_approximate_mode_refuses_a_negative_bound():
    with pytest.raises(ValueError, match="max_bottleneck"):
        rips_diagrams(torch.randn(5, 2), max_bottleneck=-0.1)
