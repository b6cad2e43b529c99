"""Space-filling-curve codes and their sort orders (PTv3 Sec. 3.1)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ptdistill.models.ptv3.serialization import ORDERS, encode, hilbert_encode, sort_codes, z_order_encode
from ptdistill.models.ptv3.structure import shuffled_curves


def full_cube(depth: int) -> torch.Tensor:
    side = torch.arange(2**depth)
    return torch.cartesian_prod(side, side, side)  # (8^depth, 3)


def random_grid(seed: int, depth: int, n: int = 300) -> torch.Tensor:
    return torch.randint(0, 2**depth, (n, 3), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("curve", ["z", "hilbert"])
def test_codes_enumerate_the_cube(depth, curve):
    code = encode(full_cube(depth), torch.zeros(8**depth, dtype=torch.long), depth, curve)
    assert torch.equal(code.sort().values, torch.arange(8**depth))


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_hilbert_curve_steps_between_face_neighbours_from_origin_to_the_x_corner(depth):
    grid = full_cube(depth)
    path = grid[torch.argsort(hilbert_encode(grid, depth))]
    assert (path[1:] - path[:-1]).abs().sum(1).eq(1).all()
    # Skilling's orientation, which Pointcept uses: from (0, 0, 0) to (2^d - 1, 0, 0).
    assert path[0].tolist() == [0, 0, 0] and path[-1].tolist() == [2**depth - 1, 0, 0]


def test_z_order_is_not_a_continuous_curve():
    grid = full_cube(2)
    path = grid[torch.argsort(z_order_encode(grid))]
    assert (path[1:] - path[:-1]).abs().sum(1).max() > 1


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 16), st.sampled_from(ORDERS))
def test_codes_are_hierarchical(seed, depth, order):
    # Pooling relies on it: dropping the lowest 3 bits gives the code of the parent cell.
    grid = random_grid(seed, depth)
    batch = torch.randint(0, 4, (len(grid),), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(encode(grid, batch, depth, order) >> 3, encode(grid >> 1, batch, depth - 1, order))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 16), st.integers(0, 2))
def test_z_order_increases_along_each_axis(seed, depth, axis):
    grid = random_grid(seed, depth)
    step = torch.zeros(3, dtype=torch.long)
    step[axis] = 1
    inside = grid[:, axis] < 2**depth - 1
    assert (z_order_encode(grid[inside] + step) > z_order_encode(grid[inside])).all()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 16), st.sampled_from(["z", "hilbert"]))
def test_trans_orders_swap_x_and_y(seed, depth, curve):
    grid = random_grid(seed, depth)
    batch = torch.zeros(len(grid), dtype=torch.long)
    assert torch.equal(encode(grid, batch, depth, f"{curve}-trans"), encode(grid[:, [1, 0, 2]], batch, depth, curve))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 16), st.sampled_from(ORDERS))
def test_samples_stay_contiguous_in_curve_order(seed, depth, order):
    grid = random_grid(seed, depth)
    batch = torch.randint(0, 5, (len(grid),), generator=torch.Generator().manual_seed(seed)).sort().values
    sorted_rows, _ = sort_codes(encode(grid, batch, depth, order)[None])
    assert torch.equal(batch[sorted_rows[0]], batch)


def test_sort_codes_orders_and_inverts():
    code = torch.stack([torch.randperm(50), torch.randperm(50), torch.randperm(50)])
    order, inverse = sort_codes(code)
    assert (code.gather(1, order).diff(dim=1) > 0).all()
    assert torch.equal(order.gather(1, inverse), torch.arange(50).expand(3, 50))


def test_shuffled_curves_permute_the_orders_only_when_asked():
    assert shuffled_curves(4, shuffle=False) == (0, 1, 2, 3)
    torch.manual_seed(3)
    draws = {shuffled_curves(4, shuffle=True) for _ in range(20)}
    assert all(sorted(d) == [0, 1, 2, 3] for d in draws) and len(draws) > 1


def test_unknown_order_is_refused():
    with pytest.raises(ValueError, match="unknown serialization order 'zz'"):
        encode(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, dtype=torch.long), 1, "zz")
