"""The closed-form per-chunk logit gradient (forward and reverse KL, clip, hinge, soft-cap) equals
autograd's chunk by chunk, the head gradients accumulate without a per-chunk [V,H] buffer, and the
chunked loss still matches the plain one in the cases only the closed form covers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from tolerances import assert_close_scaled
from unisd_core.config import AgreementConfig, ClippingConfig, ComponentsConfig, ContrastiveConfig
from unisd_core.losses import distillation_loss
from unisd_core.losses.chunked import _plan, chunked_distillation_loss
from unisd_core.losses.chunked_grad import (
    accumulate_head_grads,
    autograd_chunk,
    closed_form_chunk,
    has_closed_form,
)

torch.set_num_threads(1)
B, T, H, V, K = 3, 7, 8, 23, 3
TAU = 0.7
TERMS = V + B * T  # V-way softmax of a token, then sums over the tokens (tests/tolerances.py)
HINGE = ComponentsConfig(contrastive=ContrastiveConfig(weight=0.5, margin=0.3),
                         agreement=AgreementConfig(gamma=1.0))


def make_inputs(seed: int = 0, dtype=torch.float32) -> dict:
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, 5:], mask[1, 2:] = 0, 0  # masked tokens: 7 + 2 + 5 = 14 tokens, not a multiple of the chunk
    return {
        "student": torch.randn(B, T, H, generator=generator).to(dtype),
        "teacher": torch.randn(B, T, H, generator=generator).to(dtype),
        "weight": (torch.randn(V, H, generator=generator) * 0.8).to(dtype),
        "teacher_weight": (torch.randn(V, H, generator=generator) * 0.8).to(dtype),
        "ids": torch.randint(0, V, (B, T), generator=generator),
        "mask": mask,
        "agreement": -torch.rand(K, B, T, generator=generator) * 2,
        "bad": -torch.rand(B, T, generator=generator) * 4,
    }


def token_plan(inputs, components, *, alpha, cap=float("inf"), softcap=None, chunk=4):
    return _plan(components, inputs["ids"], inputs["mask"], alpha=alpha, temperature=TAU, normalizer="sequence",
                 cap=cap, agreement_logprobs_KBT=inputs["agreement"], bad_teacher_logprobs_BT=inputs["bad"],
                 contrastive_usable_B=None, chunk_size=chunk, logit_softcap=softcap, metrics={})


def rows(inputs):
    """(student hidden [N,H], student head, teacher hidden [N,H], teacher head) of the masked tokens."""
    mask = inputs["mask"].bool()
    return inputs["student"][mask], inputs["weight"], inputs["teacher"][mask], inputs["teacher_weight"]


def run_chunk(function, plan, chunk, inputs, need_grad=True):
    student, weight, teacher, teacher_weight = rows(inputs)
    return function(plan, chunk, student[chunk], weight, teacher[chunk], teacher_weight, need_grad=need_grad)


def raw_divergences(inputs, alpha, softcap=None, chunk=5):
    """Unclipped per-token divergences [N] from the closed form, without gradient."""
    plan = token_plan(inputs, ComponentsConfig(), alpha=alpha, softcap=softcap, chunk=chunk)
    count = int(inputs["mask"].sum())
    return torch.cat([run_chunk(closed_form_chunk, plan, slice(s, s + chunk), inputs, need_grad=False).divergence_C
                      for s in range(0, count, chunk)])


def compare_chunk_by_chunk(inputs, plan) -> list:
    """Both paths on every chunk; returns the closed-form terms (for further checks)."""
    closed_terms = []
    for start in range(0, int(inputs["mask"].sum()), plan.chunk_size):
        chunk = slice(start, start + plan.chunk_size)
        reference = run_chunk(autograd_chunk, plan, chunk, inputs)
        closed = run_chunk(closed_form_chunk, plan, chunk, inputs)
        # Per token: a V-way sum over the vocabulary (terms V); the parts sum a chunk's tokens too.
        # Divergences, gaps and hinges are O(1) nats, so their terms are at most max(1, |value|).
        for name in ("divergence_C", "divergence_part", "entropy_sum") + (
                ("hinge_C", "gap_C", "hinge_part") if plan.hinge_coef_N is not None else ()):
            expected = getattr(reference, name)
            scale = max(1.0, float(expected.detach().abs().max())) if expected.numel() else 1.0
            assert_close_scaled(getattr(closed, name), expected, terms=TERMS, scale=scale, msg=name)
        assert_close_scaled(closed.grad_logits_CV, reference.grad_logits_CV, terms=TERMS, msg="logit gradient")
        closed_terms.append(closed)
    return closed_terms


@pytest.mark.parametrize("alpha", [0.0, 1.0])
@pytest.mark.parametrize("components", [ComponentsConfig(), HINGE], ids=["divergence", "hinge+agreement"])
@pytest.mark.parametrize("softcap", [None, 2.5])
@pytest.mark.parametrize("clip", [False, True], ids=["no-clip", "clip-at-median"])
def test_closed_form_equals_autograd_chunk_by_chunk(alpha, components, softcap, clip) -> None:
    inputs = make_inputs(1)
    cap = float(raw_divergences(inputs, alpha, softcap).median()) + 1e-3 if clip else float("inf")
    plan = token_plan(inputs, components, alpha=alpha, cap=cap, softcap=softcap, chunk=4)
    terms = compare_chunk_by_chunk(inputs, plan)
    divergences = torch.cat([t.divergence_C for t in terms])
    if cap != float("inf"):  # the cap is live: some tokens clipped, some not
        assert bool((divergences > cap).any()) and bool((divergences <= cap).any())
        for t, start in zip(terms, range(0, divergences.numel(), plan.chunk_size)):
            clipped = t.divergence_C > cap
            if components.contrastive is None:  # no hinge: a clipped token has no gradient at all
                assert bool((t.grad_logits_CV[clipped] == 0).all())
            assert bool((t.grad_logits_CV[~clipped].abs().sum(-1) > 0).all()), start


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_token_exactly_at_the_cap_keeps_its_gradient(alpha) -> None:
    inputs = make_inputs(2)
    divergences = raw_divergences(inputs, alpha)
    tie = int(divergences.argsort()[divergences.numel() // 2])
    cap = float(divergences[tie])  # float32 -> float64 is exact: the token sits exactly at the cap
    plan = token_plan(inputs, ComponentsConfig(), alpha=alpha, cap=cap, chunk=5)
    terms = compare_chunk_by_chunk(inputs, plan)
    grads = torch.cat([t.grad_logits_CV for t in terms])
    assert grads[tie].abs().sum() > 0
    assert bool((grads[divergences > cap] == 0).all()) and bool((divergences > cap).any())


def test_hinge_kinks_and_masked_rows_follow_autograd() -> None:
    inputs = make_inputs(3)
    plan = token_plan(inputs, HINGE, alpha=0.0, chunk=3)
    student, weight, _, _ = rows(inputs)
    ids = plan.token_ids_N
    scaled = torch.log_softmax(F.linear(student, weight) / TAU, -1).gather(-1, ids[:, None]).squeeze(-1)
    # Tokens where s == n (|s - n| kink) and where the hinge is exactly 0 (relu kink) or inactive.
    bad = plan.bad_logprobs_N.clone()
    bad[0] = scaled[0]
    bad[1] = scaled[1] - 50.0
    plan = type(plan)(**{**plan.__dict__, "bad_logprobs_N": bad})
    terms = compare_chunk_by_chunk(inputs, plan)
    hinge = torch.cat([t.hinge_C for t in terms])
    assert hinge[1] == 0 and hinge[0] > 0


def test_no_closed_form_for_the_generalized_jsd() -> None:
    assert has_closed_form(0.0) and has_closed_form(1.0) and not has_closed_form(0.5)
    inputs = make_inputs(4)
    plan = token_plan(inputs, ComponentsConfig(), alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        run_chunk(closed_form_chunk, plan, slice(0, 4), inputs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_head_gradients_match_autograd_through_the_linear(dtype) -> None:
    inputs = make_inputs(5, dtype)
    plan = token_plan(inputs, HINGE, alpha=0.0, chunk=14)
    hidden = inputs["student"][inputs["mask"].bool()]
    closed = run_chunk(closed_form_chunk, plan, slice(0, 14), inputs)
    grad_hidden, grad_weight = torch.zeros(hidden.shape), torch.zeros(V, H)
    accumulate_head_grads(closed.grad_logits_CV, hidden, inputs["weight"], grad_hidden, grad_weight)
    # Reference: autograd's logit gradient pushed back through the linear in the head's dtype.
    reference = run_chunk(autograd_chunk, plan, slice(0, 14), inputs)
    leaf_hidden = hidden.clone().requires_grad_(True)
    leaf_weight = inputs["weight"].clone().requires_grad_(True)
    with torch.enable_grad():
        logits = F.linear(leaf_hidden, leaf_weight).float()
        expected_hidden, expected_weight = torch.autograd.grad(
            (logits * reference.grad_logits_CV).sum(), [leaf_hidden, leaf_weight])
    # float32: one product per entry (V terms for the hidden gradient, 14 tokens for the weight's).
    # bf16: both paths accumulate in float32 and round the result to bf16 once (<= eps/2 each, a
    # hard bound), so they differ by at most eps * S; k = 2 leaves room for the accumulation.
    bound = dict(terms=V + 14) if dtype == torch.float32 else dict(terms=1, k=2, dtype=dtype)
    for got, expected in ((grad_hidden, expected_hidden), (grad_weight, expected_weight)):
        assert_close_scaled(got, expected.float(), msg=f"head gradient, {dtype}", **bound)
        assert got.abs().sum() > 0


class ShapeCounter(TorchDispatchMode):
    """Counts operator outputs of one given shape."""

    def __init__(self, shape) -> None:
        super().__init__()
        self.shape, self.count = tuple(shape), 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for item in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(item, torch.Tensor) and tuple(item.shape) == self.shape and item.numel() > 0:
                if func not in (torch.ops.aten.addmm_.default, torch.ops.aten.detach.default,
                                torch.ops.aten.t.default, torch.ops.aten.alias.default):
                    self.count += 1
        return result


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_no_weight_gradient_buffer_per_chunk(alpha) -> None:
    inputs = make_inputs(6)
    counts = {}
    for chunk in (1, 7):
        weight = inputs["weight"].clone().requires_grad_(True)
        with ShapeCounter((V, H)) as counter:
            out = chunked_distillation_loss(inputs["student"], weight, inputs["teacher"], inputs["teacher_weight"],
                                            inputs["ids"], inputs["mask"], components=ComponentsConfig(),
                                            alpha=alpha, temperature=TAU, chunk_size=chunk)
            out.loss.backward()
        counts[chunk] = counter.count
        assert weight.grad.abs().sum() > 0
    assert counts[1] == counts[7] <= 4  # accumulator, backward's scaled copy, autograd's own buffers


@pytest.mark.parametrize("alpha,components,softcap", [
    (1.0, HINGE, None), (0.0, HINGE, 2.5), (1.0, ComponentsConfig(clipping=ClippingConfig(mode="quantile",
                                                                                        quantile=0.5)), 2.5),
])
def test_chunked_matches_plain_where_only_the_closed_form_runs(alpha, components, softcap) -> None:
    inputs = make_inputs(7)
    grads = []
    for path in ("plain", "chunked"):
        hidden = inputs["student"].clone().requires_grad_(True)
        weight = inputs["weight"].clone().requires_grad_(True)
        common = dict(components=components, alpha=alpha, temperature=TAU, agreement_logprobs_KBT=inputs["agreement"],
                      bad_teacher_logprobs_BT=inputs["bad"])
        if path == "plain":
            student = torch.tanh(F.linear(hidden, weight) / softcap) * softcap if softcap else F.linear(hidden, weight)
            teacher = F.linear(inputs["teacher"], inputs["teacher_weight"])
            teacher = torch.tanh(teacher / softcap) * softcap if softcap else teacher
            out = distillation_loss(student, teacher, inputs["ids"], inputs["mask"], **common)
        else:
            out = chunked_distillation_loss(hidden, weight, inputs["teacher"], inputs["teacher_weight"], inputs["ids"],
                                            inputs["mask"], chunk_size=4, logit_softcap=softcap, **common)
        out.loss.backward()
        grads.append((out, hidden.grad, weight.grad))
    (plain, plain_hidden, plain_weight), (chunked, chunk_hidden, chunk_weight) = grads
    assert_close_scaled(chunked.loss, plain.loss, terms=TERMS, msg="loss")
    for got, expected in ((chunk_hidden, plain_hidden), (chunk_weight, plain_weight)):
        assert_close_scaled(got, expected, terms=TERMS, msg="gradient")
    for name, value in plain.metrics.items():  # O(1) per-token quantities: terms <= max(1, |value|)
        assert_close_scaled(chunked.metrics[name], value, terms=TERMS, scale=max(1.0, abs(value)), msg=name)


class LargestRows(TorchDispatchMode):
    """Largest number of [.., V] rows of any operator output whose last axis is the vocabulary."""

    def __init__(self) -> None:
        super().__init__()
        self.rows = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for item in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(item, torch.Tensor) and item.dim() >= 2 and item.shape[-1] == V:
                self.rows = max(self.rows, item.numel() // V)
        return result


def test_the_jsd_autograd_path_runs_in_smaller_slices() -> None:
    from unisd_core.losses.chunked_grad import AUTOGRAD_LIVE_BUFFERS, CLOSED_FORM_LIVE_BUFFERS, rows_per_pass

    assert rows_per_pass(0.0, 440) == 440 and rows_per_pass(1.0, 440) == 440
    assert rows_per_pass(0.5, 440) == 440 * CLOSED_FORM_LIVE_BUFFERS // AUTOGRAD_LIVE_BUFFERS < 440
    assert rows_per_pass(0.5, 1) == 1
    inputs = make_inputs(8)
    seen = {}
    for alpha in (0.0, 0.5):
        with LargestRows() as probe:
            chunked_distillation_loss(inputs["student"], inputs["weight"].clone().requires_grad_(True),
                                      inputs["teacher"], inputs["teacher_weight"], inputs["ids"], inputs["mask"],
                                      components=ComponentsConfig(), alpha=alpha, temperature=TAU,
                                      chunk_size=14).loss.backward()
        seen[alpha] = probe.rows
    assert seen[0.0] == 14  # one chunk of 14 rows on the closed-form path
    assert seen[0.5] <= 2 * rows_per_pass(0.5, 14) < 14  # the JSD mixture stacks two [rows, V] tensors
