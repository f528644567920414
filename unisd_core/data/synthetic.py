"""A learnable synthetic benchmark, so that CPU runs measure real effects (issue 7).

Task ``synthetic`` ("largest number"): a multiple-choice question lists 4 two-digit numbers and
asks which option is the largest. The rule is learnable by a tiny transformer (compare number
tokens), and a worked demonstration in the context makes the answer a copy (the letter is in it),
so the demonstration-conditioned teacher is clearly better than the student: the setting of
UniSD, in miniature.

Rows use the ScienceQA hub schema (question, choices, answer index, hint, lecture, solution, ...),
so the ScienceQA adapter, prompts, letter extraction and scorer apply unchanged; only the items
differ. Generation is pure and seeded: the same (split, count, seed) gives the same rows, and the
test split is disjoint from train and pretrain by construction (a hash partition of option sets).

Departure from the paper: this benchmark is ours; the paper has no synthetic task.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

NUM_OPTIONS = 4
LOW, HIGH = 10, 99
SPLIT_SEEDS = {"train": 1_000, "test": 2_000, "pretrain": 3_000}
QUESTION = "Which option is the largest number?"


def _numbers(rng: random.Random) -> list[int]:
    return rng.sample(range(LOW, HIGH + 1), NUM_OPTIONS)


def make_row(numbers: list[int], index: int, split: str) -> dict[str, Any]:
    """One row in the ScienceQA schema for the given option numbers (in shown order)."""
    best = max(numbers)
    return {
        "image": None,
        "question": QUESTION,
        "choices": [str(n) for n in numbers],
        "answer": numbers.index(best),
        "hint": "",
        "task": "closed choice",
        "grade": "grade1",
        "subject": "synthetic",
        "topic": "comparison",
        "category": "largest number",
        "skill": "compare numbers",
        "lecture": "",
        "solution": f"{best} is larger than the other numbers.",
        "synthetic_id": f"{split}-{index}",
    }


def is_test_key(numbers: list[int]) -> bool:
    """Held-out partition of the option sets (about one in five), by a stable hash, so that the
    test split never shares an option set with train or pretrain, whatever their sizes."""
    digest = hashlib.sha256(",".join(map(str, sorted(numbers))).encode()).digest()
    return digest[0] % 5 == 0


def generate_rows(split: str, count: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` distinct rows of ``split`` ("train", "test" or "pretrain"), seeded."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown synthetic split {split!r}; allowed: {sorted(SPLIT_SEEDS)}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    want_test = split == "test"
    rng = random.Random(SPLIT_SEEDS[split] + seed)
    rows: list[dict[str, Any]] = []
    seen: set[tuple[int, ...]] = set()
    while len(rows) < count:
        numbers = _numbers(rng)
        key = tuple(sorted(numbers))
        if key in seen or is_test_key(numbers) != want_test:
            continue
        seen.add(key)
        rows.append(make_row(numbers, len(rows), split))
    return rows


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows as JSONL (atomically: a temp file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, sort_keys=True) + "\n")
    tmp.replace(path)
    return path
