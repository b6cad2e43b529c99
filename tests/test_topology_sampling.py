"""TPS (Alg. 5): equal to brute-force greedy k-center, within twice the optimal covering radius."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ptdistill.topology.sampling import tps


def greedy_k_center(x: torch.Tensor, m: int, start: int) -> list[int]:
    """Reference: the full distance matrix, argmax of the distance to the chosen set at every step."""
    dist = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    chosen = [start]
    while len(chosen) < m:
        to_set = dist[:, chosen].min(1).values
        to_set[chosen] = -1
        chosen.append(int(torch.argmax(to_set)))
    return chosen


def covering_radius(x: torch.Tensor, index) -> float:
    return float(torch.cdist(x, x[list(index)]).min(1).values.max())


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), c=st.integers(1, 8), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_tps_equals_brute_force_greedy(n, c, seed, data):
    m = data.draw(st.integers(1, n))
    x = torch.randn(n, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    index = tps(x, m, torch.Generator().manual_seed(seed))
    start = int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(seed))[0])
    assert index.tolist() == greedy_k_center(x, m, start)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 9), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_tps_covering_radius_within_twice_optimum(n, seed, data):
    m = data.draw(st.integers(1, n))
    x = torch.rand(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    optimum = min(covering_radius(x, s) for s in itertools.combinations(range(n), m))
    assert covering_radius(x, tps(x, m, torch.Generator().manual_seed(seed)).tolist()) <= 2 * optimum + 1e-12


def test_tps_indices_are_distinct_with_duplicates_and_identical_points():
    x = torch.cat([torch.randn(5, 3)] * 3)  # every point three times
    index = tps(x, 12)
    assert len(set(index.tolist())) == 12
    assert len({tuple(r) for r in x[index[:5]].tolist()}) == 5  # the distinct points come first
    assert sorted(tps(torch.zeros(7, 4), 7).tolist()) == list(range(7))


def test_tps_start_comes_from_the_generator():
    x = torch.randn(1000, 4)
    first = tps(x, 10, torch.Generator().manual_seed(3))
    assert torch.equal(first, tps(x, 10, torch.Generator().manual_seed(3)))
    starts = {int(tps(x, 1, torch.Generator().manual_seed(s))[0]) for s in range(5)}
    assert len(starts) > 1


def test_tps_sizes_and_bad_input():
    x = torch.randn(6, 2)
    assert tps(x, 0).shape == (0,)
    assert sorted(tps(x, 6).tolist()) == list(range(6))
    with pytest.raises(ValueError, match="m=7 of 6"):
        tps(x, 7)
    with pytest.raises(ValueError, match="shape"):
        tps(torch.randn(6), 2)
    with pytest.raises(ValueError, match="NaN or Inf"):
        tps(torch.tensor([[0.0], [float("nan")]]), 1)
