"""Hooks of the six ``unisd_*`` lm-eval tasks: data loading, prompt, scoring (method.md 5).

lm-eval loads this file by path (``!function utils.x``), both from our adapter and from its own
command line, so everything here is a plain function of lm-eval's arguments:

- ``load_unisd_dataset(**kwargs)`` is the ``custom_dataset`` hook. lm-eval calls it with the
  task's ``dataset_kwargs`` (``benchmark``) merged with the run metadata (``--metadata`` JSON on
  the command line, ``TaskManager(metadata=...)`` from Python; the model arguments are mixed in
  too and ignored). Keys read: ``sources`` ({benchmark: source}) or ``source`` (one source for
  this task), ``shuffle_seed`` (the seeded option shuffle, default 0) and ``allow_sample``. A
  source is a local JSONL path in the hub schema, a hub id, or ``"hub"`` for the benchmark's
  canonical hub id. With no source the task would score only the 16-18 items of the shipped
  sample, which is not the benchmark: it refuses (a ``ValueError`` naming the fix) unless
  ``allow_sample`` is true, and then logs a WARNING that the scores are the sample's. (The
  project's own adapter passes ``allow_sample`` for studies without ``eval_sources``: the CPU
  demo and tests run on the samples by design.) The file is read by
  :func:`unisd_core.data.datasets.load_records`, so paths never resolve against lm-eval's
  working directory in a surprising way: pass absolute paths.
- ``doc_to_text`` is the Record prompt x; with ``--apply_chat_template`` lm-eval wraps it in the
  model's chat template as one user turn, exactly :func:`unisd_core.prompts.chat_prompt`.
- ``process_results`` scores with :func:`evaluation.scorers.score_output` and returns only the
  metrics. The item's record (id, extracted answer, reason) is written into the document as
  ``doc["unisd_item"]``: lm-eval logs that same document object with every sample
  (``--log_samples``), so per-item records survive lm-eval without posing as a metric.
- Few-shot and chat template: the protocol is zero-shot on a chat-formatted prompt (method.md 5).
  Every task pins ``num_fewshot: 0``, so lm-eval ignores ``--num_fewshot`` (it says so at INFO
  level); run with ``--apply_chat_template``, without it the model sees the bare prompt and the
  scores are not the protocol's (lm-eval gives a task no way to see the flag, so this cannot be
  checked here). ``--tasks unisd`` runs the paper's six (the ``unisd`` group in ``unisd.yaml``).

Departure from lm-eval habits: no built-in dataset download and no built-in code metrics (they
need the hub); code is scored by our sandbox.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from evaluation.sandbox_isolation import isolation_mode
from evaluation.scorers import CODE, score_output
from unisd_core.data.datasets import load_records

HUB_IDS: dict[str, str] = {
    "scienceqa": "derek-thomas/ScienceQA",
    "cose": "Salesforce/cos_e",
    "mbpp": "google-research-datasets/mbpp",
    "gpqa": "Idavidrein/gpqa",
    "humaneval": "openai/openai_humaneval",
}
CODE_TIMEOUT_S = 10.0
LOGGER = logging.getLogger("unisd.tasks")
# Benchmarks whose default data is the whole generated benchmark, not a sample of a real one.
GENERATED = frozenset({"synthetic"})


def resolve_source(benchmark: str, options: dict[str, Any]) -> str | None:
    """The data source of ``benchmark`` from the task metadata; None = the shipped sample."""
    sources = options.get("sources") or {}
    if isinstance(sources, str):
        sources = json.loads(sources)
    source = sources.get(benchmark, options.get("source"))
    if source == "hub":
        if benchmark not in HUB_IDS:
            raise ValueError(f"{benchmark} has no canonical hub copy; pass a local JSONL path")
        return HUB_IDS[benchmark]
    return str(source) if source else None


def load_unisd_dataset(**options: Any):
    """``custom_dataset`` hook: the eval split of ``options['benchmark']`` as a DatasetDict."""
    import datasets

    benchmark = options["benchmark"]
    if benchmark in CODE:  # refuse before generation when code cannot be isolated here
        isolation_mode()
    source = resolve_source(benchmark, options)
    records = load_records(benchmark, "test", source, seed=int(options.get("shuffle_seed", 0)))
    if source is None and benchmark not in GENERATED:
        _check_sample_allowed(benchmark, len(records), options)
    rows = [
        {
            "id": record.id,
            "benchmark": record.benchmark,
            "prompt": record.prompt,
            "answer": record.answer,
            "demonstration": record.demonstration,
            # one JSON column: metadata differs per benchmark and Arrow wants one schema
            "metadata_json": json.dumps(record.metadata),
        }
        for record in records
    ]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def _check_sample_allowed(benchmark: str, count: int, options: dict[str, Any]) -> None:
    """Refuse to score the shipped sample silently; with ``allow_sample``, say so loudly."""
    allowed = options.get("allow_sample")
    if isinstance(allowed, str):
        allowed = allowed.strip().lower() in ("1", "true", "yes")
    if not allowed:
        hub = f", or \"hub\" for {HUB_IDS[benchmark]}" if benchmark in HUB_IDS else ""
        example = json.dumps({"sources": {benchmark: f"/abs/path/{benchmark}_test.jsonl"}})
        raise ValueError(
            f"unisd_{benchmark}: no data source given, and the fallback is the {count}-item "
            f"sample shipped with unisd, not the benchmark. Pass --metadata '{example}' (a JSONL "
            f"in the hub schema{hub}), or add \"allow_sample\": true to the --metadata JSON to "
            "score the sample knowingly.")
    LOGGER.warning("unisd_%s: scoring the %d-item SHIPPED SAMPLE, not the %s benchmark "
                   "(no source in --metadata; allow_sample is set)", benchmark, count, benchmark)


def doc_to_text(doc: dict[str, Any]) -> str:
    return doc["prompt"]


def doc_to_target(doc: dict[str, Any]) -> str:
    return doc["answer"]


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    """Metric values of one item; its record (id, extracted, reason) goes to ``doc``."""
    prediction = results[0] if results else ""
    outcome = score_output(
        doc["benchmark"],
        doc["answer"],
        json.loads(doc["metadata_json"]),
        prediction,
        timeout_s=CODE_TIMEOUT_S,
    )
    # lm-eval logs this very doc object with the sample (see the module docstring)
    doc["unisd_item"] = {"item_id": doc["id"], "extracted": outcome.extracted,
                         "reason": outcome.reason}
    return dict(outcome.metrics)
