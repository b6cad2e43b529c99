"""L_topo (Alg. 1): gradients, invariances, edge cases and clear errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ptdistill.losses.topo import TopologyLoss, normalize
from ptdistill.topology.sampling import tps


def feats(n: int, c: int, seed: int) -> torch.Tensor:
    return torch.randn(n, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def isometry(c_in: int, c_out: int, seed: int) -> torch.Tensor:
    """(c_in, c_out) with orthonormal rows: an orthogonal map into a width c_out >= c_in."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(c_out, c_out, generator=g, dtype=torch.float64))
    return q[:c_in]


@pytest.mark.parametrize("normalization", ["mean_pairwise", "rms_pairwise"])
def test_gradient_matches_finite_differences(normalization):
    loss = TopologyLoss(num_samples=14, normalization=normalization, eps_dist=0.0, workers=1)
    teacher, offset = feats(30, 5, 0), torch.tensor([16, 30])
    student = feats(30, 3, 1).requires_grad_()
    assert loss(student, teacher, offset) > 0
    torch.autograd.gradcheck(lambda s: loss(s, teacher, offset), (student,), eps=1e-6, atol=1e-7)


@settings(max_examples=15, deadline=None)
@given(
    c_teacher=st.integers(1, 6),
    extra_width=st.integers(0, 4),
    scale=st.floats(1e-2, 1e2),
    sizes=st.lists(st.integers(0, 20), min_size=1, max_size=3),
    seed=st.integers(0, 2**31 - 1),
)
def test_vanishes_for_a_rotated_scaled_shifted_student(c_teacher, extra_width, scale, sizes, seed):
    offset = torch.tensor(sizes).cumsum(0)
    teacher = feats(int(offset[-1]), c_teacher, seed)
    student = scale * teacher @ isometry(c_teacher, c_teacher + extra_width, seed) + 3.0
    assert TopologyLoss(num_samples=12)(student, teacher, offset).item() == pytest.approx(0, abs=1e-10)


@settings(max_examples=15, deadline=None)
@given(
    widths=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    sizes=st.lists(st.integers(0, 25), min_size=1, max_size=3),
    duplicate=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_is_finite_and_non_negative(widths, sizes, duplicate, seed):
    offset = torch.tensor(sizes).cumsum(0)
    n = int(offset[-1])
    teacher, student = feats(n, widths[0], seed), feats(n, widths[1], seed + 1)
    if duplicate and n > 1:
        student[1::2] = student[0]  # many identical student points: zero distances and ties
    student.requires_grad_()
    value = TopologyLoss(num_samples=16)(student, teacher, offset)
    value.backward()
    assert torch.isfinite(value) and value >= 0
    assert torch.isfinite(student.grad).all()


@pytest.mark.parametrize("normalization", ["mean_pairwise", "rms_pairwise"])
def test_edge_cases_stay_finite(normalization):
    loss = TopologyLoss(num_samples=32, normalization=normalization)
    offset = torch.tensor([2, 3, 40])  # samples of 2, 1 and 37 points
    teacher = feats(40, 8, 0)
    for student in (torch.zeros(40, 4), feats(40, 4, 1)[:, :1]):  # all identical; 1-D: empty H1 (tree-like)
        student.requires_grad_()
        value = loss(student, teacher, offset)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(student.grad).all()
    # 1-D features have an empty H1: the student's (recall only) or the teacher's (precision only).
    line, cloud = teacher[:, :1], feats(40, 3, 2).requires_grad_()
    assert loss(line, cloud.detach(), offset) > 0
    value = loss(cloud, line, offset)
    assert value > 0 and torch.isfinite(torch.autograd.grad(value, cloud)[0]).all()


def test_teacher_gets_no_gradient_and_subsamples_follow_tps():
    teacher = feats(50, 6, 0).requires_grad_()
    student = feats(50, 3, 1).requires_grad_()
    loss = TopologyLoss(num_samples=10)
    loss(student, teacher, torch.tensor([50])).backward()
    assert teacher.grad is None
    assert (student.grad.abs().sum(1) > 0).sum() <= 10  # only the TPS subsample is compared
    (teacher_dgms, student_dgms), = loss.diagrams(student, teacher, torch.tensor([50]))
    assert [len(d) for d in teacher_dgms][0] == 9 and not student_dgms[0].requires_grad


def test_a_sample_no_larger_than_m_is_compared_whole_in_any_order():
    """M >= the scan's rows skips TPS; the loss and its gradient are those of the clouds in TPS's order."""
    teacher, student = feats(40, 6, 0), feats(40, 3, 1).requires_grad_()
    offset = torch.tensor([25, 40])
    whole = TopologyLoss(num_samples=25, workers=1)(student, teacher, offset)
    (grad,) = torch.autograd.grad(whole, student)
    generator = torch.Generator().manual_seed(0)
    order = torch.cat([tps(teacher[:25], 25, generator), 25 + tps(teacher[25:], 15, generator)])
    permuted = student.detach()[order].requires_grad_()
    reference = TopologyLoss(num_samples=25, workers=1)  # the same value computed per sample on reordered rows
    value = (reference(permuted[:25], teacher[order][:25], torch.tensor([25]))
             + reference(permuted[25:], teacher[order][25:], torch.tensor([15]))) / 2
    (grad_permuted,) = torch.autograd.grad(value, permuted)
    torch.testing.assert_close(whole, value)
    torch.testing.assert_close(grad[order], grad_permuted)


def test_normalize_keeps_geometry_up_to_scale():
    x = feats(20, 4, 3)
    for how in ("mean_pairwise", "rms_pairwise"):
        y = normalize(x, how)
        ratio = torch.nn.functional.pdist(y) / torch.nn.functional.pdist(x)
        torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio))
        torch.testing.assert_close(y.mean(0), torch.zeros(4, dtype=x.dtype))
    assert torch.nn.functional.pdist(normalize(x, "mean_pairwise")).mean().item() == pytest.approx(1)


def test_bad_input_gets_a_clear_error():
    loss = TopologyLoss()
    good = torch.randn(10, 3)
    with pytest.raises(ValueError, match="student_feat contains NaN or Inf"):
        loss(torch.full((10, 3), float("nan")), good, torch.tensor([10]))
    with pytest.raises(ValueError, match="teacher_feat contains NaN or Inf"):
        loss(good, torch.full((10, 3), float("inf")), torch.tensor([10]))
    with pytest.raises(ValueError, match="offset"):
        loss(good, good, torch.tensor([4, 9]))
    with pytest.raises(ValueError, match="non-decreasing"):
        loss(good, good, torch.tensor([6, 4, 10]))
    with pytest.raises(ValueError, match="normalization"):
        TopologyLoss(normalization="sphere")


def test_approximate_mode_with_a_zero_bound_is_the_exact_loss_and_a_loose_one_differs():
    teacher, offset = feats(120, 6, 2), torch.tensor([70, 120])
    student = feats(120, 4, 3).requires_grad_()
    exact = TopologyLoss(num_samples=120, workers=1)(student, teacher, offset)
    tight = TopologyLoss(num_samples=120, workers=1, max_bottleneck=0.0)(student, teacher, offset)
    loose = TopologyLoss(num_samples=120, workers=1, max_bottleneck=1.0)(student, teacher, offset)
    torch.testing.assert_close(tight, exact)
    assert loose != exact
    (grad,) = torch.autograd.grad(loose, student)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
