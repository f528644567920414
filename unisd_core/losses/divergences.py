"""Per-token divergences between student and teacher next-token distributions (method.md 1.3-1.4).

One implementation of the divergence for the whole project (design.md habit 3): the training loss,
the GKD baseline and any diagnostic call :func:`token_divergence`. Everything is computed in
float32 whatever the input dtype (bf16 logits are upcast before the temperature division).

Conventions: ``logits_BTV[b, t]`` are the logits *predicting* ``completion_ids_BT[b, t]``; the
caller does the one-position shift. Gradients flow into both arguments: the teacher side gets no
gradient only if the caller passes detached teacher logits (or computes them under
``torch.no_grad``), which the training loop must do.

Departures from the paper: none. The generalized JSD mixture is formed in log space with
``logsumexp`` (as in TRL's GKD loss), so no probability is exponentiated and re-logged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def scaled_log_probs(logits_BTV: Tensor, temperature: float) -> Tensor:
    """log_softmax(logits / temperature) in float32. [B,T,V] -> [B,T,V]."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return torch.log_softmax(logits_BTV.float() / temperature, dim=-1)


def kl_from_log_probs(log_p_BTV: Tensor, log_q_BTV: Tensor) -> Tensor:
    """KL(p || q) = sum_v p (log p - log q) over the last axis. [B,T,V] x2 -> [B,T].

    Entries with p = 0 (log p = -inf, e.g. a masked vocabulary entry) contribute 0, not NaN.
    """
    p_BTV = log_p_BTV.exp()
    return torch.where(p_BTV > 0, p_BTV * (log_p_BTV - log_q_BTV), 0.0).sum(dim=-1)


def divergence_from_log_probs(student_log_BTV: Tensor, teacher_log_BTV: Tensor, alpha: float) -> Tensor:
    """The alpha-indexed divergence of method.md 1.4 from float32 log-probs. [B,T,V] x2 -> [B,T].

    alpha = 0: forward KL(p_T || p_S); alpha = 1: reverse KL(p_S || p_T); otherwise the
    generalized JSD with m = alpha p_T + (1 - alpha) p_S:
    alpha KL(p_T || m) + (1 - alpha) KL(p_S || m).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if alpha == 0.0:
        return kl_from_log_probs(teacher_log_BTV, student_log_BTV)
    if alpha == 1.0:
        return kl_from_log_probs(student_log_BTV, teacher_log_BTV)
    mixture_log_BTV = torch.logsumexp(
        torch.stack([teacher_log_BTV + math.log(alpha), student_log_BTV + math.log(1.0 - alpha)]),
        dim=0,
    )
    teacher_term_BT = kl_from_log_probs(teacher_log_BTV, mixture_log_BTV)
    student_term_BT = kl_from_log_probs(student_log_BTV, mixture_log_BTV)
    return alpha * teacher_term_BT + (1.0 - alpha) * student_term_BT


def token_divergence(
    student_logits_BTV: Tensor, teacher_logits_BTV: Tensor, *, alpha: float, temperature: float
) -> Tensor:
    """Per-token divergence over the full vocabulary, float32. [B,T,V] x2 -> [B,T].

    Both logits are divided by ``temperature`` and log-softmaxed in float32; see
    :func:`divergence_from_log_probs` for the choice by ``alpha``. No masking or reduction here.
    """
    if student_logits_BTV.shape != teacher_logits_BTV.shape:
        raise ValueError(
            f"student logits {tuple(student_logits_BTV.shape)} and teacher logits "
            f"{tuple(teacher_logits_BTV.shape)} must have the same shape [B,T,V]"
        )
    return divergence_from_log_probs(
        scaled_log_probs(student_logits_BTV, temperature),
        scaled_log_probs(teacher_logits_BTV, temperature),
        alpha,
    )


def sampled_token_logprobs(logits_BTV: Tensor, token_ids_BT: Tensor, *, temperature: float) -> Tensor:
    """log p(token_ids[b,t]) under softmax(logits / temperature), float32. [B,T,V], [B,T] -> [B,T].

    Computed as the gathered scaled logit minus the logsumexp, which avoids keeping a second
    full-vocabulary float32 tensor alive for backward.
    """
    if token_ids_BT.shape != logits_BTV.shape[:-1]:
        raise ValueError(
            f"token ids {tuple(token_ids_BT.shape)} do not match logits {tuple(logits_BTV.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    scaled_BTV = logits_BTV.float() / temperature
    picked_BT = scaled_BTV.gather(-1, token_ids_BT.long().unsqueeze(-1)).squeeze(-1)
    return picked_BT - torch.logsumexp(scaled_BTV, dim=-1)


def entropy_from_log_probs(log_p_XV: Tensor) -> Tensor:
    """Entropy (nats) -sum_v p log p over the last axis. [..., V] -> [...]."""
    return -(log_p_XV.exp() * log_p_XV).sum(dim=-1)


def token_entropy(logits_BTV: Tensor, *, temperature: float = 1.0) -> Tensor:
    """Entropy (nats) of softmax(logits / temperature), float32. [B,T,V] -> [B,T]."""
    return entropy_from_log_probs(scaled_log_probs(logits_BTV, temperature))


def softcap_logits(logits_XV: Tensor, cap: float | None) -> Tensor:
    """cap * tanh(z / cap): the final logit soft-capping of heads that have one (Gemma 2 style);
    the identity for ``cap`` None or 0. Computed in the logits' dtype, as the model's head does."""
    return torch.tanh(logits_XV / cap) * cap if cap else logits_XV
