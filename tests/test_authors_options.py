"""The authors'-code options beside the paper's text: smooth-L1 and signed saliency, saliency at cells,
plain Chamfer between diagrams; each against a hand computation."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ptdistill.losses.saliency import SaliencyLoss, saliency_map
from ptdistill.losses.topo import TopologyLoss
from ptdistill.topology.chamfer import chamfer


def minmax(values: np.ndarray) -> np.ndarray:
    return (values - values.min()) / (values.max() - values.min() + 1e-8)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 30), st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_signed_smooth_l1_saliency_matches_numpy(n, c_student, c_teacher, seed):
    g = torch.Generator().manual_seed(seed)
    fs, ft = torch.randn(n, c_student, generator=g, dtype=torch.float64), torch.randn(n, c_teacher, generator=g, dtype=torch.float64)
    ws, wt = torch.rand(c_student, generator=g, dtype=torch.float64), torch.rand(c_teacher, generator=g, dtype=torch.float64)
    offset = torch.tensor([n])
    loss = SaliencyLoss(distance="smooth_l1", beta=1.0, signed=True)(fs, ws, ft, wt, offset)
    # By hand: signed maps Σ_k ω_k F_k, min-max normalised, then Huber with beta 1.
    diff = np.abs(minmax(fs.numpy() @ ws.numpy()) - minmax(ft.numpy() @ wt.numpy()))
    expected = np.where(diff < 1.0, 0.5 * diff**2, diff - 0.5).mean()
    assert abs(loss.item() - expected) < 1e-12


def test_signed_saliency_differs_from_the_absolute_one_only_through_signs():
    feat = torch.tensor([[1.0, -2.0], [0.5, 0.5], [-1.0, 1.0]])
    weights = torch.tensor([1.0, 1.0])
    offset = torch.tensor([3])
    signed = saliency_map(feat, weights, offset, 0.0, signed=True)  # sums -1, 1, 0
    absolute = saliency_map(feat, weights, offset, 0.0)  # sums 3, 1, 2
    assert torch.allclose(signed, torch.tensor([0.0, 1.0, 0.5]))
    assert torch.allclose(absolute, torch.tensor([1.0, 0.0, 0.5]))


def test_unknown_saliency_distance_is_refused():
    with pytest.raises(ValueError, match="smooth_l1"):
        SaliencyLoss(distance="l2")


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**31 - 1))
def test_chamfer_matches_a_double_loop(m, k, seed):
    g = torch.Generator().manual_seed(seed)
    teacher, student = torch.rand(m, 2, generator=g, dtype=torch.float64), torch.rand(k, 2, generator=g, dtype=torch.float64)
    t, s = teacher.numpy(), student.numpy()
    forward = np.mean([min(((ti - sj) ** 2).sum() for sj in s) for ti in t])
    backward = np.mean([min(((sj - ti) ** 2).sum() for ti in t) for sj in s])
    assert abs(chamfer(teacher, student).item() - (forward + backward)) < 1e-12


def test_chamfer_with_an_empty_side_pays_the_distance_to_the_diagonal():
    student = torch.tensor([[0.0, 1.0], [0.5, 0.7]], requires_grad=True)
    value = chamfer(torch.empty(0, 2), student)
    assert torch.isclose(value, torch.tensor((1.0 + 0.04) / 2))  # mean of (d - b)^2
    value.backward()
    assert student.grad.abs().sum() > 0
    assert chamfer(torch.empty(0, 2), torch.empty(0, 2)).item() == 0.0


def test_topology_loss_with_chamfer_sums_the_plain_distance_over_dims():
    g = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(40, 6, generator=g), torch.randn(40, 3, generator=g)
    offset = torch.tensor([40])
    loss = TopologyLoss(num_samples=40, dims=(0, 1), distance="chamfer", workers=1)
    (teacher_dgms, student_dgms), = loss.diagrams(student, teacher, offset)
    expected = sum(chamfer(t, s) for t, s in zip(teacher_dgms, student_dgms))
    assert torch.isclose(loss(student, teacher, offset), expected)
    with pytest.raises(ValueError, match="distance"):
        TopologyLoss(distance="wasserstein")
