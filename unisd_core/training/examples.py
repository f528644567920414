"""Training examples with every prompt already tokenised, and the completions each method trains on.

An example carries the token ids of each prompt its passes need: chat(x) for the student, chat(x~)
for the teacher (the demonstration; OPSD: the gold answer), the K agreement contexts and the bad
teacher's prompt (the chosen negative in the demonstration slot, byte-identical template). Examples
whose prompts (any of them) exceed ``max_prompt_tokens`` are dropped, not truncated (method.md 4).

Departures from the paper: OPSD's privileged context uses the same teacher template with the gold
answer (``Answer: <letter>`` for multiple choice, the reference solution otherwise) in the
demonstration slot; the paper describes the content, not the wording.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from unisd_core.config import TrainConfig
from unisd_core.data.records import Record
from unisd_core.prompts import teacher_prompt_text
from unisd_core.training.sequences import encode_chat

TEACHERLESS_METHODS = ("sft", "ssd")


@dataclass(frozen=True)
class Example:
    """One record with the token ids of every prompt its passes use."""

    record: Record
    student_prompt_ids: list[int]
    teacher_prompt_ids: list[int] | None
    context_prompt_ids: tuple[list[int], ...]
    negative_prompt_ids: list[int] | None


def privileged_text(record: Record) -> str:
    """OPSD's privileged context: the gold answer (a bare MC letter gets its ``Answer:`` label)."""
    answer = record.answer.strip()
    return f"Answer: {answer}" if re.fullmatch(r"[A-Z]", answer) else answer


def _teacher_text(config: TrainConfig, record: Record) -> str | None:
    if config.method in TEACHERLESS_METHODS:
        return None
    slot = privileged_text(record) if config.method == "opsd" else record.demonstration
    return teacher_prompt_text(record.prompt, slot)


def _contexts(config: TrainConfig, record: Record, caches: Any) -> list[str]:
    agreement = config.components.agreement
    if agreement is None:
        return []
    table = getattr(caches, "agreement_contexts", None) if caches is not None else None
    if table is None:
        raise ValueError("agreement is on but no agreement contexts were given (caches.agreement_contexts)")
    contexts = list(table.get(record.id) or [])
    if len(contexts) < agreement.num_contexts:
        raise ValueError(
            f"record {record.id!r} has {len(contexts)} agreement contexts; "
            f"agreement.num_contexts = {agreement.num_contexts}"
        )
    return contexts[: agreement.num_contexts]


def _negative(config: TrainConfig, record: Record, caches: Any) -> str | None:
    if config.components.contrastive is None:
        return None
    table = getattr(caches, "negatives", None) if caches is not None else None
    if table is None:
        raise ValueError("contrastive is on but no negatives were given (caches.negatives)")
    negative = table.get(record.id)
    return negative if negative and negative.strip() else None


def prepare_examples(
    config: TrainConfig, records: Sequence[Record], tokenizer: Any, caches: Any = None
) -> tuple[list[Example], list[str]]:
    """(examples kept, ids dropped because a prompt exceeds ``max_prompt_tokens``)."""
    kept: list[Example] = []
    dropped: list[str] = []
    limit = config.max_prompt_tokens
    for record in records:
        teacher_text = _teacher_text(config, record)
        negative = _negative(config, record, caches)
        example = Example(
            record=record,
            student_prompt_ids=encode_chat(tokenizer, record.prompt),
            teacher_prompt_ids=encode_chat(tokenizer, teacher_text) if teacher_text else None,
            context_prompt_ids=tuple(encode_chat(tokenizer, c) for c in _contexts(config, record, caches)),
            negative_prompt_ids=(
                encode_chat(tokenizer, teacher_prompt_text(record.prompt, negative)) if negative else None
            ),
        )
        lengths = [len(example.student_prompt_ids), len(example.teacher_prompt_ids or []),
                   len(example.negative_prompt_ids or [])] + [len(c) for c in example.context_prompt_ids]
        if max(lengths) > limit:
            dropped.append(record.id)
        else:
            kept.append(example)
    if not kept:
        raise ValueError(
            f"no training example left: all {len(records)} exceed max_prompt_tokens={limit} "
            "(or no records were given)"
        )
    return kept, dropped
