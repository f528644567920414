"""Per-token divergence clipping (method.md 2.5): static cap or micro-batch quantile cap.

Applied to l_t right after the vocabulary sum, before any weighting or normalisation. Clipping is
truncation: a token whose divergence exceeds the cap contributes the constant cap and gets zero
gradient. A token exactly at the cap keeps its full gradient (``torch.minimum`` would give it half,
which is why the clip is written with ``torch.where``).

Departures from the paper: none. The quantile uses linear interpolation (numpy's default) over the
masked tokens of the micro-batch; with no masked token the cap is the 1e-6 floor.
"""

from __future__ import annotations

import torch
from torch import Tensor

from unisd_core.config import ClippingConfig

CAP_FLOOR = 1e-6


def quantile_cap(divergence_BT: Tensor, mask_BT: Tensor, quantile: float) -> Tensor:
    """C = max(quantile_q of l over masked tokens, 1e-6), without gradient. [B,T] -> [] float32."""
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    with torch.no_grad():
        selected = divergence_BT.detach().float()[mask_BT.bool()]
        if selected.numel() == 0:
            return torch.tensor(CAP_FLOOR, device=divergence_BT.device)
        return torch.quantile(selected, quantile).clamp(min=CAP_FLOOR)


def clip_at(divergence_BT: Tensor, cap: Tensor | float) -> Tensor:
    """min(l, C) with zero gradient on tokens strictly above C. [B,T] -> [B,T]."""
    cap_tensor = torch.as_tensor(cap, dtype=divergence_BT.dtype, device=divergence_BT.device)
    return torch.where(divergence_BT > cap_tensor, cap_tensor.detach(), divergence_BT)


def clip_divergence(
    divergence_BT: Tensor, mask_BT: Tensor, config: ClippingConfig
) -> tuple[Tensor, dict[str, float]]:
    """Clip per-token divergences as ``config`` says. [B,T] -> ([B,T], stats).

    stats: ``clipped_fraction`` (share of masked tokens above the cap) and ``cap``.
    """
    if config.mode == "static":
        cap = torch.tensor(float(config.cap), device=divergence_BT.device)
    else:
        cap = quantile_cap(divergence_BT, mask_BT, config.quantile)
    clipped_BT = clip_at(divergence_BT, cap)
    with torch.no_grad():
        mask_BT = mask_BT.bool()
        above = (divergence_BT.detach() > cap) & mask_BT
        fraction = above.sum().float() / mask_BT.sum().clamp(min=1).float()
    return clipped_BT, {"clipped_fraction": float(fraction), "cap": float(cap)}
