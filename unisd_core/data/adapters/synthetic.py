"""Synthetic "largest number" rows (unisd_core.data.synthetic) -> Records of benchmark ``synthetic``.

The rows use the ScienceQA hub schema (question, choices, answer index, solution, ...), so this
adapter lays them out exactly as the ScienceQA adapter does (shuffled, relabelled options, the MC
instruction, ``Reasoning: r`` / ``Answer: X``); only the benchmark name, the id and the shuffle
key differ. The item key is the row's ``synthetic_id`` when present, else the row index.

Departure from the paper: the benchmark is ours (issue 7); the paper has no synthetic task.
"""

from __future__ import annotations

from typing import Any

from unisd_core.data.adapters.common import (
    MalformedRowError,
    item_rng,
    mc_demonstration,
    mc_metadata,
    mc_prompt,
    record_id,
    require_fields,
    require_type,
    shuffle_options,
)
from unisd_core.data.records import Record

BENCHMARK = "synthetic"
REQUIRED_FIELDS: tuple[str, ...] = ("question", "choices", "answer", "solution")


def to_record(row: dict[str, Any], index: int, seed: int, *, split: str = "test") -> Record:
    """One synthetic row; options shuffled by (seed, "synthetic", row index)."""
    require_fields(row, REQUIRED_FIELDS)
    choices = require_type(row, "choices", list)
    answer = require_type(row, "answer", int)
    if len(choices) < 2:
        raise MalformedRowError(f"need at least 2 choices, got {len(choices)}")
    shown, letter = shuffle_options(choices, answer, item_rng(seed, BENCHMARK, index))
    return Record(
        id=record_id(BENCHMARK, split, index),
        benchmark=BENCHMARK,
        prompt=mc_prompt(str(row["question"]), shown),
        demonstration=mc_demonstration(letter, str(row["solution"])),
        answer=letter,
        metadata=mc_metadata(shown, letter, category=row.get("category")),
    )
