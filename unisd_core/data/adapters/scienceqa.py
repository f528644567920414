"""ScienceQA (derek-thomas/ScienceQA) rows -> Records.

Hub schema: question, choices (list[str]), answer (int index into choices), hint, image, task,
grade, subject, topic, category, skill, lecture, solution. Only text-only items are used
(``image`` is null); ``load_records`` filters the others out, this adapter rejects them.
The prompt carries the hint as ``Context:`` and the lecture as ``Lecture:`` (method.md: lecture
as context), then the question and the shuffled, relabelled options; the solution is the rationale
of the demonstration.
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

BENCHMARK = "scienceqa"
REQUIRED_FIELDS: tuple[str, ...] = ("question", "choices", "answer")


def is_text_only(row: dict[str, Any]) -> bool:
    """True when the item has no image (the only items the study uses)."""
    return row.get("image") is None


def to_record(row: dict[str, Any], index: int, seed: int, *, split: str = "test") -> Record:
    """One text-only ScienceQA row; the item key for id and shuffle is the row index
    (the hub has no id column)."""
    require_fields(row, REQUIRED_FIELDS)
    if not is_text_only(row):
        raise MalformedRowError("item has an image; only text-only items are supported")
    choices = require_type(row, "choices", list)
    answer = require_type(row, "answer", int)
    if len(choices) < 2:
        raise MalformedRowError(f"need at least 2 choices, got {len(choices)}")
    shown, letter = shuffle_options(choices, answer, item_rng(seed, BENCHMARK, index))
    hint = str(row.get("hint") or "")
    lecture = str(row.get("lecture") or "")
    context = [f"Context: {hint}" if hint.strip() else "", f"Lecture: {lecture}" if lecture.strip() else ""]
    return Record(
        id=record_id(BENCHMARK, split, index),
        benchmark=BENCHMARK,
        prompt=mc_prompt(str(row["question"]), shown, context),
        demonstration=mc_demonstration(letter, row.get("solution")),
        answer=letter,
        metadata=mc_metadata(
            shown,
            letter,
            subject=row.get("subject"),
            topic=row.get("topic"),
            grade=row.get("grade"),
        ),
    )
