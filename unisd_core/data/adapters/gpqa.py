"""GPQA (Idavidrein/gpqa, config gpqa_main) rows -> Records.

Hub schema (the columns used): Question, Correct Answer, Incorrect Answer 1..3, Explanation,
Record ID; other columns ("High-level domain", "Subdomain", ...) are kept in metadata when
present. The four answers are shuffled per item (seeded by Record ID) and relabelled A-D; the
Explanation is the rationale. The hub's only split ("train", 448 items) is our eval set; GPQA is
out-of-domain evaluation only and never trained on.
"""

from __future__ import annotations

from typing import Any

from unisd_core.data.adapters.common import (
    item_rng,
    mc_demonstration,
    mc_metadata,
    mc_prompt,
    record_id,
    require_fields,
    shuffle_options,
)
from unisd_core.data.records import Record

BENCHMARK = "gpqa"
ANSWER_FIELDS: tuple[str, ...] = (
    "Correct Answer",
    "Incorrect Answer 1",
    "Incorrect Answer 2",
    "Incorrect Answer 3",
)
REQUIRED_FIELDS: tuple[str, ...] = ("Question", *ANSWER_FIELDS, "Record ID")


def to_record(row: dict[str, Any], index: int, seed: int, *, split: str = "test") -> Record:
    """One GPQA row; the correct answer is option 0 before the shuffle."""
    require_fields(row, REQUIRED_FIELDS)
    # The hub strings often carry stray whitespace and newlines around answers.
    options = [str(row[name]).strip() for name in ANSWER_FIELDS]
    key = row["Record ID"]
    shown, letter = shuffle_options(options, 0, item_rng(seed, BENCHMARK, key))
    return Record(
        id=record_id(BENCHMARK, split, key),
        benchmark=BENCHMARK,
        prompt=mc_prompt(str(row["Question"]), shown),
        demonstration=mc_demonstration(letter, row.get("Explanation")),
        answer=letter,
        metadata=mc_metadata(
            shown,
            letter,
            domain=row.get("High-level domain"),
            subdomain=row.get("Subdomain"),
        ),
    )
