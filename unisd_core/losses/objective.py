"""The one place where the loss of a micro-step is composed (method.md 2.6).

Order: per-token divergence -> clip -> agreement weights -> normalise -> + lambda_c L_con ->
+ lambda_fm L_fm. A component that is ``None`` in :class:`ComponentsConfig` is never computed.
EMA is not a loss term (the teacher module owns it). :func:`sft_loss` is the token NLL of the SFT
and SSD baselines with the same reduction.

The returned loss is *not* divided by the gradient-accumulation count: the training loop does that.
Teacher tensors (logits, hidden states, agreement and bad-teacher log-probs) must arrive detached.

Departures from the paper: feature matching in ``repr`` mode is L_fm alone, so it refuses to run
together with the other loss components (agreement, contrastive, clipping) instead of silently
ignoring them; divergence and entropy are still logged (without gradient). :func:`sft_loss` takes
the run's normaliser: per-sequence mean NLL by default, where most SFT code takes the token mean
(``normalizer="global"``); method.md does not say (docs/departures.md). With ``global`` the
contrastive and feature-matching terms are token means too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from unisd_core.config import ComponentsConfig
from unisd_core.losses.agreement import agreement_weights
from unisd_core.losses.clipping import clip_divergence
from unisd_core.losses.contrastive import contrastive_loss
from unisd_core.losses.divergences import sampled_token_logprobs, token_divergence, token_entropy
from unisd_core.losses.features import feature_matching_loss
from unisd_core.losses.reductions import NORMALIZERS, masked_batch_loss, masked_mean


@dataclass(frozen=True)
class LossOutput:
    """``loss``: scalar tensor to backpropagate; ``metrics``: floats to log (names below)."""

    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def check_component_inputs(components: ComponentsConfig, mask_BT: Tensor, normalizer: str, **tensors) -> None:
    """Every enabled component has its inputs; every tensor matches the [B,T] mask."""
    _require(normalizer in NORMALIZERS, f"normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
    needs = {
        "agreement": ("agreement_logprobs_KBT",),
        "contrastive": ("bad_teacher_logprobs_BT",),
        "feature_matching": ("student_hidden_BTH", "teacher_hidden_BTH"),
    }
    for name, arguments in needs.items():
        if getattr(components, name) is not None:
            for argument in arguments:
                _require(tensors[argument] is not None, f"component {name!r} is on but {argument} is None")
    fm = components.feature_matching
    if fm is not None and fm.mode == "repr":
        others = [n for n in ("agreement", "contrastive", "clipping") if getattr(components, n) is not None]
        _require(not others, f"feature_matching mode 'repr' is L_fm alone; it cannot combine with {others}")
    shapes = {"student_logits_BTV": 2, "teacher_logits_BTV": 2, "completion_ids_BT": 2,
              "bad_teacher_logprobs_BT": 2, "student_hidden_BTH": 2, "teacher_hidden_BTH": 2}
    for argument, rank in shapes.items():
        tensor = tensors.get(argument)
        if tensor is not None:
            _require(tuple(tensor.shape[:rank]) == tuple(mask_BT.shape),
                     f"{argument} has shape {tuple(tensor.shape)}; its first dims must be the mask's "
                     f"[B,T]={tuple(mask_BT.shape)}")


def _divergence_term(student_logits_BTV, teacher_logits_BTV, mask_BT, components, alpha,
                     temperature, normalizer, agreement_logprobs_KBT, metrics) -> Tensor:
    """Divergence -> clip -> agreement weights -> normalise; fills the matching metrics."""
    divergence_BT = token_divergence(student_logits_BTV, teacher_logits_BTV, alpha=alpha, temperature=temperature)
    metrics["divergence/mean"] = float(masked_mean(divergence_BT.detach(), mask_BT))
    selected = divergence_BT.detach()[mask_BT.bool()]
    metrics["divergence/max"] = float(selected.max()) if selected.numel() else 0.0
    if components.clipping is not None:
        divergence_BT, stats = clip_divergence(divergence_BT, mask_BT, components.clipping)
        metrics.update({f"clipping/{k}": v for k, v in stats.items()})
    weights_BT, normalize_by_weights = None, True
    if components.agreement is not None:
        weights_BT, normalize_by_weights, stats = agreement_weights(
            agreement_logprobs_KBT, mask_BT, components.agreement
        )
        metrics.update({f"agreement/{k}": v for k, v in stats.items()})
    return masked_batch_loss(divergence_BT, mask_BT, weights_BT, normalizer=normalizer,
                             normalize_by_weights=normalize_by_weights)


def distillation_loss(
    student_logits_BTV: Tensor,
    teacher_logits_BTV: Tensor,
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
    student_hidden_BTH: Tensor | None = None,
    teacher_hidden_BTH: Tensor | None = None,
) -> LossOutput:
    """Self-distillation loss of one micro-batch with the enabled components (method.md 2.6).

    Shapes: logits [B,T,V] (position t predicts completion_ids[:, t]); mask [B,T] (1 on generated
    tokens incl. the final EOS); agreement log-probs [K,B,T] at tau = 1; bad-teacher log-probs
    [B,T] at ``temperature``; usable [B] bool; hidden states [B,T,H].
    Metrics: ``loss``, ``tokens``, ``divergence/{mean,max}`` (before clipping), ``divergence/loss``,
    ``student_entropy``, ``clipping/{clipped_fraction,cap}``, ``agreement/{weight_mean,
    weight_min,disagreement_mean[,disagreement_scale]}``, ``contrastive/{loss,weighted,usable,
    margin_mean,active_fraction,positive_fraction}``, ``feature_matching/{loss,weighted}`` (enabled parts only).
    """
    check_component_inputs(
        components, mask_BT, normalizer, student_logits_BTV=student_logits_BTV,
        teacher_logits_BTV=teacher_logits_BTV, completion_ids_BT=completion_ids_BT,
        agreement_logprobs_KBT=agreement_logprobs_KBT, bad_teacher_logprobs_BT=bad_teacher_logprobs_BT,
        student_hidden_BTH=student_hidden_BTH, teacher_hidden_BTH=teacher_hidden_BTH,
    )
    metrics: dict[str, float] = {"tokens": float(mask_BT.float().sum())}
    with torch.no_grad():
        entropy_BT = token_entropy(student_logits_BTV, temperature=temperature)
        metrics["student_entropy"] = float(masked_mean(entropy_BT, mask_BT))
    fm = components.feature_matching
    if fm is not None and fm.mode == "repr":
        with torch.no_grad():
            divergence_BT = token_divergence(student_logits_BTV, teacher_logits_BTV, alpha=alpha,
                                             temperature=temperature)
            metrics["divergence/mean"] = float(masked_mean(divergence_BT, mask_BT))
        loss = feature_matching_loss(student_hidden_BTH, teacher_hidden_BTH, mask_BT, normalizer=normalizer)
        metrics.update(term_metrics("feature_matching", loss, 1.0))
        metrics["loss"] = float(loss.detach())
        return LossOutput(loss=loss, metrics=metrics)
    loss = _divergence_term(student_logits_BTV, teacher_logits_BTV, mask_BT, components, alpha,
                            temperature, normalizer, agreement_logprobs_KBT, metrics)
    metrics["divergence/loss"] = float(loss.detach())
    if components.contrastive is not None:
        config = components.contrastive
        student_BT = sampled_token_logprobs(student_logits_BTV, completion_ids_BT, temperature=temperature)
        good_BT = sampled_token_logprobs(teacher_logits_BTV, completion_ids_BT, temperature=temperature)
        term, stats = contrastive_loss(student_BT, good_BT, bad_teacher_logprobs_BT, mask_BT,
                                       margin=config.margin, usable_B=contrastive_usable_B,
                                       normalizer=normalizer)
        loss = loss + config.weight * term
        metrics.update({f"contrastive/{k}": v for k, v in stats.items()})
        metrics.update(term_metrics("contrastive", term, config.weight))
    if fm is not None:
        term = feature_matching_loss(student_hidden_BTH, teacher_hidden_BTH, mask_BT, normalizer=normalizer)
        loss = loss + fm.weight * term
        metrics.update(term_metrics("feature_matching", term, fm.weight))
    metrics["loss"] = float(loss.detach())
    return LossOutput(loss=loss, metrics=metrics)


def term_metrics(name: str, term: Tensor | float, weight: float) -> dict[str, float]:
    """``{name}/loss`` (the unweighted term) and ``{name}/weighted`` (its share of the loss)."""
    value = float(term.detach()) if isinstance(term, Tensor) else float(term)
    return {f"{name}/loss": value, f"{name}/weighted": weight * value}


def sft_loss(
    student_logits_BTV: Tensor, target_ids_BT: Tensor, mask_BT: Tensor, *, normalizer: str = "sequence"
) -> LossOutput:
    """Token NLL (tau = 1) of the targets, reduced like the distillation loss. -> LossOutput.

    Shapes: logits [B,T,V] (position t predicts target_ids[:, t]); mask [B,T].
    Metrics: ``loss``, ``tokens``, ``nll/mean`` (mean over all masked tokens).
    """
    _require(normalizer in NORMALIZERS, f"normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
    nll_BT = -sampled_token_logprobs(student_logits_BTV, target_ids_BT, temperature=1.0)
    loss = masked_batch_loss(nll_BT, mask_BT, normalizer=normalizer)
    metrics = {"loss": float(loss.detach()), "tokens": float(mask_BT.float().sum()),
               "nll/mean": float(masked_mean(nll_BT.detach(), mask_BT))}
    return LossOutput(loss=loss, metrics=metrics)
