"""CoS-E v1.11 (Salesforce/cos_e) rows -> Records.

Hub schema: id, question, choices (list of 5 str), answer (str, one of the choices),
abstractive_explanation, extractive_explanation. The abstractive explanation is the rationale of
the demonstration. The eval split is the hub's ``validation`` (CoS-E has no labelled test).
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

BENCHMARK = "cose"
REQUIRED_FIELDS: tuple[str, ...] = ("id", "question", "choices", "answer")


def to_record(row: dict[str, Any], index: int, seed: int, *, split: str = "test") -> Record:
    """One CoS-E row; the item key is the hub ``id``."""
    require_fields(row, REQUIRED_FIELDS)
    choices = [str(choice) for choice in require_type(row, "choices", list)]
    answer = str(row["answer"])
    if answer not in choices:
        raise MalformedRowError(f"answer {answer!r} is not one of the choices {choices}")
    key = row["id"]
    shown, letter = shuffle_options(choices, choices.index(answer), item_rng(seed, BENCHMARK, key))
    return Record(
        id=record_id(BENCHMARK, split, key),
        benchmark=BENCHMARK,
        prompt=mc_prompt(str(row["question"]), shown),
        demonstration=mc_demonstration(letter, row.get("abstractive_explanation")),
        answer=letter,
        metadata=mc_metadata(shown, letter),
    )
