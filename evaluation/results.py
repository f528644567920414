"""Evaluation result records and the cross-evaluation map (method.md section 5).

Every benchmark result keeps one :class:`ItemResult` per item, keyed by the Record id, so that
paired bootstrap over items and cross-run comparisons are possible downstream. A
:class:`BenchmarkResult` also carries the lm-eval task version it was produced with.

Departure from the paper: ``CROSS_EVAL`` is the paper's map (ScienceQA -> GPQA, MBPP ->
HumanEval); ``EXTRA_EVAL`` adds our own training sets (the synthetic task of issue 7, scored on
its own test split only), and ``benchmarks_for`` reads both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

CROSS_EVAL: dict[str, tuple[str, ...]] = {
    "scienceqa": ("scienceqa", "gpqa"),
    "mbpp": ("mbpp", "humaneval"),
    "cose": ("cose",),
    "toolalpaca": ("toolalpaca",),
}
# Our training sets beyond the paper's four (unisd_core.data.records.EXTRA_TRAINING_SETS).
EXTRA_EVAL: dict[str, tuple[str, ...]] = {
    "synthetic": ("synthetic",),
}

# The metric that is a benchmark's score (method.md 5); the others are kept in ``metrics``.
PRIMARY_METRIC: dict[str, str] = {
    "scienceqa": "acc",
    "cose": "acc",
    "gpqa": "acc",
    "mbpp": "pass_at_1",
    "humaneval": "pass_at_1",
    "toolalpaca": "full_acc",
    "synthetic": "acc",  # ours (issue 7): multiple choice in the ScienceQA schema
}


def benchmarks_for(training_set: str) -> tuple[str, ...]:
    """Benchmarks a model trained on ``training_set`` is scored on (its own + cross evaluation)."""
    known = {**CROSS_EVAL, **EXTRA_EVAL}
    try:
        return known[training_set]
    except KeyError:
        raise ValueError(
            f"unknown training set {training_set!r}; allowed: {', '.join(known)}"
        ) from None


@dataclass(frozen=True)
class ItemResult:
    """One scored item: the raw completion, what the scorer extracted, the score and why."""

    item_id: str
    prediction: str
    extracted: str | None
    score: float
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchmarkResult:
    """One benchmark of one model: the score (mean of the primary metric), all metrics, items."""

    benchmark: str
    score: float
    metrics: dict[str, float]
    items: tuple[ItemResult, ...]
    task_version: str

    def item_scores(self) -> dict[str, float]:
        """item id -> score, the shape paired comparisons need."""
        return {item.item_id: item.score for item in self.items}

    def to_json(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["items"] = [asdict(item) for item in self.items]
        return payload

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> "BenchmarkResult":
        items = tuple(ItemResult(**item) for item in payload["items"])
        return cls(**{**payload, "items": items})
