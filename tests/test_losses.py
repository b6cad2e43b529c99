"""L_seg, L_kd and L_grad (Eq. 4-8) against independent computations."""

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ptdistill.losses.kd import KLDivergenceLoss
from ptdistill.losses.saliency import SaliencyLoss, channel_weights, saliency_map
from ptdistill.losses.seg import SegmentationLoss, lovasz_softmax


def test_lovasz_equals_jaccard_loss_on_hard_predictions():
    # On one-hot probabilities the Lovász extension equals the Jaccard loss 1 - IoU, class by class.
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (200,), generator=g)
    prediction = torch.where(torch.rand(200, generator=g) < 0.7, target, torch.randint(0, 4, (200,), generator=g))
    logits = F.one_hot(prediction, 4).double() * 1000.0
    expected = np.mean([
        1 - ((prediction == c) & (target == c)).sum().item() / ((prediction == c) | (target == c)).sum().item()
        for c in target.unique()
    ])
    assert abs(lovasz_softmax(logits, target).item() - expected) < 1e-9


def test_segmentation_loss_ignores_points_and_survives_all_ignored():
    logits = torch.randn(10, 3, requires_grad=True)
    target = torch.tensor([0, 1, 2, -1, -1, 0, 1, 2, 0, -1])
    loss = SegmentationLoss(ignore_index=-1, lovasz_weight=1.0)
    changed = logits.detach().clone()
    changed[target == -1] += 100.0
    assert torch.allclose(loss(logits, target), loss(changed, target))
    empty = loss(logits, torch.full((10,), -1))
    assert empty.item() == 0.0 and empty.requires_grad


def _class_weighted_mean(per_point: dict, target: torch.Tensor, class_balance: float) -> float:
    """By hand: the mean of {point: loss} with each point weighed by its label's count to -class_balance."""
    weight = [float((target == target[i]).sum()) ** -class_balance for i in per_point]
    return np.dot(weight, list(per_point.values())) / np.sum(weight) if per_point else 0.0


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(2, 6), st.floats(0.0, 1.0), st.integers(0, 2**31 - 1))
def test_class_balanced_ce_weighs_each_point_by_its_class_count(n, k, class_balance, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g, dtype=torch.float64)
    target = torch.randint(-1, k, (n,), generator=g)
    ce = {i: -float(torch.log_softmax(logits[i], 0)[target[i]]) for i in range(n) if target[i] != -1}
    expected = _class_weighted_mean(ce, target, class_balance)
    got = SegmentationLoss(ignore_index=-1, class_balance=class_balance)(logits, target).item()
    assert np.isclose(got, expected, rtol=1e-9, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(2, 8), st.floats(0.5, 8.0), st.integers(0, 2**31 - 1))
def test_kd_matches_the_definition(n, k, temperature, seed):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(n, k, generator=g, dtype=torch.float64)
    teacher = torch.randn(n, k, generator=g, dtype=torch.float64)
    target = torch.randint(-1, k, (n,), generator=g)
    keep = (target != -1).numpy()
    p_t = torch.softmax(teacher / temperature, 1).numpy()[keep]
    p_s = torch.softmax(student / temperature, 1).numpy()[keep]
    expected = (p_t * (np.log(p_t) - np.log(p_s))).sum(1).mean() * temperature**2 if keep.any() else 0.0
    got = KLDivergenceLoss(temperature)(student, teacher, target).item()
    assert np.isclose(got, expected, rtol=1e-9, atol=1e-12)
    assert got >= -1e-12


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(2, 6), st.floats(0.0, 1.0), st.integers(0, 2**31 - 1))
def test_class_balanced_kd_weighs_each_point_by_its_class_count(n, k, class_balance, seed):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(n, k, generator=g, dtype=torch.float64)
    teacher = torch.randn(n, k, generator=g, dtype=torch.float64)
    target = torch.randint(-1, k, (n,), generator=g)
    p_t, p_s = torch.softmax(teacher / 2.0, 1), torch.softmax(student / 2.0, 1)
    kl = {i: float((p_t[i] * (p_t[i].log() - p_s[i].log())).sum()) * 4.0 for i in range(n) if target[i] != -1}
    expected = _class_weighted_mean(kl, target, class_balance)
    got = KLDivergenceLoss(2.0, class_balance=class_balance)(student, teacher, target).item()
    assert np.isclose(got, expected, rtol=1e-9, atol=1e-12)


def test_fully_class_balanced_kd_is_the_mean_over_classes_of_each_class_mean():
    g = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(30, 4, generator=g), torch.randn(30, 4, generator=g)
    target = torch.tensor([0] * 20 + [1] * 7 + [3] * 3)
    kd = KLDivergenceLoss(1.0)
    per_class = [kd(student[target == c], teacher[target == c], target[target == c]) for c in (0, 1, 3)]
    balanced = KLDivergenceLoss(1.0, class_balance=1.0)(student, teacher, target)
    assert torch.isclose(balanced, torch.stack(per_class).mean(), rtol=1e-5)
    assert not torch.isclose(balanced, kd(student, teacher, target), rtol=1e-3)


def test_kd_is_zero_for_identical_logits_and_sends_no_gradient_to_the_teacher():
    student = torch.randn(20, 5, requires_grad=True)
    teacher = student.detach().clone().requires_grad_(True)
    loss = KLDivergenceLoss(2.0)(student, teacher, torch.zeros(20, dtype=torch.long))
    assert abs(loss.item()) < 1e-6
    (student.sum() + loss).backward()
    assert teacher.grad is None


def test_saliency_loss_matches_a_hand_computation_on_a_tiny_model():
    # Tiny "model": F = x A (N, C), logits = F W (N, K), L_seg = mean CE.
    # Then ∂L/∂F = (softmax(logits) - onehot(y)) Wᵀ / N, computed here without autograd.
    rng = np.random.default_rng(0)
    n, k = 12, 3
    offset = torch.tensor([5, 12])
    y = rng.integers(0, k, n)

    def model(c):
        x, a, w = rng.normal(size=(n, 4)), rng.normal(size=(4, c)), rng.normal(size=(c, k))
        feat = x @ a
        logits = feat @ w
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        grad = (p - np.eye(k)[y]) @ w.T / n
        return feat, w, grad

    def hand_map(feat, grad):
        omega = np.abs(grad).mean(0)  # Eq. 4
        m = np.abs(omega * feat).sum(1)  # Eq. 5
        out = np.empty_like(m)
        for lo, hi in [(0, 5), (5, 12)]:  # Eq. 6 per sample
            out[lo:hi] = (m[lo:hi] - m[lo:hi].min()) / (m[lo:hi].max() - m[lo:hi].min() + 1e-8)
        return out

    feat_s, w_s, grad_s = model(6)
    feat_t, w_t, grad_t = model(9)
    expected = np.abs(hand_map(feat_t, grad_t) - hand_map(feat_s, grad_s)).mean()  # Eq. 7

    target = torch.from_numpy(y)
    torch_feats = []
    weights = []
    for feat, w in [(feat_s, w_s), (feat_t, w_t)]:
        f = torch.from_numpy(feat).requires_grad_(True)
        seg = F.cross_entropy(f @ torch.from_numpy(w), target)
        weights.extend(channel_weights(seg, [f]))
        torch_feats.append(f)
    got = SaliencyLoss()(torch_feats[0], weights[0], torch_feats[1], weights[1], offset)
    assert np.isclose(got.item(), expected, rtol=1e-10)
    got.backward()
    assert torch_feats[1].grad is None and torch_feats[0].grad is not None


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 30), st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_saliency_maps_are_normalised_per_sample(n, c, seed):
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(2 * n, c, generator=g)
    m = saliency_map(feat, torch.rand(c, generator=g) + 0.1, torch.tensor([n, 2 * n]), 1e-8)
    assert m.shape == (2 * n,)
    assert (m >= 0).all() and (m <= 1).all()
    for part in (m[:n], m[n:]):
        assert part.min().item() == 0.0
