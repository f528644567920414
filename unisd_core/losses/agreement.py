"""Multi-teacher agreement weights (method.md 2.1): how much K auxiliary contexts disagree about
each sampled token, turned into a loss weight.

Inputs are the sampled-token log-probs a_kt of y under the K contexts (frozen base model, tau = 1):
a [K,B,T] tensor. Weights are constants (computed under ``no_grad``): the contexts only weight the
loss, the divergence target stays the demonstration teacher.

- token granularity: d_t = unbiased variance over k (or max - min); s = max(q-quantile of d over
  masked tokens, 1e-6); w_t = max(1 / (1 + gamma min(d_t / s, max_ratio)), floor). The loss is
  normalised by sum_t w M.
- sequence granularity: a_kb = masked mean over t; D_b = population variance (or range) over k;
  w_b = max(exp(-gamma D_b), 1e-6). The loss is normalised by the *unweighted* count, unless
  ``sequence_parity`` (the authors' weighted normaliser, under which w_b cancels).

Departure from the authors' code: the sequence-level default normaliser (see above), so the
component actually does something.
"""

from __future__ import annotations

import torch
from torch import Tensor

from unisd_core.config import AgreementConfig

SCALE_FLOOR = 1e-6
SEQUENCE_WEIGHT_FLOOR = 1e-6


def _check(logprobs_KBT: Tensor, mask_BT: Tensor) -> None:
    if logprobs_KBT.dim() != 3 or logprobs_KBT.shape[1:] != mask_BT.shape:
        raise ValueError(
            f"agreement log-probs must be [K,B,T] matching mask {tuple(mask_BT.shape)}, "
            f"got {tuple(logprobs_KBT.shape)}"
        )
    if logprobs_KBT.shape[0] < 2:
        raise ValueError(f"agreement needs K >= 2 contexts, got {logprobs_KBT.shape[0]}")


def _spread_over_k(values_KX: Tensor, statistic: str, *, unbiased: bool) -> Tensor:
    """Variance (unbiased or population) or range over the leading K axis."""
    if statistic == "var":
        return values_KX.var(dim=0, correction=1 if unbiased else 0)
    if statistic == "range":
        return values_KX.amax(dim=0) - values_KX.amin(dim=0)
    raise ValueError(f"statistic must be 'var' or 'range', got {statistic!r}")


def token_disagreement(logprobs_KBT: Tensor, mask_BT: Tensor, *, statistic: str = "var") -> Tensor:
    """d_t: unbiased variance or range over k of a_kt, 0 outside the mask. [K,B,T] -> [B,T]."""
    _check(logprobs_KBT, mask_BT)
    mask_BT = mask_BT.bool()
    safe_KBT = torch.where(mask_BT, logprobs_KBT.detach().float(), 0.0)
    return torch.where(mask_BT, _spread_over_k(safe_KBT, statistic, unbiased=True), 0.0)


@torch.no_grad()
def token_agreement_weights(
    logprobs_KBT: Tensor,
    mask_BT: Tensor,
    *,
    gamma: float,
    statistic: str = "var",
    quantile: float = 0.95,
    max_ratio: float = 10.0,
    floor: float = 0.01,
) -> tuple[Tensor, dict[str, float]]:
    """Token weights w_t (method.md 2.1, token granularity). [K,B,T], [B,T] -> ([B,T], stats).

    stats: ``disagreement_mean`` (masked mean of d), ``disagreement_scale`` (s).
    """
    disagreement_BT = token_disagreement(logprobs_KBT, mask_BT, statistic=statistic)
    selected = disagreement_BT[mask_BT.bool()]
    if selected.numel() == 0:
        scale = torch.tensor(SCALE_FLOOR, device=disagreement_BT.device)
    else:
        scale = torch.quantile(selected, quantile).clamp(min=SCALE_FLOOR)
    ratio_BT = (disagreement_BT / scale).clamp(max=max_ratio)
    weights_BT = (1.0 / (1.0 + gamma * ratio_BT)).clamp(min=floor)
    mean_d = selected.mean() if selected.numel() else torch.tensor(0.0)
    return weights_BT, {"disagreement_mean": float(mean_d), "disagreement_scale": float(scale)}


def sequence_disagreement(logprobs_KBT: Tensor, mask_BT: Tensor, *, statistic: str = "var") -> Tensor:
    """D_b: population variance or range over k of the masked-mean log-prob a_kb. -> [B]."""
    _check(logprobs_KBT, mask_BT)
    mask_BT = mask_BT.float()
    safe_KBT = torch.where(mask_BT.bool(), logprobs_KBT.detach().float(), 0.0)
    means_KB = (safe_KBT * mask_BT).sum(dim=-1) / mask_BT.sum(dim=-1).clamp(min=1.0)
    return _spread_over_k(means_KB, statistic, unbiased=False)


@torch.no_grad()
def sequence_agreement_weights(
    logprobs_KBT: Tensor, mask_BT: Tensor, *, gamma: float, statistic: str = "var"
) -> tuple[Tensor, dict[str, float]]:
    """Sequence weights w_b = max(exp(-gamma D_b), 1e-6). [K,B,T], [B,T] -> ([B], stats)."""
    disagreement_B = sequence_disagreement(logprobs_KBT, mask_BT, statistic=statistic)
    weights_B = torch.exp(-gamma * disagreement_B).clamp(min=SEQUENCE_WEIGHT_FLOOR)
    return weights_B, {"disagreement_mean": float(disagreement_B.mean())}


def agreement_weights(
    logprobs_KBT: Tensor, mask_BT: Tensor, config: AgreementConfig
) -> tuple[Tensor, bool, dict[str, float]]:
    """Weights per token as ``config`` says, and whether to normalise by the weighted count.

    Returns (weights_BT, normalize_by_weights, stats); sequence weights are broadcast over T.
    stats add ``weight_mean`` and ``weight_min`` (over masked tokens, or over sequences).
    """
    if config.granularity == "token":
        weights_BT, stats = token_agreement_weights(
            logprobs_KBT, mask_BT, gamma=config.gamma, statistic=config.statistic,
            quantile=config.quantile, max_ratio=config.max_ratio, floor=config.weight_floor,
        )
        selected = weights_BT[mask_BT.bool()]
        normalize_by_weights = True
    else:
        weights_B, stats = sequence_agreement_weights(
            logprobs_KBT, mask_BT, gamma=config.gamma, statistic=config.statistic
        )
        selected = weights_B
        weights_BT = weights_B[:, None].expand(mask_BT.shape)
        normalize_by_weights = config.sequence_parity
    if selected.numel():
        stats = {**stats, "weight_mean": float(selected.mean()), "weight_min": float(selected.min())}
    return weights_BT, normalize_by_weights, stats
