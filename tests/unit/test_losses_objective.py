"""The composed objective (method.md 2.6): composition order, degenerate settings equal the
baseline (invariants), every loss component changes the loss or its gradient (liveness)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tolerances import assert_close_scaled
from unisd_core.config import (
    AgreementConfig,
    ClippingConfig,
    ComponentsConfig,
    ContrastiveConfig,
    FeatureMatchingConfig,
)
from unisd_core.losses import distillation_loss, sft_loss, token_divergence
from unisd_core.losses.reductions import masked_batch_loss

torch.set_num_threads(1)
B, T, V, H, K = 2, 4, 5, 3, 3
TAU = 0.7


def make_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return torch.randn(shape, generator=generator) * scale

    return {
        "student_logits_BTV": randn(B, T, V, scale=2.0),
        "teacher_logits_BTV": randn(B, T, V, scale=2.0),
        "completion_ids_BT": torch.randint(0, V, (B, T), generator=generator),
        "mask_BT": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
        # sequence 1 is much less consistent across contexts than sequence 0
        "agreement_logprobs_KBT": -torch.rand(K, B, T, generator=generator) * torch.tensor([0.2, 4.0])[None, :, None],
        "bad_teacher_logprobs_BT": -torch.rand(B, T, generator=generator) * 3,
        "student_hidden_BTH": randn(B, T, H),
        "teacher_hidden_BTH": randn(B, T, H),
    }


def run(inputs, components: ComponentsConfig, *, alpha=0.0, normalizer="sequence", dtype=torch.float32):
    """Loss and gradients w.r.t. student logits and hidden states, on fresh leaf copies."""
    student = inputs["student_logits_BTV"].to(dtype).clone().requires_grad_(True)
    hidden = inputs["student_hidden_BTH"].to(dtype).clone().requires_grad_(True)
    rest = {k: v for k, v in inputs.items() if k not in ("student_logits_BTV", "student_hidden_BTH")}
    rest["teacher_logits_BTV"] = rest["teacher_logits_BTV"].to(dtype)
    out = distillation_loss(student, student_hidden_BTH=hidden, components=components, alpha=alpha,
                            temperature=TAU, normalizer=normalizer, **rest)
    out.loss.backward()
    hidden_grad = hidden.grad if hidden.grad is not None else torch.zeros_like(hidden)
    return out, student.grad, hidden_grad


def assert_same(first, second) -> None:
    """A degenerate setting vs the component off: the same value by another float32 path (a
    weight of exactly 1, a cap never reached). Terms: the V-way softmax, then the B*T tokens."""
    assert_close_scaled(first[0].loss, second[0].loss, terms=V + B * T, msg="loss")
    assert_close_scaled(first[1], second[1], terms=V + B * T, msg="logit gradient")
    assert_close_scaled(first[2], second[2], terms=V + B * T, msg="hidden gradient")


def assert_differs(first, second, *, what: str) -> None:
    loss_gap = abs(first[0].loss.item() - second[0].loss.item())
    grad_gap = (first[1] - second[1]).abs().max().item() + (first[2] - second[2]).abs().max().item()
    assert loss_gap > 1e-4 or grad_gap > 1e-4, f"{what} changed neither the loss nor the gradient"


BASE = ComponentsConfig()


@pytest.mark.parametrize("normalizer", ["sequence", "global"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_empty_subset_is_the_plain_divergence(alpha: float, normalizer: str) -> None:
    inputs = make_inputs()
    out, _, hidden_grad = run(inputs, BASE, alpha=alpha, normalizer=normalizer)
    divergence = token_divergence(inputs["student_logits_BTV"], inputs["teacher_logits_BTV"], alpha=alpha, temperature=TAU)
    mask = inputs["mask_BT"].float()
    if normalizer == "sequence":
        expected = ((divergence * mask).sum(1) / mask.sum(1)).mean()
    else:
        expected = (divergence * mask).sum() / mask.sum()
    torch.testing.assert_close(out.loss, expected)
    # a mean of B*T non-negative float32 divergences, summed in another order
    assert_close_scaled(out.metrics["loss"], expected, terms=B * T, msg="logged loss")
    assert bool((hidden_grad == 0).all())
    assert {"divergence/mean", "student_entropy", "tokens"} <= out.metrics.keys()
    assert not any(key.startswith(("agreement", "clipping", "contrastive", "feature")) for key in out.metrics)


def test_off_components_cost_nothing_and_ignore_their_inputs() -> None:
    inputs = make_inputs()
    poisoned = dict(inputs, agreement_logprobs_KBT=torch.full((K, B, T), float("nan")),
                    bad_teacher_logprobs_BT=torch.full((B, T), float("nan")),
                    teacher_hidden_BTH=torch.full((B, T, H), float("nan")))
    assert_same(run(inputs, BASE), run(poisoned, BASE))


# ---- invariants: degenerate settings equal the component off ---------------------------------


@pytest.mark.parametrize("granularity", ["token", "sequence"])
def test_gamma_zero_equals_no_agreement(granularity: str) -> None:
    inputs = make_inputs(1)
    on = ComponentsConfig(agreement=AgreementConfig(gamma=0.0, granularity=granularity))
    assert_same(run(inputs, on), run(inputs, BASE))


def test_infinite_cap_equals_no_clipping() -> None:
    inputs = make_inputs(2)
    on = ComponentsConfig(clipping=ClippingConfig(mode="static", cap=float("inf")))
    assert_same(run(inputs, on), run(inputs, BASE))
    assert run(inputs, on)[0].metrics["clipping/clipped_fraction"] == 0.0


def test_quantile_one_equals_no_clipping() -> None:
    inputs = make_inputs(2)
    on = ComponentsConfig(clipping=ClippingConfig(mode="quantile", quantile=1.0))
    assert_same(run(inputs, on), run(inputs, BASE))


def test_zero_weights_equal_components_off() -> None:
    inputs = make_inputs(3)
    contrastive = ComponentsConfig(contrastive=ContrastiveConfig(weight=0.0))
    features = ComponentsConfig(feature_matching=FeatureMatchingConfig(weight=0.0))
    assert_same(run(inputs, contrastive), run(inputs, BASE))
    assert_same(run(inputs, features), run(inputs, BASE))


# ---- liveness: each component on changes the loss or gradient --------------------------------


def test_token_agreement_is_live() -> None:
    inputs = make_inputs(4)
    on = ComponentsConfig(agreement=AgreementConfig(gamma=1.0))
    result = run(inputs, on)
    assert_differs(result, run(inputs, BASE), what="token agreement")
    assert result[0].metrics["agreement/weight_min"] < 1.0


def test_sequence_agreement_is_live_and_parity_cancels() -> None:
    inputs = make_inputs(5)
    base = run(inputs, BASE)
    live = run(inputs, ComponentsConfig(agreement=AgreementConfig(granularity="sequence", gamma=1.0)))
    parity = run(inputs, ComponentsConfig(agreement=AgreementConfig(granularity="sequence", gamma=1.0, sequence_parity=True)))
    assert live[0].metrics["agreement/weight_min"] < live[0].metrics["agreement/weight_mean"] < 1.0
    assert_differs(live, base, what="sequence agreement (unweighted normaliser)")
    assert abs(live[0].loss.item() - base[0].loss.item()) > 1e-3
    assert_same(parity, base)  # the authors' weighted normaliser cancels w_b exactly
    live_global = run(inputs, ComponentsConfig(agreement=AgreementConfig(granularity="sequence", gamma=1.0)), normalizer="global")
    assert_differs(live_global, run(inputs, BASE, normalizer="global"), what="sequence agreement, global")


@pytest.mark.parametrize("mode", ["static", "quantile"])
def test_clipping_is_live_and_clipped_tokens_get_no_gradient(mode: str) -> None:
    inputs = make_inputs(6)
    divergence = token_divergence(inputs["student_logits_BTV"], inputs["teacher_logits_BTV"], alpha=0.0, temperature=TAU)
    masked = divergence[inputs["mask_BT"].bool()]
    cap = float(np.quantile(masked.numpy(), 0.5))  # numpy's linear interpolation, as specified
    config = ClippingConfig(mode="static", cap=cap) if mode == "static" else ClippingConfig(mode="quantile", quantile=0.5)
    result = run(inputs, ComponentsConfig(clipping=config))
    assert_differs(result, run(inputs, BASE), what=f"{mode} clipping")
    assert result[0].metrics["clipping/cap"] == pytest.approx(cap, rel=1e-6)
    above = (divergence > cap) & inputs["mask_BT"].bool()
    assert above.any()
    assert result[0].metrics["clipping/clipped_fraction"] == pytest.approx(above.sum().item() / masked.numel())
    assert bool((result[1][above] == 0).all())
    kept = (divergence < cap) & inputs["mask_BT"].bool()
    assert bool((result[1][kept].abs().sum(-1) > 0).all())


def test_contrastive_is_live_and_respects_usable_mask() -> None:
    inputs = make_inputs(7)
    on = ComponentsConfig(contrastive=ContrastiveConfig(weight=0.5, margin=0.5))
    result = run(inputs, on)
    assert_differs(result, run(inputs, BASE), what="contrastive")
    assert result[0].metrics["contrastive/loss"] > 0
    assert result[0].metrics["loss"] == pytest.approx(result[0].metrics["divergence/loss"] + 0.5 * result[0].metrics["contrastive/loss"], rel=1e-5)
    nobody = dict(inputs, contrastive_usable_B=torch.tensor([False, False]))
    assert_same(run(nobody, on), run(inputs, BASE))


def test_feature_matching_joint_and_repr() -> None:
    inputs = make_inputs(8)
    joint = run(inputs, ComponentsConfig(feature_matching=FeatureMatchingConfig(weight=0.1)))
    assert_differs(joint, run(inputs, BASE), what="feature matching")
    assert joint[2].abs().sum() > 0
    repr_out, logits_grad, hidden_grad = run(inputs, ComponentsConfig(feature_matching=FeatureMatchingConfig(mode="repr")))
    assert repr_out.loss.item() == pytest.approx(joint[0].metrics["feature_matching/loss"], rel=1e-6)
    assert logits_grad is None and hidden_grad.abs().sum() > 0
    with pytest.raises(ValueError, match="repr"):
        run(inputs, ComponentsConfig(feature_matching=FeatureMatchingConfig(mode="repr"), clipping=ClippingConfig()))


def test_all_components_bf16_inputs_give_float32_finite_loss() -> None:
    inputs = make_inputs(9)
    everything = ComponentsConfig(agreement=AgreementConfig(gamma=0.5), contrastive=ContrastiveConfig(),
                                  feature_matching=FeatureMatchingConfig(), clipping=ClippingConfig(mode="quantile"))
    out, logits_grad, hidden_grad = run(inputs, everything, alpha=0.5, dtype=torch.bfloat16)
    assert out.loss.dtype == torch.float32 and math.isfinite(out.loss.item())
    assert logits_grad.dtype == torch.bfloat16 and hidden_grad.abs().sum() > 0
    full = run(inputs, everything, alpha=0.5)
    # bf16 logits (each rounded once, eps 2^-7) into a V-way softmax, the rest in float32; one
    # scalar, so k = 2 (two sigma) instead of 16: about 3.5% of the loss
    assert_close_scaled(out.loss, full[0].loss, terms=V, k=2, dtype=torch.bfloat16, msg="bf16 loss")


def test_missing_inputs_and_bad_shapes_are_reported() -> None:
    inputs = make_inputs()
    with pytest.raises(ValueError, match="agreement_logprobs_KBT"):
        run(dict(inputs, agreement_logprobs_KBT=None), ComponentsConfig(agreement=AgreementConfig()))
    with pytest.raises(ValueError, match="bad_teacher_logprobs_BT"):
        run(dict(inputs, bad_teacher_logprobs_BT=None), ComponentsConfig(contrastive=ContrastiveConfig()))
    with pytest.raises(ValueError, match="completion_ids_BT"):
        run(dict(inputs, completion_ids_BT=torch.zeros(B, T + 1, dtype=torch.long)), BASE)
    with pytest.raises(ValueError, match="normalizer"):
        run(inputs, BASE, normalizer="token")


def test_sft_loss_hand_computation() -> None:
    logits = torch.zeros(2, 4, 4)
    logits[0, 0, 2] = math.log(3.0)  # p(2) = 3 / 6 = 1/2
    targets = torch.tensor([[2, 0, 1, 3], [1, 1, 1, 1]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])
    out = sft_loss(logits, targets, mask)
    expected = ((math.log(2) + math.log(4)) / 2 + math.log(4)) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.metrics["tokens"] == 3.0
    global_loss = sft_loss(logits, targets, mask, normalizer="global").loss
    assert global_loss.item() == pytest.approx((math.log(2) + 2 * math.log(4)) / 3, rel=1e-6)
    assert masked_batch_loss(torch.ones(2, 4), mask).item() == pytest.approx(1.0)


def test_empty_mask_gives_zero_finite_loss_with_everything_on() -> None:
    inputs = dict(make_inputs(10), mask_BT=torch.zeros(B, T, dtype=torch.long))
    everything = ComponentsConfig(agreement=AgreementConfig(), contrastive=ContrastiveConfig(),
                                  feature_matching=FeatureMatchingConfig(), clipping=ClippingConfig(mode="quantile"))
    out, logits_grad, hidden_grad = run(inputs, everything, alpha=0.5)
    assert out.loss.item() == 0.0 and out.metrics["tokens"] == 0.0
    assert torch.isfinite(logits_grad).all() and torch.isfinite(hidden_grad).all()
    assert all(math.isfinite(value) for value in out.metrics.values())
