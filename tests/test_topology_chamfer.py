"""Persistence-weighted Chamfer distance: Alg. 2's value and conventions, Alg. 4's gradients."""

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ptdistill.topology.chamfer import pwcd


def diagram(k: int, seed: int) -> torch.Tensor:
    """k random (birth, death) pairs with death >= birth."""
    g = torch.Generator().manual_seed(seed)
    birth = torch.rand(k, generator=g, dtype=torch.float64)
    return torch.stack([birth, birth + torch.rand(k, generator=g, dtype=torch.float64)], 1)


def alg2(teacher, student, eps):
    """Alg. 2 line by line, in Python loops."""
    m, n = len(teacher), len(student)
    if m == 0 and n == 0:
        return 0.0
    diag = lambda p: (p[1] - p[0]) ** 2 / 2  # noqa: E731
    w = [math.log(1 + max(p[1] - p[0], 0)) for p in teacher]
    cost = [[((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2) / 2 for q in student] for p in teacher]
    recall = 0.0 if m == 0 else sum(wi * min([*ci, diag(p)]) for wi, ci, p in zip(w, cost, teacher)) / (sum(w) + eps)
    precision = sum(min([cost[i][j] for i in range(m)] + [diag(q)]) for j, q in enumerate(student)) / n if n else 0.0
    return recall + precision


def alg4(teacher, student, eps):
    """Alg. 4's closed-form (g_b, g_d) for the student, with Alg. 2's C_ij = ||p - q||^2 / 2: the match test
    compares C_ij, and the factor 2 of d||q - p||^2 / dq is halved."""
    m, k = len(teacher), len(student)
    w = torch.log1p((teacher[:, 1] - teacher[:, 0]).clamp(min=0))
    grad = torch.zeros_like(student)
    cost = (teacher[:, None] - student[None]).square().sum(-1) / 2  # (M, K)
    for i in range(m):  # recall: teacher -> nearest student
        j = int(cost[i].argmin())
        if cost[i, j] <= (teacher[i, 1] - teacher[i, 0]) ** 2 / 2:
            grad[j] += w[i] / (w.sum() + eps) * (student[j] - teacher[i])
    for j in range(k):  # precision: student -> nearest teacher, else the diagonal
        i = int(cost[:, j].argmin()) if m else None
        if m and cost[i, j] <= (student[j, 1] - student[j, 0]) ** 2 / 2:
            grad[j] += (student[j] - teacher[i]) / k
        else:
            delta = student[j, 1] - student[j, 0]
            grad[j] += torch.stack([-delta, delta]) / k
    return grad


def unique_minima(teacher, student) -> bool:
    """Every min of Alg. 2 (over matches and the diagonal) is attained once, clear of rounding."""
    cost = (teacher[:, None] - student[None]).square().sum(-1) / 2
    rows = torch.cat([cost, ((teacher[:, 1] - teacher[:, 0]) ** 2 / 2)[:, None]], 1)
    cols = torch.cat([cost, ((student[:, 1] - student[:, 0]) ** 2 / 2)[None]], 0).T
    gaps = [r.sort().values.diff()[0] for r in (*rows, *cols) if len(r) > 1]
    return all(g > 1e-9 for g in gaps)


@settings(max_examples=60, deadline=None)
@given(m=st.integers(0, 12), k=st.integers(0, 12), seed=st.integers(0, 2**31 - 1))
def test_value_follows_alg2(m, k, seed):
    teacher, student = diagram(m, seed), diagram(k, seed + 1)
    expected = alg2(teacher.tolist(), student.tolist(), 1e-8)
    assert pwcd(teacher, student).item() == pytest.approx(expected, rel=1e-12, abs=1e-15)


@settings(max_examples=60, deadline=None)
@given(m=st.integers(0, 12), k=st.integers(1, 12), seed=st.integers(0, 2**31 - 1))
def test_autograd_equals_alg4(m, k, seed):
    teacher, student = diagram(m, seed), diagram(k, seed + 1).requires_grad_()
    assume(unique_minima(teacher, student.detach()))
    (grad,) = torch.autograd.grad(pwcd(teacher, student), student)
    torch.testing.assert_close(grad, alg4(teacher, student.detach(), 1e-8))


def test_tied_minima_share_the_gradient_uniformly():
    teacher = torch.tensor([[0.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    student = torch.tensor([[0.0, 2.0]], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(pwcd(teacher, student), student)
    # Precision: q = (0, 2) is as near to both teacher pairs (C = 1/2): (q - p1 + q - p2) / 2 = 0.
    # Recall: p1 = (0, 1) ties its match and its diagonal (1/2 each), p2 = (0, 3) matches q.
    w1, w2 = math.log1p(1.0), math.log1p(3.0)
    expected = (w1 * torch.tensor([0.0, 1.0]) / 2 + w2 * torch.tensor([0.0, -1.0])) / (w1 + w2 + 1e-8)
    torch.testing.assert_close(grad[0], expected.double())


def test_empty_diagram_conventions():
    pairs = torch.tensor([[0.0, 1.0], [0.5, 0.7]], dtype=torch.float64)
    empty = pairs[:0]
    assert pwcd(empty, empty).item() == 0
    diagonal = ((pairs[:, 1] - pairs[:, 0]) ** 2 / 2)
    weights = torch.log1p(pairs[:, 1] - pairs[:, 0])
    torch.testing.assert_close(pwcd(pairs, empty), (weights * diagonal).sum() / (weights.sum() + 1e-8))
    torch.testing.assert_close(pwcd(empty, pairs), diagonal.mean())


def test_identical_diagrams_cost_nothing_and_noise_is_discounted():
    pairs = diagram(9, 0)
    assert pwcd(pairs, pairs).item() == 0
    # A teacher point on the diagonal (zero persistence) has zero weight: missing it costs nothing.
    noisy = torch.cat([pairs, torch.tensor([[5.0, 5.0]], dtype=torch.float64)])
    assert pwcd(noisy, pairs).item() == pytest.approx(0, abs=1e-15)


def test_bad_diagrams_get_a_clear_error():
    with pytest.raises(ValueError, match="teacher must be a \\(K, 2\\)"):
        pwcd(torch.zeros(3, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="student diagram has NaN or Inf"):
        pwcd(torch.zeros(1, 2), torch.tensor([[0.0, float("inf")]]))
