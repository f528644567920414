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
    assert stats["active_fraction"] == pytest.approx(2 / 3)
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
