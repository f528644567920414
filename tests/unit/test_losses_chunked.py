"""The chunked loss path matches the plain path (loss, gradients, metrics) and never builds a
full [B,T,V] tensor."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from tolerances import assert_close_scaled
from unisd_core.config import (
    AgreementConfig,
    ClippingConfig,
    ComponentsConfig,
    ContrastiveConfig,
    FeatureMatchingConfig,
)
from unisd_core.losses import distillation_loss
from unisd_core.losses.chunked import chunked_distillation_loss

torch.set_num_threads(1)
B, T, H, V, K = 2, 6, 8, 11, 3
TAU = 0.7
# Longest chain of float reductions feeding one gradient entry or the loss: the V-way softmax of a
# token, then the sum over the B*T tokens (head weight gradient, the loss's mean). Chained stages
# add their rounding errors in variance, so the lengths add (tests/tolerances.py).
TERMS = V + B * T

EVERYTHING = ComponentsConfig(
    agreement=AgreementConfig(gamma=1.0), contrastive=ContrastiveConfig(weight=0.5),
    feature_matching=FeatureMatchingConfig(weight=0.1), clipping=ClippingConfig(mode="quantile", quantile=0.6),
)
SETTINGS = [
    ComponentsConfig(),
    EVERYTHING,
    ComponentsConfig(agreement=AgreementConfig(granularity="sequence", gamma=2.0),
                     clipping=ClippingConfig(mode="static", cap=0.3)),
    ComponentsConfig(feature_matching=FeatureMatchingConfig(mode="repr")),
]


def make_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "student_hidden_BTH": torch.randn(B, T, H, generator=generator),
        "teacher_hidden_BTH": torch.randn(B, T, H, generator=generator),
        "student_head_weight_VH": torch.randn(V, H, generator=generator) * 0.7,
        "teacher_head_weight_VH": torch.randn(V, H, generator=generator) * 0.7,
        "completion_ids_BT": torch.randint(0, V, (B, T), generator=generator),
        "mask_BT": torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]]),
        "agreement_logprobs_KBT": -torch.rand(K, B, T, generator=generator) * torch.tensor([0.3, 3.0])[None, :, None],
        "bad_teacher_logprobs_BT": -torch.rand(B, T, generator=generator) * 4,
        "contrastive_usable_B": torch.tensor([True, True]),
    }


def leaves(inputs):
    hidden = inputs["student_hidden_BTH"].clone().requires_grad_(True)
    weight = inputs["student_head_weight_VH"].clone().requires_grad_(True)
    return hidden, weight


def plain(inputs, components, alpha, normalizer):
    hidden, weight = leaves(inputs)
    teacher_logits = F.linear(inputs["teacher_hidden_BTH"], inputs["teacher_head_weight_VH"])
    out = distillation_loss(
        F.linear(hidden, weight), teacher_logits, inputs["completion_ids_BT"], inputs["mask_BT"],
        components=components, alpha=alpha, temperature=TAU, normalizer=normalizer,
        agreement_logprobs_KBT=inputs["agreement_logprobs_KBT"], bad_teacher_logprobs_BT=inputs["bad_teacher_logprobs_BT"],
        contrastive_usable_B=inputs["contrastive_usable_B"], student_hidden_BTH=hidden,
        teacher_hidden_BTH=inputs["teacher_hidden_BTH"],
    )
    out.loss.backward()
    return out, hidden.grad, weight.grad


def chunked(inputs, components, alpha, normalizer, chunk_size):
    hidden, weight = leaves(inputs)
    rest = {k: v for k, v in inputs.items() if k not in ("student_hidden_BTH", "student_head_weight_VH")}
    out = chunked_distillation_loss(hidden, weight, components=components, alpha=alpha, temperature=TAU,
                                    normalizer=normalizer, chunk_size=chunk_size, **rest)
    out.loss.backward()
    return out, hidden.grad, weight.grad


def assert_close_relative(actual, expected, what: str) -> None:
    """Two float32 paths of one gradient: scaled to its largest entry (tests/tolerances.py)."""
    if expected is None:
        assert actual is None or bool((actual == 0).all()), what
        return
    assert_close_scaled(actual, expected, terms=TERMS, msg=what)


def assert_metrics_close(got: dict, expected: dict) -> None:
    """Logged metrics of two paths: means, quantiles and fractions of O(1) per-token quantities
    (nats, log-prob gaps, shares), so their terms are at most max(1, |value|) in size."""
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert_close_scaled(got[name], value, terms=TERMS, scale=max(1.0, abs(value)), msg=name)


@pytest.mark.parametrize("components", SETTINGS, ids=lambda c: c.subset_label())
@pytest.mark.parametrize("alpha,normalizer,chunk_size", [(0.0, "sequence", 3), (0.5, "global", 1), (1.0, "sequence", 64)])
def test_chunked_matches_plain(components, alpha, normalizer, chunk_size) -> None:
    inputs = make_inputs()
    reference, hidden_grad, weight_grad = plain(inputs, components, alpha, normalizer)
    out, chunk_hidden_grad, chunk_weight_grad = chunked(inputs, components, alpha, normalizer, chunk_size)
    assert_close_scaled(out.loss, reference.loss, terms=TERMS, msg="loss")
    assert_close_relative(chunk_hidden_grad, hidden_grad, "student hidden gradient")
    assert_close_relative(chunk_weight_grad, weight_grad, "head weight gradient")
    assert_metrics_close(out.metrics, reference.metrics)


def test_everything_on_is_live_in_the_chunked_path() -> None:
    inputs = make_inputs(1)
    base, base_grad, _ = chunked(inputs, ComponentsConfig(), 0.0, "sequence", 4)
    full, full_grad, _ = chunked(inputs, EVERYTHING, 0.0, "sequence", 4)
    assert abs(full.loss.item() - base.loss.item()) > 1e-4
    assert full.metrics["clipping/clipped_fraction"] > 0 and full.metrics["agreement/weight_min"] < 1
    assert (full_grad - base_grad).abs().max() > 1e-4


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operator returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for item in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(item, torch.Tensor):
                self.largest = max(self.largest, item.numel())
        return result


def test_chunked_path_never_builds_full_logits() -> None:
    batch, steps, vocab, hidden_size, chunk = 2, 32, 97, 8, 4
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(batch, steps, hidden_size, generator=generator, requires_grad=True)
    weight = torch.randn(vocab, hidden_size, generator=generator, requires_grad=True)
    teacher = torch.randn(batch, steps, hidden_size, generator=generator)
    ids = torch.randint(0, vocab, (batch, steps), generator=generator)
    mask = torch.ones(batch, steps, dtype=torch.long)
    components = ComponentsConfig(clipping=ClippingConfig(mode="quantile"), contrastive=ContrastiveConfig())
    with LargestTensor() as probe:
        out = chunked_distillation_loss(hidden, weight, teacher, weight, ids, mask, components=components,
                                        alpha=0.5, temperature=TAU, chunk_size=chunk,
                                        bad_teacher_logprobs_BT=torch.full((batch, steps), -2.0))
        out.loss.backward()
    assert probe.largest <= 2 * chunk * vocab < batch * steps * vocab
    assert hidden.grad.abs().sum() > 0 and weight.grad.abs().sum() > 0


def test_bf16_inputs_give_float32_loss_and_bf16_gradients() -> None:
    inputs = make_inputs(2)
    hidden = inputs["student_hidden_BTH"].to(torch.bfloat16).requires_grad_(True)
    out = chunked_distillation_loss(
        hidden, inputs["student_head_weight_VH"].to(torch.bfloat16), inputs["teacher_hidden_BTH"].to(torch.bfloat16),
        inputs["teacher_head_weight_VH"].to(torch.bfloat16), inputs["completion_ids_BT"], inputs["mask_BT"],
        components=ComponentsConfig(), alpha=0.0, temperature=TAU, chunk_size=4,
    )
    out.loss.backward()
    assert out.loss.dtype == torch.float32 and hidden.grad.dtype == torch.bfloat16
    reference, _, _ = plain(inputs, ComponentsConfig(), 0.0, "sequence")
    # bf16 inputs against the float32 path: every input rounded once to bf16 (eps 2^-7), then one
    # H-term bf16 product per logit; the rest runs in float32. One scalar, not the max over many
    # entries, so k = 2 (two sigma) instead of the default 16: about 4% of the loss.
    assert_close_scaled(out.loss, reference.loss, terms=H, k=2, dtype=torch.bfloat16, msg="bf16 loss")


def test_unusable_negatives_are_excluded_in_both_paths() -> None:
    inputs = make_inputs(4)
    inputs["contrastive_usable_B"] = torch.tensor([False, True])
    inputs["bad_teacher_logprobs_BT"][0] = float("nan")
    components = ComponentsConfig(contrastive=ContrastiveConfig(weight=1.0, margin=1.0))
    reference, hidden_grad, weight_grad = plain(inputs, components, 0.0, "sequence")
    out, chunk_hidden_grad, chunk_weight_grad = chunked(inputs, components, 0.0, "sequence", 2)
    assert out.metrics["contrastive/usable"] == 1.0 and out.metrics["contrastive/loss"] > 0
    assert_close_scaled(out.loss, reference.loss, terms=TERMS, msg="loss")
    assert_close_relative(chunk_hidden_grad, hidden_grad, "student hidden gradient")
    assert_close_relative(chunk_weight_grad, weight_grad, "head weight gradient")
    assert_metrics_close(out.metrics, reference.metrics)


def test_empty_mask_in_the_chunked_path() -> None:
    inputs = dict(make_inputs(5), mask_BT=torch.zeros(B, T, dtype=torch.long))
    out, hidden_grad, weight_grad = chunked(inputs, EVERYTHING, 0.5, "sequence", 3)
    assert out.loss.item() == 0.0
    assert torch.isfinite(hidden_grad).all() and bool((weight_grad == 0).all())


def test_no_grad_mode_gives_the_same_value_without_gradient_work() -> None:
    """Under ``torch.no_grad`` the chunked loss skips the in-forward gradient: its matmul FLOPs are
    the forward's alone. Counted exactly from the shapes: each of the N masked tokens costs
    2 H V multiply-adds per head product (x2 FLOPs); the forward has two (student and teacher
    logits) plus, for the quantile cap, two more in its extra pass; the gradient adds G W (and
    G^T h, an in-place ``addmm_`` that torch's counter does not register, hence ``>=``)."""
    from torch.utils.flop_counter import FlopCounterMode

    inputs = make_inputs(6)
    hidden, weight = leaves(inputs)
    rest = {k: v for k, v in inputs.items() if k not in ("student_hidden_BTH", "student_head_weight_VH")}
    tokens = int(inputs["mask_BT"].sum())
    per_product = 2 * tokens * H * V
    with torch.no_grad(), FlopCounterMode(display=False) as quiet_counter:
        quiet = chunked_distillation_loss(hidden, weight, components=EVERYTHING, alpha=0.0, temperature=TAU, **rest)
    assert not quiet.loss.requires_grad
    with FlopCounterMode(display=False) as loud_counter:
        loud = chunked_distillation_loss(hidden, weight, components=EVERYTHING, alpha=0.0, temperature=TAU, **rest)
    assert quiet_counter.get_total_flops() == 4 * per_product  # logits (2) + quantile pass (2)
    assert loud_counter.get_total_flops() >= 5 * per_product  # + G W (+ G^T h)
    assert_close_scaled(quiet.loss, loud.loss, terms=TERMS, msg="loss without gradient")
