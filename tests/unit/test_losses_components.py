"""Agreement weights, contrastive hinge and feature matching of unisd_core.losses against hand
computations (method.md 2.1-2.3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unisd_core.config import AgreementConfig
from unisd_core.losses.agreement import (
    agreement_weights,
    sequence_agreement_weights,
    sequence_disagreement,
    token_agreement_weights,
    token_disagreement,
)
from unisd_core.losses.contrastive import contrastive_hinge, contrastive_loss
from unisd_core.losses.features import feature_distance, feature_matching_loss

torch.set_num_threads(1)

# K = 3 contexts, B = 2, T = 4; token [0, 3] and [1, 2:] are padding.
LOGPROBS = torch.tensor(
    [
        [[-1.0, -2.0, -0.5, -9.0], [-1.0, -3.0, -7.0, float("nan")]],
        [[-1.0, -4.0, -1.5, -9.0], [-2.0, -3.0, -7.0, float("nan")]],
        [[-1.0, -6.0, -2.5, -9.0], [-3.0, -3.0, -7.0, float("nan")]],
    ]
)
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])


def test_token_disagreement_hand_computation() -> None:
    variance = token_disagreement(LOGPROBS, MASK, statistic="var")
    # unbiased variance of (-2,-4,-6) = 4, of (-0.5,-1.5,-2.5) = 1, of (-1,-2,-3) = 1
    torch.testing.assert_close(variance, torch.tensor([[0.0, 4.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]]))
    spread = token_disagreement(LOGPROBS, MASK, statistic="range")
    torch.testing.assert_close(spread, torch.tensor([[0.0, 4.0, 2.0, 0.0], [2.0, 0.0, 0.0, 0.0]]))


def test_token_weights_hand_computation() -> None:
    weights, stats = token_agreement_weights(LOGPROBS, MASK, gamma=2.0, quantile=0.5)
    # masked d = {0, 4, 1, 1, 0}: median s = 1; w = 1 / (1 + 2 min(d / 1, 10))
    expected = torch.tensor([[1.0, 1 / 9, 1 / 3, 1.0], [1 / 3, 1.0, 1.0, 1.0]])
    torch.testing.assert_close(weights[MASK.bool()], expected[MASK.bool()])
    assert stats["disagreement_scale"] == pytest.approx(1.0)
    assert stats["disagreement_mean"] == pytest.approx(6 / 5)
    capped, _ = token_agreement_weights(LOGPROBS, MASK, gamma=2.0, quantile=0.5, max_ratio=2.0, floor=0.25)
    # ratio 4 capped at 2 -> 1/5, floored at 1/4
    assert capped[0, 1].item() == pytest.approx(0.25)
    assert capped[0, 2].item() == pytest.approx(1 / 3)


def test_token_weights_scale_floor_and_q95() -> None:
    flat = torch.full((3, 2, 4), -1.0)
    weights, stats = token_agreement_weights(flat, MASK, gamma=5.0)
    assert stats["disagreement_scale"] == pytest.approx(1e-6)
    torch.testing.assert_close(weights, torch.ones(2, 4))
    _, stats95 = token_agreement_weights(LOGPROBS, MASK, gamma=1.0)
    assert stats95["disagreement_scale"] == pytest.approx(float(np.quantile([0, 4, 1, 1, 0], 0.95)))


def test_sequence_weights_hand_computation() -> None:
    disagreement = sequence_disagreement(LOGPROBS, MASK, statistic="var")
    # sequence 0 means over k: (-7/6, -15/6, -21/6); sequence 1: (-2, -2.5, -3)
    means0 = np.array([-3.5, -6.5, -9.5]) / 3
    means1 = np.array([-2.0, -2.5, -3.0])
    torch.testing.assert_close(disagreement, torch.tensor([means0.var(), means1.var()], dtype=torch.float32))
    weights, _ = sequence_agreement_weights(LOGPROBS, MASK, gamma=0.5)
    torch.testing.assert_close(weights, torch.exp(-0.5 * disagreement))
    spread = sequence_disagreement(LOGPROBS, MASK, statistic="range")
    torch.testing.assert_close(spread, torch.tensor([2.0, 1.0]))
    tiny, _ = sequence_agreement_weights(LOGPROBS, MASK, gamma=1e6)
    assert bool((tiny == 1e-6).all())


def test_agreement_weights_dispatch_and_gamma_zero() -> None:
    token_weights, by_weights, stats = agreement_weights(LOGPROBS, MASK, AgreementConfig(gamma=0.0))
    assert by_weights and bool((token_weights == 1).all()) and stats["weight_min"] == 1.0
    seq_weights, by_weights, _ = agreement_weights(LOGPROBS, MASK, AgreementConfig(granularity="sequence", gamma=0.5))
    assert not by_weights and seq_weights.shape == (2, 4)
    assert bool((seq_weights[:, 0:1] == seq_weights).all())
    _, parity, _ = agreement_weights(LOGPROBS, MASK, AgreementConfig(granularity="sequence", sequence_parity=True))
    assert parity
    with pytest.raises(ValueError, match="K >= 2"):
        token_agreement_weights(LOGPROBS[:1], MASK, gamma=1.0)


# ---- contrastive ---------------------------------------------------------------------------


def test_contrastive_hinge_hand_computation() -> None:
    student = torch.tensor([[-1.0, -2.0]])
    good = torch.tensor([[-1.5, -2.0]])
    bad = torch.tensor([[-1.2, -5.0]])
    hinge = contrastive_hinge(student, good, bad, margin=0.5)
    # token 0: 0.5 + 0.5 - 0.2 = 0.8; token 1: 0.5 + 0 - 3 < 0 -> 0
    torch.testing.assert_close(hinge, torch.tensor([[0.8, 0.0]]))


def test_contrastive_loss_usable_mask_and_stats() -> None:
    student = torch.tensor([[-1.0, -2.0, -3.0, -4.0], [-1.0, -1.0, -1.0, -1.0]], requires_grad=True)
    good = torch.tensor([[-1.0, -2.0, -2.0, -4.0], [-1.0, -1.0, -1.0, -1.0]])
    bad = torch.tensor([[-1.0, -4.0, -3.0, -4.0], [float("nan")] * 4])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    usable = torch.tensor([True, False])
    loss, stats = contrastive_loss(student, good, bad, mask, margin=0.5, usable_B=usable)
    # hinges: 0.5, max(0, 0.5 - 2) = 0, 0.5 + 1 = 1.5 -> mean 2/3; row 1 excluded (NaN ignored)
    assert loss.item() == pytest.approx(2 / 3)
    assert stats["usable"] == 1.0
    assert stats["margin_mean"] == pytest.approx((0 + 2 - 1) / 3)
    # token 0 (s = g = n) and token 2 (s = n) have h > 0; only token 2 has dh/ds != 0
    assert stats["positive_fraction"] == pytest.approx(2 / 3)
    assert stats["active_fraction"] == pytest.approx(1 / 3)
    loss.backward()
    assert torch.isfinite(student.grad).all() and bool((student.grad[1] == 0).all())
    none_usable, stats = contrastive_loss(student, good, bad, mask, margin=0.5, usable_B=torch.tensor([False, False]))
    assert none_usable.item() == 0.0 and none_usable.requires_grad and stats["usable"] == 0.0


# ---- feature matching ----------------------------------------------------------------------


def test_feature_matching_hand_computation() -> None:
    student = torch.zeros(2, 4, 3)
    teacher = torch.zeros(2, 4, 3)
    student[0, 0] = torch.tensor([1.0, 2.0, 3.0])  # e = 14/3
    student[0, 1] = torch.tensor([0.0, 0.0, 3.0])  # e = 3
    student[1, 3] = torch.tensor([9.0, 9.0, 9.0])  # masked out
    teacher[1, 0] = torch.tensor([1.0, 1.0, 1.0])  # e = 1
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    distance = feature_distance(student.to(torch.bfloat16), teacher.to(torch.bfloat16))
    assert distance.dtype == torch.float32
    assert distance[0, 0].item() == pytest.approx(14 / 3)
    loss = feature_matching_loss(student, teacher, mask)
    assert loss.item() == pytest.approx(((14 / 3 + 3) / 2 + 1 / 3) / 2)
    assert not math.isnan(loss.item())


def test_active_fraction_counts_the_tokens_whose_hinge_has_a_gradient() -> None:
    # Planted: s between g and n (gradient), s outside [g, n] with n - g < mu (h > 0, no
    # gradient: h = mu + g - n whatever s is), and a mix drawn at random.
    generator = torch.Generator().manual_seed(0)
    good = -torch.rand(3, 40, generator=generator, dtype=torch.float64) * 3
    bad = good + (torch.rand(3, 40, generator=generator, dtype=torch.float64) - 0.5) * 0.6
    student = good + (torch.rand(3, 40, generator=generator, dtype=torch.float64) - 0.5) * 4
    student[0, :5] = torch.minimum(good[0, :5], bad[0, :5]) - 1.0  # outside: inert
    student[0, 5:10] = (good[0, 5:10] + bad[0, 5:10]) / 2  # inside: live
    student = student.requires_grad_(True)
    mask = torch.ones(3, 40)
    mask[2, 30:] = 0
    loss, stats = contrastive_loss(student, good, bad, mask, margin=0.5)
    # Independent truth: the per-token derivative from autograd (the hinge is token-local).
    (gradient,) = torch.autograd.grad(contrastive_hinge(student, good, bad, margin=0.5).sum(), student)
    live = (gradient != 0) & (mask > 0)
    positive = (contrastive_hinge(student, good, bad, margin=0.5) > 0) & (mask > 0)
    tokens = float(mask.sum())
    assert stats["active_fraction"] == pytest.approx(float(live.sum()) / tokens, abs=0.5 / tokens)
    assert stats["positive_fraction"] == pytest.approx(float(positive.sum()) / tokens, abs=0.5 / tokens)
    assert stats["positive_fraction"] - stats["active_fraction"] >= 5 / tokens  # the planted inert ones


def test_global_normalizer_applies_to_the_contrastive_and_feature_matching_terms() -> None:
    from unisd_core.config import ComponentsConfig, ContrastiveConfig, FeatureMatchingConfig
    from unisd_core.losses import distillation_loss

    generator = torch.Generator().manual_seed(1)
    batch, steps, vocab, width = 3, 7, 5, 4
    mask = torch.tensor([[1] * 7, [1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0]])
    logits = torch.randn(batch, steps, vocab, generator=generator)
    teacher = torch.randn(batch, steps, vocab, generator=generator)
    ids = torch.randint(0, vocab, (batch, steps), generator=generator)
    bad = -torch.rand(batch, steps, generator=generator) * 3
    hidden_s, hidden_t = torch.randn(2, batch, steps, width, generator=generator)
    usable = torch.tensor([True, True, False])
    components = ComponentsConfig(contrastive=ContrastiveConfig(weight=1.0, margin=0.5),
                                  feature_matching=FeatureMatchingConfig(weight=1.0))
    out = distillation_loss(logits, teacher, ids, mask, components=components, alpha=0.0, temperature=0.7,
                            normalizer="global", bad_teacher_logprobs_BT=bad, contrastive_usable_B=usable,
                            student_hidden_BTH=hidden_s, teacher_hidden_BTH=hidden_t)
    # float64 references: token means over the batch (contrastive: over the usable rows only)
    s = torch.log_softmax(logits.double() / 0.7, -1).gather(-1, ids[..., None])[..., 0]
    g = torch.log_softmax(teacher.double() / 0.7, -1).gather(-1, ids[..., None])[..., 0]
    hinge = torch.relu(0.5 + (s - g).abs() - (s - bad.double()).abs())
    rows = mask.double() * usable[:, None].double()
    expected_hinge = float((hinge * rows).sum() / rows.sum())
    distance = (hidden_s.double() - hidden_t.double()).pow(2).mean(-1)
    expected_fm = float((distance * mask).sum() / mask.sum())
    per_sequence_fm = float(((distance * mask).sum(-1) / mask.sum(-1)).mean())
    assert abs(expected_fm - per_sequence_fm) > 1e-2 * expected_fm  # the two normalisers differ here
    # float32 sums of <= 21 terms of size O(1): relative error well under 1e-5
    assert out.metrics["contrastive/loss"] == pytest.approx(expected_hinge, rel=1e-5)
    assert out.metrics["feature_matching/loss"] == pytest.approx(expected_fm, rel=1e-5)
