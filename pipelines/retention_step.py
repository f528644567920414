"""The retention part of a cell's evaluate step (method.md section 6), after lm-eval has run.

For each benchmark the fine-tuned model's greedy outputs y_FT are the lm-eval predictions
(``ItemResult.prediction``); the items' prompts and gold demonstrations are read back by id from
the same records lm-eval read (same source, same option-shuffle seed). The base model is loaded
once per step and the fine-tuned model once (lm-eval ran on the folder and keeps no model
around), both in the step's device; forwards are batched by the eval batch size.

What lands in ``results.json`` (and from there in MLflow, through ``StudyTracker.log_evaluation``):
- per benchmark, in ``metrics``: ``pplret``, ``base_logprob``, ``jsd_to_base``, ``gold_logprob``,
  ``gold_perplexity`` (MLflow ``<benchmark>/<name>``); a NaN aggregate (no measurable item) is
  left out rather than logged;
- per item, in ``metrics``: ``base_logprob``, ``jsd_to_base``, ``gold_logprob``; an empty
  prediction (zero tokens) gets no ``base_logprob``/``jsd_to_base`` entry.

Base cells (choice documented here and in docs/architecture.md): gold fit is measured; their
retention is the base's own outputs under itself (a reference point, not a comparison) and their
JSD to base is 0 by definition (no second forward). The report leaves base rows out of the
retention table anyway.

Departures from the paper: none beyond those of :mod:`evaluation.retention`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

# lm-eval's option shuffle is seeded by the adapter's ``seed`` (0 in the evaluate step); the
# records read back here must carry the same shuffled prompts and gold letters.
EVAL_SEED = 0
BENCHMARK_METRICS = ("pplret", "base_logprob", "jsd_to_base", "gold_logprob", "gold_perplexity")
ITEM_METRICS = ("base_logprob", "jsd_to_base", "gold_logprob")


def measure_retention(payload: dict[str, Any], results: dict[str, dict[str, Any]],
                      logger: logging.Logger) -> dict[str, Any]:
    """Per benchmark a ``RetentionReport`` for the plain lm-eval ``results`` of this step."""
    import torch

    from evaluation.retention import retention_report
    from unisd_core.models.zoo import load_model_and_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if device == "cuda" else "float32"  # log-softmax is float32 regardless
    base_model, tokenizer = load_model_and_tokenizer(payload["model"], dtype=dtype, device=device)
    tuned_model = None
    if payload.get("model_dir") is not None:
        # The trained folder's tokenizer is the one lm-eval formatted prompts with.
        tuned_model, tokenizer = load_model_and_tokenizer(payload["model_dir"], dtype=dtype,
                                                          device=device)
    batch_size = int(payload["eval"]["batch_size"])
    reports: dict[str, Any] = {}
    try:
        for benchmark, result in results.items():
            records = _records_by_id(benchmark, payload.get("sources") or {})
            items = result["items"]
            missing = [item["item_id"] for item in items if item["item_id"] not in records]
            if missing:
                raise ValueError(f"retention: {len(missing)} {benchmark} items (e.g. "
                                 f"{missing[0]!r}) are not in the records lm-eval read")
            chosen = [records[item["item_id"]] for item in items]
            reports[benchmark] = retention_report(
                base_model, tuned_model, tokenizer, [item["item_id"] for item in items],
                [record.prompt for record in chosen], [record.demonstration for record in chosen],
                [item["prediction"] for item in items], batch_size=batch_size)
            logger.info("retention %s: %s", benchmark, reports[benchmark].summary)
    finally:
        del base_model, tuned_model
        if device == "cuda":
            torch.cuda.empty_cache()
    return reports


def _records_by_id(benchmark: str, sources: dict[str, str]) -> dict[str, Any]:
    from evaluation.tasks.utils import resolve_source
    from unisd_core.data.datasets import load_records

    source = resolve_source(benchmark, {"sources": sources})
    return {record.id: record for record in load_records(benchmark, "test", source,
                                                         seed=EVAL_SEED)}


def merge_retention(results: dict[str, dict[str, Any]], reports: dict[str, Any]) -> None:
    """Write the reports into the plain results in place (finite values only, see module doc)."""
    for benchmark, report in reports.items():
        result = results[benchmark]
        result.setdefault("metrics", {}).update(_finite({name: report.summary[name]
                                          for name in BENCHMARK_METRICS}))
        for item in result["items"]:
            measured = report.items.get(item["item_id"], {})
            item.setdefault("metrics", {}).update(_finite({name: measured.get(name, math.nan)
                                            for name in ITEM_METRICS}))


def _finite(values: dict[str, float]) -> dict[str, float]:
    return {name: float(value) for name, value in values.items() if math.isfinite(value)}
