"""Masked reductions of per-token values to per-sequence and batch losses (method.md 1.5, 2.1).

``sequence`` normaliser (the paper's default): L_b = sum_t w l M / N_b, loss = mean_b L_b.
``global`` normaliser (an option): loss = sum_bt w l M / sum_bt N. The count N is either the
weighted count sum_t w M (token-level agreement; the authors' sequence-level parity option) or the
unweighted count sum_t M (sequence-level agreement, so that its weight is not cancelled).

Departure from a literal ``max(1, sum_t w M)``: the denominator is the (weighted) count when the
sequence has at least one masked token and 1 otherwise. With unit weights this is exactly
max(1, sum_t M); with weights it stays a true weighted mean (a ``max(1, .)`` clamp would bias
sequences whose weights sum below one and stop the parity option from cancelling exactly).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Normalizer = Literal["sequence", "global"]
NORMALIZERS: tuple[str, ...] = ("sequence", "global")


def _counts(mask_BT: Tensor, weights_BT: Tensor | None, normalize_by_weights: bool) -> Tensor:
    """Per-sequence denominators [B]; 1 where a sequence has no masked token."""
    mask_BT = mask_BT.float()
    plain_B = mask_BT.sum(dim=-1)
    if weights_BT is None or not normalize_by_weights:
        return plain_B.clamp(min=1.0)
    weighted_B = (weights_BT.float() * mask_BT).sum(dim=-1)
    return torch.where(plain_B > 0, weighted_B.clamp(min=torch.finfo(torch.float32).tiny), 1.0)


def _weighted_sums(values_BT: Tensor, mask_BT: Tensor, weights_BT: Tensor | None) -> Tensor:
    """sum_t w l M per sequence [B]; masked-out positions cannot leak NaN or inf."""
    mask_BT = mask_BT.float()
    values_BT = torch.where(mask_BT > 0, values_BT.float(), 0.0)
    if weights_BT is not None:
        values_BT = values_BT * weights_BT.float()
    return (values_BT * mask_BT).sum(dim=-1)


def masked_sequence_mean(
    values_BT: Tensor,
    mask_BT: Tensor,
    weights_BT: Tensor | None = None,
    *,
    normalize_by_weights: bool = True,
) -> Tensor:
    """Per-sequence (weighted) masked mean. [B,T] -> [B].

    L_b = sum_t w l M / N_b with N_b = sum_t w M if ``normalize_by_weights`` else sum_t M
    (1 for a sequence with no masked token, whose L_b is then 0).
    """
    if values_BT.shape != mask_BT.shape:
        raise ValueError(f"values {tuple(values_BT.shape)} and mask {tuple(mask_BT.shape)} differ")
    if weights_BT is not None and weights_BT.shape != values_BT.shape:
        raise ValueError(f"weights {tuple(weights_BT.shape)} must match values {tuple(values_BT.shape)}")
    sums_B = _weighted_sums(values_BT, mask_BT, weights_BT)
    return sums_B / _counts(mask_BT, weights_BT, normalize_by_weights)


def masked_batch_loss(
    values_BT: Tensor,
    mask_BT: Tensor,
    weights_BT: Tensor | None = None,
    *,
    normalizer: str = "sequence",
    normalize_by_weights: bool = True,
) -> Tensor:
    """Scalar loss from per-token values. [B,T] -> [].

    ``sequence``: mean_b of :func:`masked_sequence_mean`. ``global``: sum_bt w l M over the
    batch's total count (weighted or not, as above; at least 1).
    """
    if normalizer == "sequence":
        return masked_sequence_mean(
            values_BT, mask_BT, weights_BT, normalize_by_weights=normalize_by_weights
        ).mean()
    if normalizer == "global":
        total = _weighted_sums(values_BT, mask_BT, weights_BT).sum()
        mask_BT = mask_BT.float()
        if weights_BT is None or not normalize_by_weights:
            return total / mask_BT.sum().clamp(min=1.0)
        count = (weights_BT.float() * mask_BT).sum()
        return total / torch.where(mask_BT.sum() > 0, count.clamp(min=torch.finfo(torch.float32).tiny), 1.0)
    raise ValueError(f"normalizer must be one of {NORMALIZERS}, got {normalizer!r}")


def masked_mean(values_BT: Tensor, mask_BT: Tensor) -> Tensor:
    """Mean over all masked tokens of the batch (for logging). [B,T] -> []."""
    return masked_batch_loss(values_BT, mask_BT, normalizer="global")
