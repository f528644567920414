"""Metrics beyond accuracy (method.md section 6): gold fit, retention (PPLret), JSD to base, and
paired comparisons between two runs.

Pure functions on tensors / per-item numbers first; thin model helpers after them, which
teacher-force completions given chat-formatted prompts (the same ``chat_prompt`` as training and
evaluation) and feed the pure functions. All log-probs are natural-log, float32.

Choices the paper leaves open (documented departures):
- Gold fit pools tokens: mean log-prob = total log-prob / total tokens over the eval set, and
  perplexity = exp(-that). Retention follows the paper's per-item definition: per-item mean
  log-prob, then the mean of those, and PPLret = mean over items of exp(-per-item mean).
- Completions are tokenized on their own (no special tokens) and appended to the prompt ids, so
  base and fine-tuned model see identical token sequences; no EOS is appended.
- An item whose completion has no token gets NaN and is left out of every mean.
- Paired comparisons count strict inequalities over the items both runs share; ties count
  against "lower"/"higher".
- :func:`retention_report` (what the pipeline's evaluate step calls) shares one base forward
  between retention and JSD. With no fine-tuned model (the base cell), the evaluated model is the
  base itself: its retention is its own outputs under itself and its JSD is 0 by definition.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from unisd_core.losses.divergences import divergence_from_log_probs

LN2 = math.log(2.0)


def token_logprobs(logits_BTV: torch.Tensor, targets_BT: torch.Tensor) -> torch.Tensor:
    """log p(target) per position (B, T), via a float32 log-softmax over the vocabulary."""
    log_probs_BTV = torch.log_softmax(logits_BTV.float(), dim=-1)
    return log_probs_BTV.gather(-1, targets_BT.long().unsqueeze(-1)).squeeze(-1)


def masked_mean(values_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """Per-row mean over masked positions (B,); NaN for a row with no position."""
    mask_BT = mask_BT.to(values_BT.dtype)
    counts_B = mask_BT.sum(-1)
    sums_B = (values_BT * mask_BT).sum(-1)
    return torch.where(counts_B > 0, sums_B / counts_B.clamp_min(1), torch.nan)


def token_jsd(log_p_BTV: torch.Tensor, log_q_BTV: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence per position (B, T), natural log, in [0, ln 2].

    JSD = 1/2 KL(p || m) + 1/2 KL(q || m), m = (p + q) / 2: the alpha = 0.5 case of the one
    divergence implementation (``unisd_core.losses.divergences``), clamped against rounding.
    """
    jsd_BT = divergence_from_log_probs(log_q_BTV.float(), log_p_BTV.float(), 0.5)
    return jsd_BT.clamp(0.0, LN2)


def perplexity(mean_logprob: float) -> float:
    """exp(-mean log-prob)."""
    return math.exp(-mean_logprob)


def _finite(values: Sequence[float]) -> list[float]:
    return [value for value in values if not math.isnan(value)]


def pplret(item_mean_logprobs: Sequence[float]) -> float:
    """PPLret = mean over items of exp(-item mean log-prob) (NaN items skipped)."""
    kept = _finite(item_mean_logprobs)
    return sum(perplexity(value) for value in kept) / len(kept) if kept else math.nan


def mean_of(values: Sequence[float]) -> float:
    kept = _finite(values)
    return sum(kept) / len(kept) if kept else math.nan


def fraction_lower(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Fraction of the items both runs have where ``a[item] < b[item]`` (e.g. JSD to base)."""
    shared = [key for key in a if key in b and not math.isnan(a[key]) and not math.isnan(b[key])]
    if not shared:
        return math.nan
    return sum(a[key] < b[key] for key in shared) / len(shared)


def fraction_higher(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Fraction of shared items where ``a[item] > b[item]`` (e.g. base log-prob of the output)."""
    return fraction_lower(b, a)


# ----------------------------------------------------------------------------- model helpers


@dataclass(frozen=True)
class FitResult:
    """Per-item mean log-probs and the aggregates of one (model, completions) pair."""

    item_mean_logprobs: tuple[float, ...]
    mean_logprob: float
    perplexity: float


def _encode(tokenizer: Any, prompts: Sequence[str], completions: Sequence[str]):
    from unisd_core.prompts import chat_prompt

    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    pairs = []
    for prompt, completion in zip(prompts, completions):
        prompt_ids = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        pairs.append((list(prompt_ids), list(completion_ids)))
    return pairs


def _batch_log_probs(model: Any, pairs, pad_id: int):
    """Log-softmax (float32) at the positions predicting each completion: list of (T_i, V)."""
    device = next(model.parameters()).device
    width = max(len(p) + len(c) for p, c in pairs)
    input_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(pairs), width), dtype=torch.long)
    for row, (prompt_ids, completion_ids) in enumerate(pairs):
        ids = prompt_ids + completion_ids
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
    with torch.no_grad():
        logits_BTV = model(
            input_ids=input_ids.to(device), attention_mask=attention.to(device)
        ).logits
    outputs = []
    for row, (prompt_ids, completion_ids) in enumerate(pairs):
        start = len(prompt_ids) - 1  # the logit at position t predicts token t + 1
        span = logits_BTV[row, start : start + len(completion_ids)]
        outputs.append(torch.log_softmax(span.float(), dim=-1).cpu())
    return outputs


def _per_item_log_probs(model, tokenizer, prompts, completions, batch_size):
    pairs = _encode(tokenizer, prompts, completions)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        for (_, completion_ids), log_probs_TV in zip(chunk, _batch_log_probs(model, chunk, pad_id)):
            yield torch.tensor(completion_ids, dtype=torch.long), log_probs_TV


def completion_logprobs(
    model: Any, tokenizer: Any, prompts: Sequence[str], completions: Sequence[str], *,
    batch_size: int = 4,
) -> list[torch.Tensor]:
    """Per-token log p_model(completion | chat(prompt)) of each item: a list of (T_i,) tensors."""
    was_training = model.training
    model.eval()
    try:
        return [
            log_probs_TV.gather(-1, ids_T.unsqueeze(-1)).squeeze(-1)
            for ids_T, log_probs_TV in _per_item_log_probs(
                model, tokenizer, prompts, completions, batch_size
            )
        ]
    finally:
        model.train(was_training)


def gold_fit(model, tokenizer, prompts, gold_completions, *, batch_size: int = 4) -> FitResult:
    """Gold-completion fit: pooled mean per-token log p(c | x) over the set and its perplexity."""
    per_item = completion_logprobs(model, tokenizer, prompts, gold_completions, batch_size=batch_size)
    total_tokens = sum(item.numel() for item in per_item)
    pooled = sum(float(item.sum()) for item in per_item) / total_tokens if total_tokens else math.nan
    return FitResult(
        tuple(float(item.mean()) if item.numel() else math.nan for item in per_item),
        pooled,
        perplexity(pooled) if total_tokens else math.nan,
    )


def retention(base_model, tokenizer, prompts, finetuned_outputs, *, batch_size: int = 4) -> FitResult:
    """Retention: per-item mean log p_base(y_FT | x), their mean, and PPLret (see module doc)."""
    per_item = completion_logprobs(
        base_model, tokenizer, prompts, finetuned_outputs, batch_size=batch_size
    )
    item_means = tuple(float(item.mean()) if item.numel() else math.nan for item in per_item)
    return FitResult(item_means, mean_of(item_means), pplret(item_means))


def jsd_to_base(
    base_model, finetuned_model, tokenizer, prompts, finetuned_outputs, *, batch_size: int = 4
) -> list[float]:
    """Per item: mean over y_FT's tokens of JSD(p_base, p_FT), both teacher-forced on y_FT."""
    states = [(model, model.training) for model in (base_model, finetuned_model)]
    for model, _ in states:
        model.eval()
    try:
        base_items = _per_item_log_probs(base_model, tokenizer, prompts, finetuned_outputs, batch_size)
        tuned_items = _per_item_log_probs(
            finetuned_model, tokenizer, prompts, finetuned_outputs, batch_size
        )
        values = []
        for (_, base_TV), (_, tuned_TV) in zip(base_items, tuned_items):
            jsd_T = token_jsd(base_TV.unsqueeze(0), tuned_TV.unsqueeze(0))[0]
            values.append(float(jsd_T.mean()) if jsd_T.numel() else math.nan)
        return values
    finally:
        for model, was_training in states:
            model.train(was_training)


@dataclass(frozen=True)
class RetentionReport:
    """Section 6 metrics of one (evaluated model, benchmark): per item (by item id) and summary.

    ``items[id]`` holds ``base_logprob`` (mean log p_base(y | x)), ``jsd_to_base`` and
    ``gold_logprob`` (mean log p_model(c | x)), NaN where a completion has no token.
    ``summary`` holds ``pplret``, ``base_logprob`` (mean of item means), ``jsd_to_base`` (mean
    of item JSDs), ``gold_logprob`` (pooled, as :func:`gold_fit`) and ``gold_perplexity``.
    """

    items: dict[str, dict[str, float]]
    summary: dict[str, float]


def _base_logprob_and_jsd(base_model, finetuned_model, tokenizer, prompts, outputs, batch_size):
    """Per item (mean log p_base(y), mean JSD(p_base, p_FT)): one forward per model per batch."""
    pairs = _encode(tokenizer, prompts, outputs)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    base_values, jsd_values = [], []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        base_spans = _batch_log_probs(base_model, chunk, pad_id)
        tuned_spans = (_batch_log_probs(finetuned_model, chunk, pad_id)
                       if finetuned_model is not None else base_spans)
        for (_, completion_ids), base_TV, tuned_TV in zip(chunk, base_spans, tuned_spans):
            if not completion_ids:  # an empty output: nothing to measure, left out of means
                base_values.append(math.nan)
                jsd_values.append(math.nan)
                continue
            ids_T = torch.tensor(completion_ids, dtype=torch.long)
            base_values.append(float(base_TV.gather(-1, ids_T.unsqueeze(-1)).mean()))
            if finetuned_model is None:
                jsd_values.append(0.0)  # the base against itself: zero by definition
            else:
                jsd_T = token_jsd(base_TV.unsqueeze(0), tuned_TV.unsqueeze(0))[0]
                jsd_values.append(float(jsd_T.mean()))
    return base_values, jsd_values


def retention_report(
    base_model, finetuned_model, tokenizer, item_ids: Sequence[str], prompts: Sequence[str],
    gold_completions: Sequence[str], finetuned_outputs: Sequence[str], *, batch_size: int = 4,
) -> RetentionReport:
    """Gold fit, retention and JSD to base for one benchmark's items (see :class:`RetentionReport`).

    ``finetuned_model`` None means the evaluated model is ``base_model`` itself (a base cell).
    Prompts are raw Record prompts (chat-formatted here); outputs are the greedy predictions.
    """
    if len(item_ids) != len(prompts):
        raise ValueError(f"{len(item_ids)} item ids but {len(prompts)} prompts")
    evaluated = finetuned_model if finetuned_model is not None else base_model
    states = [(model, model.training) for model in (base_model, evaluated)]
    for model, _ in states:
        model.eval()
    try:
        base_values, jsd_values = _base_logprob_and_jsd(
            base_model, finetuned_model, tokenizer, prompts, finetuned_outputs, batch_size)
        gold = gold_fit(evaluated, tokenizer, prompts, gold_completions, batch_size=batch_size)
    finally:
        for model, was_training in states:
            model.train(was_training)
    items = {
        item_id: {"base_logprob": base, "jsd_to_base": jsd, "gold_logprob": gold_item}
        for item_id, base, jsd, gold_item in zip(
            item_ids, base_values, jsd_values, gold.item_mean_logprobs)
    }
    summary = {"pplret": pplret(base_values), "base_logprob": mean_of(base_values),
               "jsd_to_base": mean_of(jsd_values), "gold_logprob": gold.mean_logprob,
               "gold_perplexity": gold.perplexity}
    return RetentionReport(items, summary)
