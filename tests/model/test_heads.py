"""Margin heads: logits against hand-computed values, the theta + m > pi branch, numerics and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from model.heads import MarginHead, apply_margin, cosine_logits, margin_target_cos


def _cos(*values: float) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float64)


def test_arcface_adds_the_angle_margin_to_the_true_class_only():
    # theta = 60 deg for the true class: s * cos(60 deg + 0.5 rad); others stay s * cos.
    cos = _cos(0.5, 0.2, -0.3)
    logits = apply_margin(cos, torch.tensor([0]), scale=64.0, margin_arc=0.5)
    expected_target = 64.0 * math.cos(math.pi / 3 + 0.5)  # by hand: cos(1.0472 + 0.5) = cos(1.5472) = 0.0236
    assert logits[0, 0].item() == pytest.approx(expected_target, abs=1e-9)
    assert logits[0, 0].item() == pytest.approx(64.0 * 0.0236, abs=64 * 1e-4)
    assert logits[0, 1:].tolist() == pytest.approx([64.0 * 0.2, 64.0 * -0.3])


def test_cosface_subtracts_the_cosine_margin():
    logits = apply_margin(_cos(0.1, 0.9), torch.tensor([1]), scale=30.0, margin_arc=0.0, margin_cos=0.35)
    assert logits[0].tolist() == pytest.approx([3.0, 30.0 * (0.9 - 0.35)])


def test_combined_margin_matches_the_formula():
    # theta = acos(0.8) = 0.6435 rad; m1 = 1.2, m2 = 0.3, m3 = 0.1
    # -> s * (cos(1.2 * 0.6435 + 0.3) - 0.1) = s * (cos(1.0722) - 0.1) = s * (0.4782 - 0.1)
    logits = apply_margin(
        _cos(0.8), torch.tensor([0]), scale=10.0, margin_mul=1.2, margin_arc=0.3, margin_cos=0.1
    )
    assert logits.item() == pytest.approx(10.0 * (math.cos(1.2 * math.acos(0.8) + 0.3) - 0.1), abs=1e-9)
    assert logits.item() == pytest.approx(10.0 * (0.4782 - 0.1), abs=1e-3)


def test_theta_plus_margin_beyond_pi_continues_monotonically():
    # m = 0.5: theta_max = pi - 0.5. At theta = 170 deg (> theta_max) the target is
    # cos(theta) - cos(theta_max) - 1.
    m = 0.5
    theta = math.radians(170)
    logits = apply_margin(_cos(math.cos(theta)), torch.tensor([0]), scale=1.0, margin_arc=m)
    expected = math.cos(theta) - math.cos(math.pi - m) - 1.0  # -0.98481 + 0.87758 - 1 = -1.10723
    assert logits.item() == pytest.approx(expected, abs=1e-9)
    assert logits.item() == pytest.approx(-1.10723, abs=1e-4)
    # the naive cos(theta + m) would give cos(170 deg + 0.5 rad) = -0.7 > -1: a reward for a worse angle
    assert logits.item() < math.cos(theta + m)


def test_margin_curve_is_continuous_and_decreasing_over_all_angles():
    thetas = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    target = margin_target_cos(torch.cos(thetas), margin_mul=1.0, margin_arc=0.5)
    assert (target.diff() < 0).all()
    assert target.diff().abs().max() < 0.01  # no jump at theta_max
    assert (target <= torch.cos(thetas) + 1e-12).all()  # always a penalty


def test_no_target_rows_get_no_margin():
    cos = torch.tensor([[0.5, 0.1], [0.3, 0.7]])
    logits = apply_margin(cos, torch.tensor([-1, 1]), scale=2.0, margin_arc=0.5)
    assert logits[0].tolist() == pytest.approx([1.0, 0.2])
    assert logits[1, 0].item() == pytest.approx(0.6)
    assert logits[1, 1].item() == pytest.approx(2.0 * math.cos(math.acos(0.7) + 0.5), abs=1e-6)


@pytest.mark.parametrize("edge", [1.0, -1.0])
@pytest.mark.parametrize("margins", [(1.0, 0.5, 0.0), (1.0, 0.0, 0.35), (1.2, 0.3, 0.1)])
def test_cosine_at_plus_minus_one_gives_finite_logits_and_gradients(edge, margins):
    m1, m2, m3 = margins
    cos = torch.tensor([[edge, 0.0], [edge, edge]], requires_grad=True)
    logits = apply_margin(cos, torch.tensor([0, 1]), scale=64.0, margin_mul=m1, margin_arc=m2, margin_cos=m3)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    assert torch.isfinite(logits).all()
    assert torch.isfinite(cos.grad).all()


def test_head_gives_finite_gradients_for_embeddings_equal_to_their_class_weight():
    head = MarginHead(4, 3)
    embeddings = (head.weight.detach()[:2] * 5).clone().requires_grad_(True)  # cos = 1 with the true class
    loss = torch.nn.functional.cross_entropy(head(embeddings, torch.tensor([0, 1])), torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(embeddings.grad).all() and torch.isfinite(head.weight.grad).all()


def test_margin_gradient_flows_through_the_target_logit():
    # d/dcos [s * cos(acos(cos) + m)] = s * sin(theta + m) / sin(theta):
    # not 0 (margin under no_grad) and not s (margin gradient dropped).
    cos = torch.tensor([[0.5]], dtype=torch.float64, requires_grad=True)
    apply_margin(cos, torch.tensor([0]), scale=64.0, margin_arc=0.5).sum().backward()
    theta = math.acos(0.5)
    assert cos.grad.item() == pytest.approx(64.0 * math.sin(theta + 0.5) / math.sin(theta), rel=1e-6)


def test_apply_margin_matches_gradcheck():
    cos = torch.tensor([[0.3, -0.2, 0.9], [-0.95, 0.4, 0.1]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([2, 0])
    assert torch.autograd.gradcheck(lambda c: apply_margin(c, labels, scale=8.0, margin_arc=0.5), (cos,))


def test_head_logits_are_scaled_cosines_off_the_target():
    torch.manual_seed(0)
    head = MarginHead(8, 5, scale=16.0)
    embeddings = torch.randn(3, 8)
    labels = torch.tensor([4, 0, 2])
    logits = head(embeddings, labels)
    cos = cosine_logits(embeddings, head.weight)
    off_target = torch.ones_like(cos, dtype=torch.bool)
    off_target[torch.arange(3), labels] = False
    assert logits.shape == (3, 5)
    torch.testing.assert_close(logits[off_target], 16.0 * cos[off_target])
    assert (logits[~off_target] < 16.0 * cos[~off_target]).all()


def test_invalid_margins_and_labels_are_rejected():
    with pytest.raises(ValueError):
        MarginHead(8, 5, scale=0.0)
    with pytest.raises(ValueError):
        MarginHead(8, 5, margin_arc=-0.1)
    with pytest.raises(ValueError, match="labels"):
        apply_margin(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(TypeError):
        apply_margin(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))


def test_half_precision_cosines_keep_their_dtype_and_margin():
    cos = torch.tensor([[0.5, 0.1]], dtype=torch.bfloat16)
    logits = apply_margin(cos, torch.tensor([0]), scale=64.0, margin_arc=0.5)
    assert logits.dtype == torch.bfloat16
    assert logits[0, 0].item() == pytest.approx(64.0 * math.cos(math.pi / 3 + 0.5), abs=0.5)
