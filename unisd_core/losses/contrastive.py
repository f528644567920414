"""Token-level contrastive hinge against a bad teacher (method.md 2.2).

With s_t, g_t, n_t the sampled-token log-probs of y_t under the student, the good (demonstration)
teacher and the bad (negative-demonstration) teacher, all at the same temperature:
h_t = max(0, mu + |s_t - g_t| - |s_t - n_t|), L_con = mean over usable examples of the masked mean
of h. Examples without a usable negative are left out of this term only (``usable_B`` False).

Gradients flow into every argument that carries them; the caller passes detached teacher
log-probs. When is the term inert? dh/ds = sign(s - g) - sign(s - n) where h > 0, which is zero
unless s lies strictly between g and n (or on one of them and not the other). A student outside
that interval gets a positive hinge h = mu + (g - n) (or mu + (n - g)) that adds to the loss but
carries no gradient at all. ``active_fraction`` therefore counts the tokens whose hinge gradient
is non-zero (the ones the term trains); ``positive_fraction`` the tokens with h > 0.

Departures from the paper: none in the loss; with no usable example the term is an exact zero
that stays attached to the student graph (so ``backward`` still works). The per-sequence mean
follows the run's normaliser (``global``: one token mean over the usable rows), as the divergence
term does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from unisd_core.losses.reductions import masked_batch_loss, masked_sequence_mean


def contrastive_hinge(
    student_logprobs_BT: Tensor, good_logprobs_BT: Tensor, bad_logprobs_BT: Tensor, *, margin: float
) -> Tensor:
    """h_t = max(0, margin + |s - g| - |s - n|), float32. [B,T] x3 -> [B,T]."""
    student_BT = student_logprobs_BT.float()
    good_gap_BT = (student_BT - good_logprobs_BT.float()).abs()
    bad_gap_BT = (student_BT - bad_logprobs_BT.float()).abs()
    return torch.relu(margin + good_gap_BT - bad_gap_BT)


def hinge_gradient_mask(student_logprobs_BT: Tensor, good_logprobs_BT: Tensor, bad_logprobs_BT: Tensor,
                        hinge_BT: Tensor) -> Tensor:
    """Tokens whose hinge has a non-zero derivative w.r.t. the student log-prob. -> [B,T] bool.

    dh/ds = 1[h > 0] (sgn(s - g) - sgn(s - n)), with autograd's sgn(0) = 0 (the subgradient
    torch's ``abs`` and ``relu`` use), so the mask agrees with the gradient backward computes.
    """
    student_BT = student_logprobs_BT.detach().float()
    good_sign_BT = torch.sign(student_BT - good_logprobs_BT.detach().float())
    bad_sign_BT = torch.sign(student_BT - bad_logprobs_BT.detach().float())
    return (hinge_BT.detach() > 0) & (good_sign_BT != bad_sign_BT)


def hinge_reduction(hinge_BT: Tensor, token_mask_BT: Tensor, usable_B: Tensor, *,
                    normalizer: str = "sequence") -> Tensor:
    """L_con from hinge values. -> [].

    ``sequence``: mean over usable examples of the per-sequence masked mean (method.md 2.2).
    ``global``: sum of h over the usable rows' masked tokens / their count (the token mean the
    ``global`` normaliser gives the divergence term). ``token_mask_BT`` must already exclude
    unusable rows. With no usable example the result is an exact zero still attached to
    ``hinge_BT``'s graph.
    """
    if not bool(usable_B.any()):
        return (hinge_BT * 0.0).sum()
    if normalizer == "global":
        return masked_batch_loss(hinge_BT, token_mask_BT, normalizer="global")
    if normalizer != "sequence":
        raise ValueError(f"normalizer must be 'sequence' or 'global', got {normalizer!r}")
    per_sequence_B = masked_sequence_mean(hinge_BT, token_mask_BT)
    return per_sequence_B[usable_B].mean()


def usable_token_mask(mask_BT: Tensor, usable_B: Tensor | None) -> tuple[Tensor, Tensor]:
    """(usable_B as bool, mask restricted to usable rows as bool); all rows usable by default."""
    batch = mask_BT.shape[0]
    if usable_B is None:
        usable_B = torch.ones(batch, dtype=torch.bool, device=mask_BT.device)
    if usable_B.shape != (batch,):
        raise ValueError(f"usable mask must be [B]=({batch},), got {tuple(usable_B.shape)}")
    usable_B = usable_B.bool()
    return usable_B, mask_BT.bool() & usable_B[:, None]


def contrastive_loss(
    student_logprobs_BT: Tensor,
    good_logprobs_BT: Tensor,
    bad_logprobs_BT: Tensor,
    mask_BT: Tensor,
    *,
    margin: float,
    usable_B: Tensor | None = None,
    normalizer: str = "sequence",
) -> tuple[Tensor, dict[str, float]]:
    """L_con over usable examples. [B,T] x4, [B] bool -> (scalar, stats).

    stats: ``usable`` (count), ``margin_mean`` (masked mean of |s-n| - |s-g| over usable
    examples: positive when the student is nearer the good teacher), ``active_fraction`` (share
    of those tokens whose hinge gradient is non-zero: :func:`hinge_gradient_mask`),
    ``positive_fraction`` (share with h > 0, gradient or not).
    """
    usable_B, token_mask_BT = usable_token_mask(mask_BT, usable_B)
    # Unusable rows may hold placeholders (NaN, zeros): keep them out of the arithmetic entirely.
    safe_bad_BT = torch.where(token_mask_BT, bad_logprobs_BT.float(), student_logprobs_BT.detach().float())
    hinge_BT = contrastive_hinge(student_logprobs_BT, good_logprobs_BT, safe_bad_BT, margin=margin)
    loss = hinge_reduction(hinge_BT, token_mask_BT, usable_B, normalizer=normalizer)
    count = int(usable_B.sum())
    with torch.no_grad():
        student_BT = student_logprobs_BT.detach().float()
        gap_BT = (student_BT - safe_bad_BT).abs() - (student_BT - good_logprobs_BT.detach().float()).abs()
        tokens = token_mask_BT.sum().clamp(min=1).float()
        stats = {
            "usable": float(count),
            "margin_mean": float((gap_BT * token_mask_BT).sum() / tokens),
            "active_fraction": float((hinge_gradient_mask(student_BT, good_logprobs_BT, safe_bad_BT, hinge_BT)
                                      & token_mask_BT).sum() / tokens),
            "positive_fraction": float(((hinge_BT.detach() > 0) & token_mask_BT).sum() / tokens),
        }
    return loss, stats
