"""The common record every dataset adapter produces and every layer consumes.

A record is one benchmark item reduced to what training and evaluation need: the student prompt
text x (no chat template applied), the gold demonstration c (``Reasoning: <r>`` then
``Answer: <a>`` when the dataset has a rationale, else just the answer), the gold answer used by
the scorers, and benchmark-specific metadata (choices, tests, entry point, tool docs, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BENCHMARKS: tuple[str, ...] = ("scienceqa", "cose", "mbpp", "toolalpaca", "gpqa", "humaneval")
TRAINING_SETS: tuple[str, ...] = ("scienceqa", "cose", "mbpp", "toolalpaca")


@dataclass(frozen=True)
class Record:
    """One item. ``id`` is unique within (benchmark, split) and stable across runs."""

    id: str
    benchmark: str
    prompt: str
    demonstration: str
    answer: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "benchmark": self.benchmark,
            "prompt": self.prompt,
            "demonstration": self.demonstration,
            "answer": self.answer,
            "metadata": self.metadata,
        }

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> "Record":
        return cls(**payload)
