"""Divergences, reductions and clipping of unisd_core.losses against hand computations and an
independent numpy/torch reference (method.md 1.3-1.5, 2.5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tolerances import assert_close_scaled
from unisd_core.config import ClippingConfig
from unisd_core.losses.clipping import clip_at, clip_divergence, quantile_cap
from unisd_core.losses.divergences import sampled_token_logprobs, token_divergence, token_entropy
from unisd_core.losses.reductions import masked_batch_loss, masked_sequence_mean

torch.set_num_threads(1)


# float32 results against float64 references: one V-way softmax per token (tests/tolerances.py)
V = 5


def random_logits(seed: int, shape=(2, 4, 5), scale: float = 2.0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def numpy_softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    scaled = logits.astype(np.float64) / temperature
    scaled = scaled - scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


def numpy_divergence(student: np.ndarray, teacher: np.ndarray, alpha: float, temperature: float) -> np.ndarray:
    """Reference on probabilities (not log space), float64, straight from method.md 1.4."""
    p_s, p_t = numpy_softmax(student, temperature), numpy_softmax(teacher, temperature)

    def kl(p, q):
        return (p * (np.log(p) - np.log(q))).sum(axis=-1)

    if alpha == 0.0:
        return kl(p_t, p_s)
    if alpha == 1.0:
        return kl(p_s, p_t)
    m = alpha * p_t + (1 - alpha) * p_s
    return alpha * kl(p_t, m) + (1 - alpha) * kl(p_s, m)


def test_forward_kl_two_class_hand_computation() -> None:
    teacher = torch.tensor([[[0.0, math.log(3.0)]]])  # p_T = (1/4, 3/4)
    student = torch.zeros(1, 1, 2)  # p_S = (1/2, 1/2)
    expected_forward = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    expected_reverse = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)
    forward = token_divergence(student, teacher, alpha=0.0, temperature=1.0)
    reverse = token_divergence(student, teacher, alpha=1.0, temperature=1.0)
    assert forward.shape == (1, 1)
    # Hand values, but float32 sums of O(1) terms that cancel (0.131 = -0.173 + 0.304): the error
    # scales with the terms (scale 1), not with the small result; a relative 1e-6 failed here.
    assert_close_scaled(forward.item(), expected_forward, terms=2, scale=1.0, msg="forward KL")
    assert_close_scaled(reverse.item(), expected_reverse, terms=2, scale=1.0, msg="reverse KL")


def test_jsd_half_two_class_hand_computation() -> None:
    teacher = torch.tensor([[[0.0, math.log(3.0)]]])
    student = torch.zeros(1, 1, 2)
    m = (0.375, 0.625)
    expected = 0.5 * (0.25 * math.log(0.25 / m[0]) + 0.75 * math.log(0.75 / m[1])) + 0.5 * (
        0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])
    )
    value = token_divergence(student, teacher, alpha=0.5, temperature=1.0)
    # 0.0338 from terms up to 0.14 that cancel: rel 1e-6 failed on this machine (error 1.07e-6 rel)
    assert_close_scaled(value.item(), expected, terms=2, scale=1.0, msg="JSD(0.5)")


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_divergence_matches_numpy_reference(alpha: float, temperature: float) -> None:
    student, teacher = random_logits(0), random_logits(1)
    value = token_divergence(student, teacher, alpha=alpha, temperature=temperature)
    reference = numpy_divergence(student.numpy(), teacher.numpy(), alpha, temperature)
    assert value.shape == (2, 4)
    assert_close_scaled(value, reference, terms=V, msg="divergence vs float64")


def test_forward_kl_matches_torch_kl_div() -> None:
    student, teacher = random_logits(2), random_logits(3)
    log_s = torch.log_softmax(student / 0.7, dim=-1)
    log_t = torch.log_softmax(teacher / 0.7, dim=-1)
    reference = torch.nn.functional.kl_div(log_s, log_t, reduction="none", log_target=True).sum(-1)
    value = token_divergence(student, teacher, alpha=0.0, temperature=0.7)
    assert_close_scaled(value, reference, terms=V, msg="forward KL vs kl_div")


def test_jsd_properties() -> None:
    student, teacher = random_logits(4), random_logits(5)
    forward = token_divergence(student, teacher, alpha=0.5, temperature=1.0)
    swapped = token_divergence(teacher, student, alpha=0.5, temperature=1.0)
    assert_close_scaled(forward, swapped, terms=V, msg="JSD symmetry")
    assert bool((forward > 0).all()) and bool((forward <= math.log(2) + 1e-6).all())
    for alpha in (0.0, 0.3, 0.5, 1.0):
        same = token_divergence(student, student.clone(), alpha=alpha, temperature=0.7)
        assert same.abs().max().item() < 1e-6
    # The generalized JSD vanishes at both ends (m -> p_S or p_T); the end points themselves are
    # the KLs (tested above), so the interior branch must not be used at alpha = 0 or 1.
    for alpha in (1e-4, 1 - 1e-4):
        assert token_divergence(student, teacher, alpha=alpha, temperature=1.0).abs().max().item() < 1e-2
    assert token_divergence(student, teacher, alpha=0.0, temperature=1.0).min().item() > 1e-3


def test_divergence_is_float32_from_bf16_and_gradient_flows() -> None:
    student = random_logits(6).to(torch.bfloat16).requires_grad_(True)
    teacher = random_logits(7).to(torch.bfloat16)
    value = token_divergence(student, teacher, alpha=0.0, temperature=0.7)
    assert value.dtype == torch.float32
    reference = numpy_divergence(student.detach().float().numpy(), teacher.float().numpy(), 0.0, 0.7)
    assert_close_scaled(value, reference, terms=V, msg="divergence of bf16 logits vs float64")
    value.sum().backward()
    assert student.grad is not None and student.grad.abs().sum().item() > 0


def test_teacher_gets_no_gradient_in_the_chunked_loss() -> None:
    """The chunked loss treats the teacher (hidden states, head, feature-matching target) as a
    constant even when the caller hands it tensors that require grad; the student still learns."""
    from unisd_core.config import ComponentsConfig, ContrastiveConfig, FeatureMatchingConfig
    from unisd_core.losses.chunked import chunked_distillation_loss

    generator = torch.Generator().manual_seed(8)
    student_hidden = torch.randn(2, 4, 6, generator=generator).requires_grad_(True)
    student_head = torch.randn(5, 6, generator=generator).requires_grad_(True)
    teacher_hidden = torch.randn(2, 4, 6, generator=generator).requires_grad_(True)
    teacher_head = torch.randn(5, 6, generator=generator).requires_grad_(True)
    ids = torch.randint(0, 5, (2, 4), generator=generator)
    components = ComponentsConfig(contrastive=ContrastiveConfig(), feature_matching=FeatureMatchingConfig())
    out = chunked_distillation_loss(student_hidden, student_head, teacher_hidden, teacher_head, ids,
                                    torch.ones(2, 4), components=components, alpha=0.0, temperature=0.7,
                                    bad_teacher_logprobs_BT=-torch.rand(2, 4, generator=generator), chunk_size=3)
    out.loss.backward()
    assert teacher_hidden.grad is None and teacher_head.grad is None
    assert student_hidden.grad.abs().sum() > 0 and student_head.grad.abs().sum() > 0


def test_forward_kl_gradient_is_student_minus_teacher_probs() -> None:
    # d/dz_S KL(p_T || p_S) = (p_S - p_T) / tau: the textbook identity, independent of our code.
    student = random_logits(10).requires_grad_(True)
    teacher = random_logits(11)
    token_divergence(student, teacher, alpha=0.0, temperature=0.7).sum().backward()
    expected = (torch.softmax(student.detach() / 0.7, -1) - torch.softmax(teacher / 0.7, -1)) / 0.7
    assert_close_scaled(student.grad, expected, terms=V, msg="forward KL gradient")


def test_sampled_token_logprobs_and_entropy() -> None:
    logits = random_logits(12)
    ids = torch.tensor([[0, 1, 2, 3], [4, 3, 2, 1]])
    value = sampled_token_logprobs(logits.to(torch.bfloat16), ids, temperature=0.7)
    probs = numpy_softmax(logits.to(torch.bfloat16).float().numpy(), 0.7)
    expected = np.log(np.take_along_axis(probs, ids.numpy()[..., None], axis=-1)[..., 0])
    assert value.dtype == torch.float32
    assert_close_scaled(value, expected, terms=V, msg="sampled-token log-probs vs float64")
    entropy = token_entropy(logits, temperature=1.0)
    p = numpy_softmax(logits.numpy(), 1.0)
    assert_close_scaled(entropy, -(p * np.log(p)).sum(-1), terms=V, msg="entropy vs float64")
    uniform = token_entropy(torch.zeros(1, 1, 4))
    assert uniform.item() == pytest.approx(math.log(4), rel=1e-6)


# ---- reductions ----------------------------------------------------------------------------

VALUES = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])


def test_sequence_mean_hand_computation() -> None:
    per_sequence = masked_sequence_mean(VALUES, MASK)
    torch.testing.assert_close(per_sequence, torch.tensor([2.0, 10.0]))
    assert masked_batch_loss(VALUES, MASK).item() == pytest.approx(6.0)
    assert masked_batch_loss(VALUES, MASK, normalizer="global").item() == pytest.approx(16.0 / 4)


def test_weighted_reductions_hand_computation() -> None:
    weights = torch.tensor([[1.0, 0.5, 0.25, 9.0], [0.5, 9.0, 9.0, 9.0]])
    weighted = masked_sequence_mean(VALUES, MASK, weights)
    expected_first = (1 + 1 + 0.75) / (1 + 0.5 + 0.25)
    torch.testing.assert_close(weighted, torch.tensor([expected_first, 10.0]))
    unweighted_count = masked_sequence_mean(VALUES, MASK, weights, normalize_by_weights=False)
    torch.testing.assert_close(unweighted_count, torch.tensor([2.75 / 3, 5.0]))
    global_value = masked_batch_loss(VALUES, MASK, weights, normalizer="global")
    assert global_value.item() == pytest.approx((2.75 + 5.0) / (1.75 + 0.5))


def test_empty_sequence_and_masked_nan_do_not_leak() -> None:
    values = torch.tensor([[1.0, float("nan")], [float("inf"), 2.0]])
    mask = torch.tensor([[1, 0], [0, 0]])
    per_sequence = masked_sequence_mean(values, mask, torch.full((2, 2), 0.5))
    torch.testing.assert_close(per_sequence, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="normalizer"):
        masked_batch_loss(values, mask, normalizer="tokens")


# ---- clipping ------------------------------------------------------------------------------


def test_static_clip_values_gradient_and_stats() -> None:
    divergence = torch.tensor([[0.5, 3.0, 12.0, 20.0], [10.0, 1.0, 50.0, 2.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    clipped, stats = clip_divergence(divergence, mask, ClippingConfig(mode="static", cap=10.0))
    torch.testing.assert_close(clipped.detach(), torch.tensor([[0.5, 3.0, 10.0, 10.0], [10.0, 1.0, 10.0, 2.0]]))
    assert stats == {"clipped_fraction": pytest.approx(1 / 5), "cap": 10.0}
    clipped.sum().backward()
    above = divergence.detach() > 10.0
    assert bool((divergence.grad[above] == 0).all())
    assert bool((divergence.grad[~above] == 1).all())  # at the cap itself the gradient stays whole


def test_quantile_cap_hand_computation_and_no_grad() -> None:
    divergence = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, 6.0, 7.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    cap = quantile_cap(divergence, mask, 0.5)  # median of {1,2,3,4,5}
    assert not cap.requires_grad and cap.item() == pytest.approx(3.0)
    cap_75 = quantile_cap(divergence, mask, 0.75)  # linear interpolation: position 3 of 0..4 -> 4
    assert cap_75.item() == pytest.approx(4.0)
    assert quantile_cap(torch.zeros(2, 4), mask, 0.9).item() == pytest.approx(1e-6)
    clipped, stats = clip_divergence(divergence, mask, ClippingConfig(mode="quantile", quantile=0.5))
    assert stats["cap"] == pytest.approx(3.0) and stats["clipped_fraction"] == pytest.approx(2 / 5)
    clipped.sum().backward()
    assert divergence.grad[1, 0].item() == 0.0 and divergence.grad[0, 0].item() == 1.0


def test_infinite_cap_is_identity() -> None:
    divergence = random_logits(13, shape=(2, 4)).abs() * 100
    torch.testing.assert_close(clip_at(divergence, float("inf")), divergence)
    clipped, stats = clip_divergence(divergence, torch.ones(2, 4), ClippingConfig(mode="static", cap=float("inf")))
    torch.testing.assert_close(clipped, divergence)
    assert stats["clipped_fraction"] == 0.0
