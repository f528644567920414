"""Hooks of the six ``unisd_*`` lm-eval tasks: data loading, prompt, scoring (method.md 5).

lm-eval loads this file by path (``!function utils.x``), both from our adapter and from its own
command line, so everything here is a plain function of lm-eval's arguments:

- ``load_unisd_dataset(**kwargs)`` is the ``custom_dataset`` hook. lm-eval calls it with the
  task's ``dataset_kwargs`` (``benchmark``) merged with the run metadata (``--metadata`` JSON on
  the command line, ``TaskManager(metadata=...)`` from Python; the model arguments are mixed in
  too and ignored). Keys read: ``sources`` ({benchmark: source}) or ``source`` (one source for
  this task), and ``shuffle_seed`` (the seeded option shuffle, default 0). A source is a local
  JSONL path in the hub schema, a hub id, or ``"hub"`` for the benchmark's canonical hub id; no
  source means the shipped sample (no hub is reachable here, so the sample is the default). The
  file is read by :func:`unisd_core.data.datasets.load_records`, so paths never resolve against
  lm-eval's working directory in a surprising way: pass absolute paths.
- ``doc_to_text`` is the Record prompt x; with ``--apply_chat_template`` lm-eval wraps it in the
  model's chat template as one user turn, exactly :func:`unisd_core.prompts.chat_prompt`.
- ``process_results`` scores with :func:`evaluation.scorers.score_output` and also returns an
  ``item`` entry (id, extracted answer, reason) that lm-eval logs per sample and that
  ``aggregate_item_count`` reduces to a count, so per-item records survive lm-eval untouched.

Departure from lm-eval habits: no built-in dataset download and no built-in code metrics (they
need the hub); code is scored by our sandbox.
"""

from __future__ import annotations

import json
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
    records = load_records(
        benchmark,
        "test",
        resolve_source(benchmark, options),
        seed=int(options.get("shuffle_seed", 0)),
    )
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


def doc_to_text(doc: dict[str, Any]) -> str:
    return doc["prompt"]


def doc_to_target(doc: dict[str, Any]) -> str:
    return doc["answer"]


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    """Metric values of one item plus its ``item`` record (id, prediction, extracted, reason)."""
    prediction = results[0] if results else ""
    outcome = score_output(
        doc["benchmark"],
        doc["answer"],
        json.loads(doc["metadata_json"]),
        prediction,
        timeout_s=CODE_TIMEOUT_S,
    )
    item = {
        "item_id": doc["id"],
        "extracted": outcome.extracted,
        "reason": outcome.reason,
    }
    return {**outcome.metrics, "item": item}


def aggregate_item_count(items: list[Any]) -> int:
    """Aggregation of the ``item`` entries: their number (the entries themselves are logged)."""
    return len(items)
