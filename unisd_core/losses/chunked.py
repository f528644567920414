"""Memory-lean distillation loss: the same objective as :func:`objective.distillation_loss`, computed
over chunks of tokens straight from the last hidden states and the LM head weights.

Full [B,T,V] logits are never materialised for student and teacher: only the masked tokens are
processed, ``chunk_size`` of them at a time ([chunk, V] logits for each model). Gradients are exact:
every token's contribution to the loss is linear in a per-token term with a coefficient known before
the chunk is processed (the reduction weights come from the mask and the agreement weights; the
clip is token-local once its cap is known), so each chunk's gradient w.r.t. the student hidden
states and head weight is computed inside the forward pass (as in Liger's fused linear
cross-entropy) and scaled by the incoming gradient in backward. The quantile clip needs the cap
first: one extra gradient-free pass over the chunks computes it.

Per chunk (:mod:`chunked_grad`): the gradient G w.r.t. the student's [C,V] head logits is computed
in closed form for forward and reverse KL (alpha 0 and 1; with clip, hinge and soft-cap), reusing
the log-prob buffers in place (about 3 float32 [C,V] buffers live instead of about 7), and by
autograd down to the logits for the generalized JSD. Then grad_hidden = G W and the head-weight
gradient accumulates in place (``addmm_``): no [V,H] buffer is allocated per chunk.

The math is not re-implemented where it matters for agreement: the reductions, clip and hinge are
the functions of the plain path (the per-token coefficients are the gradient of
:func:`masked_batch_loss` and of :func:`hinge_reduction`; the clip's and hinge's per-token
derivatives come from autograd over [C] vectors), the divergences and entropies use the plain
path's operations in the same order, and only the [C,V] softmax Jacobian products are written out;
the two paths agree to float32 rounding.

Departures from the plain path: the teacher side (hidden states and head weight) is always treated
as a constant here (the plain path leaves detaching to the caller); an optional ``logit_softcap``
reproduces heads that cap their logits (cap * tanh(z / cap)). Logits are computed in the dtype of
the inputs, as the model's own LM head would, then upcast to float32. With a low-precision head the
weight gradient is a float32 product of the rounded G and the hidden states (autograd's would be
rounded to the head's dtype once more).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from unisd_core.config import ComponentsConfig
from unisd_core.losses.agreement import agreement_weights
from unisd_core.losses.chunked_grad import (
    ChunkTerms,
    TokenPlan,
    accumulate_head_grads,
    chunk_terms,
    divergence_and_entropy,
    rows_per_pass,
)
from unisd_core.losses.clipping import quantile_cap
from unisd_core.losses.contrastive import hinge_reduction, usable_token_mask
from unisd_core.losses.divergences import sampled_token_logprobs, softcap_logits
from unisd_core.losses.features import feature_matching_loss
from unisd_core.losses.objective import LossOutput, check_component_inputs, term_metrics
from unisd_core.losses.reductions import masked_batch_loss


def chunk_tokens_for_vocab(vocab_size: int, *, budget_mib: float = 1024.0, live_buffers: int = 4,
                           minimum: int = 16, maximum: int = 1024) -> int:
    """Tokens per chunk so that ``live_buffers`` float32 [chunk, V] buffers fit in ``budget_mib``.

    chunk = clamp(budget / (V * 4 bytes * live_buffers), minimum, maximum), rounded down to a
    multiple of 8. Four buffers: the closed-form gradient path holds 3.5 float32 [C,V] buffers per
    chunk (measured on the CPU at V = 152k: student and teacher log-probs and one of p_T / p_S, the
    rest reused in place; 4.5 with a soft-cap), rounded up for the GPU's allocator. 1 GiB gives
    440 tokens at V = 152k (CPU peak 0.14x plain), 256 at V = 262k, 1024 at V <= 65k. The
    autograd (JSD) path slices each chunk further to stay in the same budget (``rows_per_pass``).
    """
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    tokens = int(budget_mib * 2**20 // (vocab_size * 4 * live_buffers))
    tokens = max(minimum, min(maximum, tokens))
    return max(minimum, tokens - tokens % 8)


def chunked_sampled_token_logprobs(hidden_BTH: Tensor, head_weight_VH: Tensor, token_ids_BT: Tensor, *,
                                   temperature: float, chunk_size: int = 1024,
                                   logit_softcap: float | None = None) -> Tensor:
    """Sampled-token log-probs [B,T] float32 from last hidden states [B,T,H] and an LM head [V,H],
    ``chunk_size`` rows at a time, without gradient (teacher-side scores: agreement contexts at
    tau 1, bad teacher at tau). Each chunk goes through the one log-softmax of the plain path
    (:func:`sampled_token_logprobs` on the soft-capped head logits), so only [chunk, V] logits
    ever exist."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    rows, steps = token_ids_BT.shape
    hidden_NH = hidden_BTH.reshape(rows * steps, -1)
    ids_N = token_ids_BT.reshape(-1)
    pieces = [torch.zeros(0, device=hidden_BTH.device)]
    with torch.no_grad():
        for start in range(0, ids_N.shape[0], chunk_size):
            logits_CV = softcap_logits(F.linear(hidden_NH[start:start + chunk_size], head_weight_VH),
                                       logit_softcap)
            pieces.append(sampled_token_logprobs(logits_CV[None], ids_N[None, start:start + chunk_size],
                                                 temperature=temperature)[0])
    return torch.cat(pieces).reshape(rows, steps)


def chunked_token_divergences(student_hidden_NH: Tensor, student_head_weight_VH: Tensor,
                              teacher_hidden_NH: Tensor, teacher_head_weight_VH: Tensor, *, alpha: float,
                              temperature: float, chunk_size: int = 1024,
                              logit_softcap: float | None = None) -> Tensor:
    """Per-token divergence [N] of N token rows (e.g. the masked ones), chunk by chunk, without
    gradient (diagnostics such as the logged forward KL of a JSD run)."""
    divergence_N, _ = _divergences_no_grad(student_hidden_NH, student_head_weight_VH, teacher_hidden_NH,
                                           teacher_head_weight_VH, alpha=alpha, temperature=temperature,
                                           chunk_size=chunk_size, softcap=logit_softcap)
    return divergence_N


def _coefficients(reduce, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """d reduce(values) / d values at values = 0: the per-token weight of a linear reduction."""
    values = torch.zeros(shape, device=device, requires_grad=True)
    with torch.enable_grad():
        (gradient,) = torch.autograd.grad(reduce(values), values)
    return gradient


class _ChunkedTokenLoss(torch.autograd.Function):
    """Divergence (+ contrastive) part of the loss; gradients computed chunk by chunk in forward."""

    @staticmethod
    def forward(ctx, student_hidden_NH, student_weight_VH, teacher_hidden_NH, teacher_weight_VH, plan, sink):
        need_hidden = plan.compute_gradients and ctx.needs_input_grad[0]
        need_weight = plan.compute_gradients and ctx.needs_input_grad[1]
        grad_hidden_NH = torch.zeros_like(student_hidden_NH, dtype=torch.float32) if need_hidden else None
        grad_weight_VH = torch.zeros_like(student_weight_VH, dtype=torch.float32) if need_weight else None
        totals = torch.zeros(2, device=student_hidden_NH.device)
        rows = rows_per_pass(plan.alpha, plan.chunk_size)
        for start in range(0, student_hidden_NH.shape[0], rows):
            chunk = slice(start, start + rows)
            terms = chunk_terms(plan, chunk, student_hidden_NH[chunk], student_weight_VH, teacher_hidden_NH[chunk],
                                teacher_weight_VH, need_grad=need_hidden or need_weight)
            if terms.grad_logits_CV is not None:
                accumulate_head_grads(terms.grad_logits_CV, student_hidden_NH[chunk], student_weight_VH,
                                      None if grad_hidden_NH is None else grad_hidden_NH[chunk], grad_weight_VH)
            totals[0] += terms.divergence_part
            if terms.hinge_part is not None:
                totals[1] += terms.hinge_part
            sink.record(plan, chunk, terms)
            del terms  # frees G before the next chunk's logits
        sink.parts = tuple(totals.tolist())
        ctx.grads = (grad_hidden_NH, grad_weight_VH)
        ctx.dtypes = (student_hidden_NH.dtype, student_weight_VH.dtype)
        return totals[0] + plan.contrastive_weight * totals[1]

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden_NH, grad_weight_VH = ctx.grads
        scale = grad_output.float()
        hidden = None if grad_hidden_NH is None else (grad_hidden_NH * scale).to(ctx.dtypes[0])
        weight = None if grad_weight_VH is None else (grad_weight_VH * scale).to(ctx.dtypes[1])
        return hidden, weight, None, None, None, None


class _MetricSink:
    """Accumulates the logged statistics of the chunks on the inputs' device (no gradient, no
    host synchronisation per chunk); ``parts`` is set once at the end of the forward pass."""

    def __init__(self) -> None:
        self.divergences: list[Tensor] = []
        self.sums: dict[str, Tensor] = {}
        self.parts = (0.0, 0.0)

    def _add(self, name: str, value: Tensor) -> None:
        self.sums[name] = self.sums[name] + value if name in self.sums else value

    def record(self, plan: TokenPlan, chunk: slice, terms: ChunkTerms) -> None:
        self.divergences.append(terms.divergence_C.float())
        self._add("entropy", terms.entropy_sum)
        if terms.hinge_C is not None:
            usable_C = plan.usable_N[chunk]
            self._add("active", (terms.trains_C & usable_C).sum())
            self._add("positive", ((terms.hinge_C > 0) & usable_C).sum())
            self._add("margin", (terms.gap_C * usable_C).sum())

    def total(self, name: str) -> float:
        return float(self.sums[name]) if name in self.sums else 0.0


def _divergences_no_grad(student_hidden_NH, student_weight_VH, teacher_hidden_NH, teacher_weight_VH,
                         *, alpha, temperature, chunk_size, softcap) -> tuple[Tensor, float]:
    """Raw divergences [N] and the summed student entropy of every token, chunk by chunk,
    without gradient."""
    device = student_hidden_NH.device
    pieces, entropy_sum = [torch.zeros(0, device=device)], torch.zeros((), device=device)
    rows = rows_per_pass(alpha, chunk_size)
    with torch.no_grad():
        for start in range(0, student_hidden_NH.shape[0], rows):
            chunk = slice(start, start + rows)
            divergence_C, entropy_C = divergence_and_entropy(
                student_hidden_NH[chunk], student_weight_VH, teacher_hidden_NH[chunk], teacher_weight_VH,
                alpha=alpha, temperature=temperature, softcap=softcap)
            pieces.append(divergence_C)
            entropy_sum += entropy_C.sum()  # on the device: one host sync at the end, not per chunk
    return torch.cat(pieces), float(entropy_sum)


def _plan(components: ComponentsConfig, completion_ids_BT, mask_BT, *, alpha, temperature, normalizer, cap,
          agreement_logprobs_KBT, bad_teacher_logprobs_BT, contrastive_usable_B, chunk_size, logit_softcap,
          metrics) -> TokenPlan:
    """Per-token coefficients from the plain path's own reductions; agreement stats into metrics."""
    mask_BT = mask_BT.bool()
    weights_BT, normalize_by_weights = None, True
    if components.agreement is not None:
        weights_BT, normalize_by_weights, stats = agreement_weights(
            agreement_logprobs_KBT, mask_BT, components.agreement)
        metrics.update({f"agreement/{k}": v for k, v in stats.items()})
    shape, device = tuple(mask_BT.shape), mask_BT.device
    def reduce_divergence(values_BT: Tensor) -> Tensor:
        return masked_batch_loss(values_BT, mask_BT, weights_BT, normalizer=normalizer,
                                 normalize_by_weights=normalize_by_weights)

    divergence_coef_BT = _coefficients(reduce_divergence, shape, device)
    hinge_coef_N = bad_N = usable_N = None
    margin = weight = 0.0
    if components.contrastive is not None:
        usable_B, token_mask_BT = usable_token_mask(mask_BT, contrastive_usable_B)
        hinge_coef_N = _coefficients(lambda h: hinge_reduction(h, token_mask_BT, usable_B, normalizer=normalizer),
                                    shape, device)[mask_BT]
        bad_N = torch.where(token_mask_BT, bad_teacher_logprobs_BT.float(), 0.0)[mask_BT]
        usable_N = token_mask_BT[mask_BT]
        margin, weight = components.contrastive.margin, components.contrastive.weight
        metrics["contrastive/usable"] = float(usable_B.sum())
    return TokenPlan(
        token_ids_N=completion_ids_BT[mask_BT].long(), divergence_coef_N=divergence_coef_BT[mask_BT],
        hinge_coef_N=hinge_coef_N, bad_logprobs_N=bad_N, usable_N=usable_N, alpha=alpha,
        temperature=temperature, cap=cap, margin=margin, contrastive_weight=weight,
        chunk_size=chunk_size, logit_softcap=logit_softcap, compute_gradients=torch.is_grad_enabled(),
    )


def _sink_metrics(sink: _MetricSink, plan: TokenPlan, components: ComponentsConfig, metrics: dict) -> None:
    divergence_N = torch.cat(sink.divergences) if sink.divergences else torch.zeros(0)
    count = max(1, divergence_N.numel())
    metrics["divergence/mean"] = float(divergence_N.sum()) / count
    metrics["divergence/max"] = float(divergence_N.max()) if divergence_N.numel() else 0.0
    metrics["student_entropy"] = sink.total("entropy") / count
    metrics["divergence/loss"] = sink.parts[0]
    if components.clipping is not None:
        metrics["clipping/cap"] = plan.cap
        metrics["clipping/clipped_fraction"] = float((divergence_N > plan.cap).sum()) / count
    if components.contrastive is not None:
        usable_tokens = max(1, int(plan.usable_N.sum()))
        metrics.update(term_metrics("contrastive", sink.parts[1], plan.contrastive_weight))
        metrics["contrastive/margin_mean"] = sink.total("margin") / usable_tokens
        metrics["contrastive/active_fraction"] = sink.total("active") / usable_tokens
        metrics["contrastive/positive_fraction"] = sink.total("positive") / usable_tokens


def chunked_distillation_loss(
    student_hidden_BTH: Tensor,
    student_head_weight_VH: Tensor,
    teacher_hidden_BTH: Tensor,
    teacher_head_weight_VH: Tensor,
    completion_ids_BT: Tensor,
    mask_BT: Tensor,
    *,
    components: ComponentsConfig,
    alpha: float,
    temperature: float,
    normalizer: str = "sequence",
    agreement_logprobs_KBT: Tensor | None = None,
    bad_teacher_logprobs_BT: Tensor | None = None,
    contrastive_usable_B: Tensor | None = None,
    chunk_size: int = 1024,
    logit_softcap: float | None = None,
) -> LossOutput:
    """:func:`distillation_loss` from last hidden states and LM head weights, ``chunk_size`` tokens
    at a time. Shapes: hidden [B,T,H] (the LM head's input at the positions predicting
    completion_ids), head weights [V,H], the rest as in :func:`distillation_loss`; the teacher
    hidden states double as the feature-matching target. Same loss, gradients and metric names.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    check_component_inputs(components, mask_BT, normalizer, completion_ids_BT=completion_ids_BT,
                           agreement_logprobs_KBT=agreement_logprobs_KBT,
                           bad_teacher_logprobs_BT=bad_teacher_logprobs_BT,
                           student_hidden_BTH=student_hidden_BTH, teacher_hidden_BTH=teacher_hidden_BTH)
    mask = mask_BT.bool()
    student_NH, teacher_NH = student_hidden_BTH[mask], teacher_hidden_BTH.detach()[mask]
    teacher_weight_VH = teacher_head_weight_VH.detach()
    pass_args = dict(alpha=alpha, temperature=temperature, chunk_size=chunk_size, softcap=logit_softcap)
    metrics: dict[str, float] = {"tokens": float(mask.sum())}
    fm = components.feature_matching
    if fm is not None and fm.mode == "repr":
        divergence_N, entropy_sum = _divergences_no_grad(student_NH.detach(), student_head_weight_VH.detach(),
                                                         teacher_NH, teacher_weight_VH, **pass_args)
        metrics["divergence/mean"] = float(divergence_N.sum()) / max(1, divergence_N.numel())
        metrics["student_entropy"] = entropy_sum / max(1, divergence_N.numel())
        loss = feature_matching_loss(student_hidden_BTH, teacher_hidden_BTH.detach(), mask_BT, normalizer=normalizer)
        metrics.update({**term_metrics("feature_matching", loss, 1.0), "loss": float(loss.detach())})
        return LossOutput(loss=loss, metrics=metrics)
    cap = float("inf")  # no clipping: clip_at(l, inf) is the identity
    if components.clipping is not None and components.clipping.mode == "static":
        cap = float(components.clipping.cap)
    elif components.clipping is not None:
        divergence_N, _ = _divergences_no_grad(student_NH.detach(), student_head_weight_VH.detach(),
                                               teacher_NH, teacher_weight_VH, **pass_args)
        all_tokens = torch.ones_like(divergence_N[None])
        cap = float(quantile_cap(divergence_N[None], all_tokens, components.clipping.quantile))
    plan = _plan(components, completion_ids_BT, mask_BT, alpha=alpha, temperature=temperature,
                 normalizer=normalizer, cap=cap, agreement_logprobs_KBT=agreement_logprobs_KBT,
                 bad_teacher_logprobs_BT=bad_teacher_logprobs_BT, contrastive_usable_B=contrastive_usable_B,
                 chunk_size=chunk_size, logit_softcap=logit_softcap, metrics=metrics)
    sink = _MetricSink()
    loss = _ChunkedTokenLoss.apply(student_NH, student_head_weight_VH, teacher_NH, teacher_weight_VH, plan, sink)
    _sink_metrics(sink, plan, components, metrics)
    if fm is not None:
        term = feature_matching_loss(student_hidden_BTH, teacher_hidden_BTH.detach(), mask_BT, normalizer=normalizer)
        loss = loss + fm.weight * term
        metrics.update(term_metrics("feature_matching", term, fm.weight))
    metrics["loss"] = float(loss.detach())
    return LossOutput(loss=loss, metrics=metrics)
