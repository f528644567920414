"""Helpers shared by the dataset adapters: field checks, the seeded per-item option shuffle, the
multiple-choice prompt layout and stable record ids.

The option permutation depends only on (seed, benchmark, item key), never on the order in which
items are loaded or on the split, so a subset or a reordered file shows every item the same way.
Python's ``hash`` is salted per process, so the seed is derived with SHA-256 instead.
"""

from __future__ import annotations

import hashlib
import random
import string
from collections.abc import Sequence
from typing import Any

from unisd_core.prompts import MC_INSTRUCTION, format_demonstration

LETTERS: str = string.ascii_uppercase


class MalformedRowError(ValueError):
    """A row lacks a field or has a field of the wrong type. ``load_records`` adds the location."""


def require_fields(row: dict[str, Any], fields: Sequence[str]) -> None:
    """Raise ``MalformedRowError`` naming every required field absent from ``row``."""
    if not isinstance(row, dict):
        raise MalformedRowError(f"row is a {type(row).__name__}, expected a JSON object")
    missing = [name for name in fields if name not in row]
    if missing:
        raise MalformedRowError(
            f"missing field(s) {missing}; present: {sorted(row)}"
        )


def require_type(row: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """Return ``row[name]`` after checking its type (bool is not accepted as int)."""
    value = row[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = "/".join(k.__name__ for k in kinds)
        raise MalformedRowError(
            f"field {name!r} must be {names}, got {type(value).__name__}: {value!r:.80}"
        )
    return value


def record_id(benchmark: str, split: str, key: object) -> str:
    """Stable id: ``<benchmark>-<split>-<hub id or row index>``."""
    return f"{benchmark}-{split}-{key}"


def item_rng(seed: int, benchmark: str, key: object) -> random.Random:
    """A generator seeded by (seed, benchmark, item key), identical across processes."""
    digest = hashlib.sha256(f"{seed}|{benchmark}|{key}".encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


def shuffle_options(
    options: Sequence[str], correct_index: int, rng: random.Random
) -> tuple[list[str], str]:
    """Permute ``options`` with ``rng``; return them in shown order and the gold letter."""
    if not 0 <= correct_index < len(options):
        raise MalformedRowError(
            f"answer index {correct_index} out of range for {len(options)} options"
        )
    if len(options) > len(LETTERS):
        raise MalformedRowError(f"{len(options)} options exceed {len(LETTERS)} letters")
    order = list(range(len(options)))
    rng.shuffle(order)
    shown = [str(options[i]) for i in order]
    return shown, LETTERS[order.index(correct_index)]


def mc_prompt(question: str, shown_options: Sequence[str], context: Sequence[str] = ()) -> str:
    """Context blocks (already labelled), the question, lettered options, the MC instruction."""
    blocks = [block.strip() for block in context if block and block.strip()]
    lines = [f"{LETTERS[i]}. {option}" for i, option in enumerate(shown_options)]
    blocks.append(f"Question: {question.strip()}")
    blocks.append("Options:\n" + "\n".join(lines))
    blocks.append(MC_INSTRUCTION)
    return "\n\n".join(blocks)


def mc_demonstration(letter: str, rationale: str | None) -> str:
    """``Reasoning: r`` / ``Answer: X``; without a rationale still ``Answer: X``, because the
    MC instruction asks for that final line and a bare letter would teach a different format."""
    if rationale and rationale.strip():
        return format_demonstration(letter, rationale)
    return format_demonstration(f"Answer: {letter}")


def mc_metadata(shown_options: Sequence[str], letter: str, **extra: Any) -> dict[str, Any]:
    """The metadata keys every multiple-choice record carries."""
    return {
        "choices": list(shown_options),
        "answer_letter": letter,
        "valid_letters": list(LETTERS[: len(shown_options)]),
        **extra,
    }


def python_block(code: str) -> str:
    """Code in a fenced python block, as the scorer extracts it."""
    return f"```python\n{code.strip()}\n```"
