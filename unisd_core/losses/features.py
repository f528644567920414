"""Feature matching on the last hidden state (method.md 2.3).

e_t = mean over the hidden dimension of (h_S - h_T)^2 at the positions predicting y;
L_fm = mean_b (sum_t e_t M_t / max(1, sum_t M_t)). Float32 whatever the input dtype. The teacher
hidden states must be passed detached (the caller's job, as for the logits).

Departures from the paper: none at the default. Under ``normalizer="global"`` (an option of
method.md 1.5) L_fm is the token mean sum_bt e M / sum_bt M, like the divergence term, instead of
the per-sequence mean.
"""

from __future__ import annotations

from torch import Tensor

from unisd_core.losses.reductions import masked_batch_loss


def feature_distance(student_hidden_BTH: Tensor, teacher_hidden_BTH: Tensor) -> Tensor:
    """e_t = mean_H (h_S - h_T)^2, float32. [B,T,H] x2 -> [B,T]."""
    if student_hidden_BTH.shape != teacher_hidden_BTH.shape:
        raise ValueError(
            f"student hidden {tuple(student_hidden_BTH.shape)} and teacher hidden "
            f"{tuple(teacher_hidden_BTH.shape)} must have the same shape [B,T,H]"
        )
    return (student_hidden_BTH.float() - teacher_hidden_BTH.float()).pow(2).mean(dim=-1)


def feature_matching_loss(student_hidden_BTH: Tensor, teacher_hidden_BTH: Tensor, mask_BT: Tensor, *,
                          normalizer: str = "sequence") -> Tensor:
    """L_fm: per-sequence masked mean of e_t, then mean over the batch (``global``: the masked
    token mean of the batch). -> scalar."""
    return masked_batch_loss(feature_distance(student_hidden_BTH, teacher_hidden_BTH), mask_BT,
                             normalizer=normalizer)
