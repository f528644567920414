"""One chunk of the chunked distillation loss: its value terms and its gradient w.r.t. the student's
LM-head logits (the caller turns that into the hidden-state and head-weight gradients with two
matmuls, accumulating the weight gradient in place).

Two ways to get the logit gradient G = d(chunk loss) / d z_S, z_S = h W^T the student's head logits:

- :func:`closed_form_chunk` (forward KL, alpha = 0, and reverse KL, alpha = 1). With
  u = softcap(z) / tau, p = softmax(u), c_i = d(a_i clip(l_i)) / d l_i and k_i = d(loss) / d s_i
  (s_i = log p_S[id_i], the hinge's input), the gradient w.r.t. log p_S is
  forward KL  g = -c p_T + k onehot(id);
  reverse KL  g = c p_S (log p_S - log p_T + 1) + k onehot(id);
  through the log-softmax dL/du = g - p_S sum_v g, i.e. c (p_S - p_T) + k (onehot(id) - p_S) for
  forward KL (sum_v p_T = 1) and c p_S (log p_S - log p_T - l) + k (onehot(id) - p_S) for reverse
  KL; then G = dL/du / tau, times 1 - tanh^2(z / cap) with a soft-cap. Forward KL (the default)
  builds g with autograd's own operations and runs torch's log_softmax backward kernel on it, so
  its G equals autograd's to the bit; reverse KL uses the algebraic form (equal to rounding).
  The per-token scalars c and k come from autograd over [C] vectors through the plain path's own
  :func:`clip_at` and :func:`contrastive_hinge`, so the clip's tie rule (a token at the cap keeps
  its gradient) and the hinge's kinks (relu and |.| at 0) are autograd's by construction. Every
  [C,V] buffer is reused in place: 3 float32 [C,V] buffers live at the peak (student and teacher
  log-probs, p_T; measured 3.5 with the allocator), 4 with a soft-cap (tanh kept for the gradient).
- :func:`autograd_chunk` (every alpha, the generalized JSD included): autograd through
  log_softmax, the divergence, clip and hinge, but only down to the float32 logits; the matmuls
  are the caller's, as above, so no [V,H] buffer is allocated per chunk here either. It holds
  about 14 [C,V] buffers, so the caller gives it smaller slices (:func:`rows_per_pass`).

Both compute every logged value with the plain path's formulas (same operations in the same order,
so the divergences and entropies match :func:`divergence_from_log_probs` and
:func:`entropy_from_log_probs` to the bit on the closed-form path). Departure: none in the math;
the closed form covers alpha 0 and 1 only (the JSD is not worth its own derivation here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from unisd_core.losses.clipping import clip_at
from unisd_core.losses.contrastive import contrastive_hinge, hinge_gradient_mask
from unisd_core.losses.divergences import (
    divergence_from_log_probs,
    entropy_from_log_probs,
    scaled_log_probs,
    softcap_logits,
)

CLOSED_FORM_ALPHAS: tuple[float, ...] = (0.0, 1.0)
# Float32 [C,V] buffers live per chunk, measured on the CPU (benchmarks/loss_path.py, V = 152k, peak
# slope between two chunk sizes): closed form 3.5 (4.5 with a soft-cap), autograd path for the
# generalized JSD 14. ``chunk_tokens_for_vocab`` sizes chunks for the closed form; the autograd path
# runs each chunk in slices of chunk * CLOSED_FORM_LIVE_BUFFERS // AUTOGRAD_LIVE_BUFFERS rows so
# that it stays inside the same memory budget.
CLOSED_FORM_LIVE_BUFFERS = 4
AUTOGRAD_LIVE_BUFFERS = 14


@dataclass(frozen=True)
class TokenPlan:
    """Per-masked-token constants, all [N] (N = number of masked tokens) except the scalars."""

    token_ids_N: Tensor
    divergence_coef_N: Tensor
    hinge_coef_N: Tensor | None
    bad_logprobs_N: Tensor | None
    usable_N: Tensor | None
    alpha: float
    temperature: float
    cap: float
    margin: float
    contrastive_weight: float
    chunk_size: int
    logit_softcap: float | None
    compute_gradients: bool  # False under torch.no_grad: needs_input_grad ignores grad mode


@dataclass(frozen=True)
class ChunkTerms:
    """What one chunk contributes: loss parts (scalars), detached per-token values [C] for the
    metrics, the summed student entropy, and G = d(chunk loss) / d(student head logits) [C,V]
    float32 (None when no gradient was asked for)."""

    divergence_part: Tensor
    hinge_part: Tensor | None
    divergence_C: Tensor
    hinge_C: Tensor | None
    gap_C: Tensor | None
    entropy_sum: Tensor
    grad_logits_CV: Tensor | None
    trains_C: Tensor | None = None  # tokens whose hinge gradient is non-zero (hinge_gradient_mask)


def has_closed_form(alpha: float) -> bool:
    """True for the divergences :func:`closed_form_chunk` covers (forward and reverse KL)."""
    return alpha in CLOSED_FORM_ALPHAS


def rows_per_pass(alpha: float, chunk_size: int) -> int:
    """Rows processed together: ``chunk_size`` on the closed-form path, a proportionally smaller
    slice on the autograd path (same peak memory)."""
    if has_closed_form(alpha):
        return chunk_size
    return max(1, chunk_size * CLOSED_FORM_LIVE_BUFFERS // AUTOGRAD_LIVE_BUFFERS)


def _head_logits(hidden_CH: Tensor, weight_VH: Tensor) -> Tensor:
    """Head logits in the inputs' dtype (as the model's head computes them), upcast to float32 at
    once so that no low-precision copy stays alive. No gradient."""
    with torch.no_grad():
        return F.linear(hidden_CH.detach(), weight_VH.detach()).float()


def _log_probs_keeping_tanh(logits_CV: Tensor, temperature: float, softcap: float | None,
                            keep_tanh: bool) -> tuple[Tensor, Tensor | None]:
    """log_softmax(softcap(z) / tau) in float32, with the ops of :func:`scaled_log_probs` and
    :func:`softcap_logits` in their order (same bits); with a soft-cap and ``keep_tanh`` also
    tanh(z / cap) [C,V], needed by the gradient. ``logits_CV`` is consumed."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits_CV = logits_CV.float()
    tanh_CV = None
    if softcap:
        tanh_CV = logits_CV.div_(softcap).tanh_()
        logits_CV = tanh_CV * softcap
        if not keep_tanh:
            tanh_CV = None
    return torch.log_softmax(logits_CV.div_(temperature), dim=-1), tanh_CV


def _token_scalars(plan: TokenPlan, chunk: slice, divergence_C: Tensor, student_C: Tensor | None,
                   good_C: Tensor | None, need_grad: bool):
    """Loss parts, hinge values and margin gap of a chunk, and (with ``need_grad``) the per-token
    derivatives c = d loss / d l and k = d loss / d s, from autograd over [C] vectors through the
    plain path's clip and hinge."""
    with torch.enable_grad():
        divergence_C = divergence_C.detach().requires_grad_(need_grad)
        divergence_part = (plan.divergence_coef_N[chunk] * clip_at(divergence_C, plan.cap)).sum()
        total, inputs, hinge_part, hinge_C, gap_C, trains_C = divergence_part, [divergence_C], None, None, None, None
        if plan.hinge_coef_N is not None:
            student_C = student_C.detach().requires_grad_(need_grad)
            hinge_C = contrastive_hinge(student_C, good_C, plan.bad_logprobs_N[chunk], margin=plan.margin)
            hinge_part = (plan.hinge_coef_N[chunk] * hinge_C).sum()
            total = total + plan.contrastive_weight * hinge_part
            inputs.append(student_C)
            with torch.no_grad():  # the logged margin |s - n| - |s - g|
                gap_C = (student_C - plan.bad_logprobs_N[chunk]).abs() - (student_C - good_C).abs()
                trains_C = hinge_gradient_mask(student_C, good_C, plan.bad_logprobs_N[chunk], hinge_C)
        grads = torch.autograd.grad(total, inputs) if need_grad else (None, None)
    c_C = grads[0]
    k_C = grads[1] if plan.hinge_coef_N is not None and need_grad else None
    hinge_part = None if hinge_part is None else hinge_part.detach()
    hinge_C = None if hinge_C is None else hinge_C.detach()
    return divergence_part.detach(), hinge_part, hinge_C, (gap_C, trains_C), c_C, k_C


def _forward_kl(student_log_CV: Tensor, teacher_log_CV: Tensor):
    """KL(p_T || p_S) [C], student entropy [C], log p_S [C,V] (kept), p_T [C,V]; consumes the
    teacher log-probs. Same operations as :func:`kl_from_log_probs` and
    :func:`entropy_from_log_probs`, in the same order."""
    teacher_p_CV = teacher_log_CV.exp()
    work_CV = teacher_log_CV.sub_(student_log_CV).mul_(teacher_p_CV)
    work_CV.masked_fill_(~(teacher_p_CV > 0), 0.0)  # p = 0 contributes 0, not NaN
    divergence_C = work_CV.sum(dim=-1)
    entropy_C = -torch.exp(student_log_CV, out=work_CV).mul_(student_log_CV).sum(dim=-1)
    return divergence_C, entropy_C, student_log_CV, teacher_p_CV


def _reverse_kl(student_log_CV: Tensor, teacher_log_CV: Tensor):
    """KL(p_S || p_T) [C], entropy [C], p_S (log p_S - log p_T) masked [C,V], p_S [C,V],
    sum_v p_S [C]; consumes both inputs."""
    student_p_CV = student_log_CV.exp()
    work_CV = teacher_log_CV.neg_().add_(student_log_CV).mul_(student_p_CV)  # (-b) + a == a - b exactly
    work_CV.masked_fill_(~(student_p_CV > 0), 0.0)
    divergence_C = work_CV.sum(dim=-1)
    mass_C = student_p_CV.sum(dim=-1)
    entropy_C = -student_log_CV.mul_(student_p_CV).sum(dim=-1)
    return divergence_C, entropy_C, work_CV, student_p_CV, mass_C


def _add_hinge_onehot(grad_CV: Tensor, ids_C: Tensor, k_C: Tensor | None) -> Tensor:
    """grad += k onehot(id): the sampled-token half of d s / d u = onehot(id) - p_S."""
    if k_C is not None:
        grad_CV.scatter_add_(-1, ids_C[:, None], k_C[:, None])
    return grad_CV


def _finish_logit_grad(grad_u_CV: Tensor, tanh_CV: Tensor | None, temperature: float) -> Tensor:
    """dL/du -> dL/dz in place: u = softcap(z) / tau, d softcap / dz = 1 - tanh^2(z / cap)."""
    grad_u_CV.div_(temperature)
    if tanh_CV is not None:
        grad_u_CV.mul_(tanh_CV.mul_(tanh_CV).neg_().add_(1.0))
    return grad_u_CV


def closed_form_chunk(plan: TokenPlan, chunk: slice, student_hidden_CH: Tensor, student_weight_VH: Tensor,
                      teacher_hidden_CH: Tensor, teacher_weight_VH: Tensor, *, need_grad: bool) -> ChunkTerms:
    """One chunk's terms with G in closed form (alpha 0 or 1); hidden [C,H], head weights [V,H].
    The head logits are built here, so that no caller holds them and every [C,V] buffer can be
    overwritten in place; G (float32 [C,V]) is the one buffer freshly allocated at the end."""
    if not has_closed_form(plan.alpha):
        raise ValueError(f"no closed form for alpha={plan.alpha}; use autograd_chunk")
    student_log_CV, tanh_CV = _log_probs_keeping_tanh(_head_logits(student_hidden_CH, student_weight_VH),
                                                      plan.temperature, plan.logit_softcap, keep_tanh=need_grad)
    teacher_log_CV, _ = _log_probs_keeping_tanh(_head_logits(teacher_hidden_CH, teacher_weight_VH),
                                                plan.temperature, plan.logit_softcap, keep_tanh=False)
    ids_C = plan.token_ids_N[chunk]
    student_C = good_C = None
    if plan.hinge_coef_N is not None:  # gathered before the buffers are overwritten
        student_C = student_log_CV.gather(-1, ids_C[:, None]).squeeze(-1)
        good_C = teacher_log_CV.gather(-1, ids_C[:, None]).squeeze(-1)
    if plan.alpha == 0.0:
        divergence_C, entropy_C, student_log_CV, teacher_p_CV = _forward_kl(student_log_CV, teacher_log_CV)
    else:
        divergence_C, entropy_C, weighted_CV, student_p_CV, mass_C = _reverse_kl(student_log_CV, teacher_log_CV)
    del teacher_log_CV
    divergence_part, hinge_part, hinge_C, (gap_C, trains_C), c_C, k_C = _token_scalars(
        plan, chunk, divergence_C, student_C, good_C, need_grad)
    grad_CV = None
    if need_grad:
        if plan.alpha == 0.0:
            # dL/d log p_S = -c p_T + k onehot(id) (autograd's sub and gather backward), then torch's
            # own log_softmax backward, g - p_S sum(g): the same kernels autograd runs, same bits.
            log_grad_CV = _add_hinge_onehot(teacher_p_CV.mul_(c_C[:, None]).neg_(), ids_C, k_C)
            grad_CV = torch._log_softmax_backward_data(log_grad_CV, student_log_CV, -1, torch.float32)
            del log_grad_CV, teacher_p_CV, student_log_CV
        else:
            k_or_zero_C = torch.zeros_like(c_C) if k_C is None else k_C
            scale_C = c_C * (1.0 - divergence_C - mass_C) - k_or_zero_C
            grad_CV = weighted_CV.mul_(c_C[:, None]).add_(student_p_CV.mul_(scale_C[:, None]))
            grad_CV = _add_hinge_onehot(grad_CV, ids_C, k_C)
        grad_CV = _finish_logit_grad(grad_CV, tanh_CV, plan.temperature)
    return ChunkTerms(divergence_part, hinge_part, divergence_C, hinge_C, gap_C, entropy_C.sum(), grad_CV,
                      trains_C=trains_C)


def autograd_chunk(plan: TokenPlan, chunk: slice, student_hidden_CH: Tensor, student_weight_VH: Tensor,
                   teacher_hidden_CH: Tensor, teacher_weight_VH: Tensor, *, need_grad: bool) -> ChunkTerms:
    """One chunk's terms with G from autograd through the plain path's functions, any alpha (the
    reference for :func:`closed_form_chunk` and the path for the generalized JSD)."""
    with torch.no_grad():
        teacher_log_CV = scaled_log_probs(softcap_logits(_head_logits(teacher_hidden_CH, teacher_weight_VH),
                                                         plan.logit_softcap), plan.temperature)
    with torch.enable_grad():
        logits_CV = _head_logits(student_hidden_CH, student_weight_VH).requires_grad_(need_grad)
        student_log_CV = scaled_log_probs(softcap_logits(logits_CV, plan.logit_softcap), plan.temperature)
        divergence_C = divergence_from_log_probs(student_log_CV, teacher_log_CV, plan.alpha)
        divergence_part = (plan.divergence_coef_N[chunk] * clip_at(divergence_C, plan.cap)).sum()
        chunk_loss, hinge_part, hinge_C, gap_C, trains_C = divergence_part, None, None, None, None
        if plan.hinge_coef_N is not None:
            ids_C1 = plan.token_ids_N[chunk, None]
            student_C = student_log_CV.gather(-1, ids_C1).squeeze(-1)
            good_C = teacher_log_CV.gather(-1, ids_C1).squeeze(-1)
            hinge_C = contrastive_hinge(student_C, good_C, plan.bad_logprobs_N[chunk], margin=plan.margin)
            with torch.no_grad():
                gap_C = (student_C - plan.bad_logprobs_N[chunk]).abs() - (student_C - good_C).abs()
                trains_C = hinge_gradient_mask(student_C, good_C, plan.bad_logprobs_N[chunk], hinge_C)
            hinge_part = (plan.hinge_coef_N[chunk] * hinge_C).sum()
            chunk_loss = chunk_loss + plan.contrastive_weight * hinge_part
        (grad_CV,) = torch.autograd.grad(chunk_loss, [logits_CV]) if need_grad else (None,)
    with torch.no_grad():
        entropy_sum = entropy_from_log_probs(student_log_CV.detach()).sum()
    return ChunkTerms(divergence_part.detach(), None if hinge_part is None else hinge_part.detach(),
                      divergence_C.detach(), None if hinge_C is None else hinge_C.detach(), gap_C,
                      entropy_sum, grad_CV, trains_C=trains_C)


def chunk_terms(plan: TokenPlan, chunk: slice, student_hidden_CH: Tensor, student_weight_VH: Tensor,
                teacher_hidden_CH: Tensor, teacher_weight_VH: Tensor, *, need_grad: bool) -> ChunkTerms:
    """The closed form where it exists, autograd otherwise."""
    run = closed_form_chunk if has_closed_form(plan.alpha) else autograd_chunk
    return run(plan, chunk, student_hidden_CH, student_weight_VH, teacher_hidden_CH, teacher_weight_VH,
               need_grad=need_grad)


def divergence_and_entropy(student_hidden_CH: Tensor, student_weight_VH: Tensor, teacher_hidden_CH: Tensor,
                           teacher_weight_VH: Tensor, *, alpha: float, temperature: float,
                           softcap: float | None) -> tuple[Tensor, Tensor]:
    """Raw divergences [C] and student entropies [C] of one chunk without gradient; in place for
    alpha 0 and 1, through the plain functions otherwise."""
    with torch.no_grad():
        student_log_CV, _ = _log_probs_keeping_tanh(_head_logits(student_hidden_CH, student_weight_VH),
                                                    temperature, softcap, keep_tanh=False)
        teacher_log_CV, _ = _log_probs_keeping_tanh(_head_logits(teacher_hidden_CH, teacher_weight_VH),
                                                    temperature, softcap, keep_tanh=False)
        if alpha == 0.0:
            return _forward_kl(student_log_CV, teacher_log_CV)[:2]
        if alpha == 1.0:
            return _reverse_kl(student_log_CV, teacher_log_CV)[:2]
        divergence_C = divergence_from_log_probs(student_log_CV, teacher_log_CV, alpha)
        return divergence_C, entropy_from_log_probs(student_log_CV)


def accumulate_head_grads(grad_logits_CV: Tensor, student_hidden_CH: Tensor, student_weight_VH: Tensor,
                          grad_hidden_CH: Tensor | None, grad_weight_VH: Tensor | None) -> None:
    """grad_hidden = G @ W (written into ``grad_hidden_CH``), grad_weight += G^T h in place (no
    [V,H] allocation). With a low-precision head, G is rounded to its dtype first (what autograd
    does before the linear's backward); the hidden gradient is then a matmul in that dtype, the
    weight gradient a float32 matmul on the rounded G (more precise than autograd's, same values
    to that dtype's rounding)."""
    head_dtype = student_weight_VH.dtype
    grad_low_CV = grad_logits_CV if head_dtype == torch.float32 else grad_logits_CV.to(head_dtype)
    if grad_hidden_CH is not None:
        grad_hidden_CH.copy_(grad_low_CV @ student_weight_VH.detach())
    if grad_weight_VH is not None:
        if grad_low_CV is not grad_logits_CV:
            grad_logits_CV.copy_(grad_low_CV)  # the rounded G, in the float32 buffer
        del grad_low_CV
        grad_weight_VH.addmm_(grad_logits_CV.t(), student_hidden_CH.detach().float())
