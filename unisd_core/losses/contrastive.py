"""Token-level contrastive hinge against a bad teacher (method.md 2.2).

With s_t, g_t, n_t the sampled-token log-probs of y_t under the student, the good (demonstration)
teacher and the bad (negative-demonstration) teacher, all at the same temperature:
h_t = max(0, mu + |s_t - g_t| - |s_t - n_t|), L_con = mean over usable examples of the masked mean
of h. Examples without a usable negative are left out of this term only (``usable_B`` False).

Gradients flow into every argument that carries them; the caller passes detached teacher
log-probs. Departures from the paper: none; with no usable example the term is an exact zero that
stays attached to the student graph (so ``backward`` still works).
"""

from __future__ import annotations

import torch
from torch import Tensor

from unisd_core.losses.reductions import masked_sequence_mean


def contrastive_hinge(
    student_logprobs_BT: Tensor, good_logprobs_BT: Tensor, bad_logprobs_BT: Tensor, *, margin: float
) -> Tensor:
    """h_t = max(0, margin + |s - g| - |s - n|), float32. [B,T] x3 -> [B,T]."""
    student_BT = student_logprobs_BT.float()
    good_gap_BT = (student_BT - good_logprobs_BT.float()).abs()
    bad_gap_BT = (student_BT - bad_logprobs_BT.float()).abs()
    return torch.relu(margin + good_gap_BT - bad_gap_BT)


def hinge_reduction(hinge_BT: Tensor, token_mask_BT: Tensor, usable_B: Tensor) -> Tensor:
    """L_con from hinge values: mean over usable examples of the per-sequence masked mean. -> [].

    ``token_mask_BT`` must already exclude unusable rows. With no usable example the result is an
    exact zero still attached to ``hinge_BT``'s graph.
    """
    per_sequence_B = masked_sequence_mean(hinge_BT, token_mask_BT)
    if not bool(usable_B.any()):
        return (hinge_BT * 0.0).sum()
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
) -> tuple[Tensor, dict[str, float]]:
    """L_con over usable examples. [B,T] x4, [B] bool -> (scalar, stats).

    stats: ``usable`` (count), ``margin_mean`` (masked mean of |s-n| - |s-g| over usable
    examples: positive when the student is nearer the good teacher), ``active_fraction`` (share
    of those tokens with a positive hinge).
    """
    usable_B, token_mask_BT = usable_token_mask(mask_BT, usable_B)
    # Unusable rows may hold placeholders (NaN, zeros): keep them out of the arithmetic entirely.
    safe_bad_BT = torch.where(token_mask_BT, bad_logprobs_BT.float(), student_logprobs_BT.detach().float())
    hinge_BT = contrastive_hinge(student_logprobs_BT, good_logprobs_BT, safe_bad_BT, margin=margin)
    loss = hinge_reduction(hinge_BT, token_mask_BT, usable_B)
    count = int(usable_B.sum())
    with torch.no_grad():
        student_BT = student_logprobs_BT.detach().float()
        gap_BT = (student_BT - safe_bad_BT).abs() - (student_BT - good_logprobs_BT.detach().float()).abs()
        tokens = token_mask_BT.sum().clamp(min=1).float()
        stats = {
            "usable": float(count),
            "margin_mean": float((gap_BT * token_mask_BT).sum() / tokens),
            "active_fraction": float(((hinge_BT.detach() > 0) & token_mask_BT).sum() / tokens),
        }
    return loss, stats
