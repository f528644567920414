"""A learnable synthetic benchmark, so that CPU runs measure real effects (issue 7).

Task ``synthetic`` ("largest number"): a multiple-choice question lists 4 distinct three-digit
numbers and asks which option is the largest. The rule is learnable by a tiny transformer (compare
digit tokens) but only partly within a small budget, and a worked demonstration in the context
makes the answer a copy (its letter is in it), so the demonstration-conditioned teacher is clearly
better than the student: the setting of UniSD, in miniature. (Two-digit numbers were too easy: the
pretrained base learned the rule to 89% and a demonstration no longer helped.)

Rows use the ScienceQA hub schema (question, choices, answer index, hint, lecture, solution, ...),
so the ScienceQA adapter, prompts, letter extraction and scorer apply unchanged; only the items
differ. Generation is pure and seeded: the same (split, count, seed) gives the same rows, and the
test split is disjoint from train and pretrain by construction (a hash partition of option sets).

``spread`` draws close numbers (all four within +-spread of a centre): used only by the
pretraining's reading phase (:mod:`unisd_core.models.pretrain`); train and test use the ordinary
draw.

Registered as benchmark ``synthetic``: ``load_records("synthetic", split)`` with no source
generates ``DEFAULT_COUNTS[split]`` rows (generation seed 0; ``load_records``' own ``seed`` only
shuffles the options, as for every benchmark), a JSONL source reads rows of this schema. The same
rows are also valid ScienceQA rows, so ``python -m unisd_core.data.synthetic write DIR`` gives
files that any ScienceQA source slot accepts.

Departure from the paper: this benchmark is ours; the paper has no synthetic task.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path
from typing import Any

NUM_OPTIONS = 4
LOW, HIGH = 100, 999
SPLIT_SEEDS = {"train": 1_000, "test": 2_000, "pretrain": 3_000}
QUESTION = "Which option is the largest number?"
# The rationale names the method, not the number: the answer letter is the only item-specific
# token of a completion, so without a demonstration the model must find the maximum internally
# (learned only partly by the pretrained base), while with one it reads a single letter.
RATIONALE = "Compare the options and pick the largest number."
# Enough test items for a bootstrap interval over items to be informative (issue 7: 200+).
DEFAULT_COUNTS = {"train": 1_000, "test": 300}


def generator_spec() -> dict[str, Any]:
    """Everything that decides the generated rows (enters the pretrained base's build hash)."""
    return {"num_options": NUM_OPTIONS, "low": LOW, "high": HIGH, "split_seeds": SPLIT_SEEDS,
            "question": QUESTION, "rationale": RATIONALE, "test_partition": "sha256[0] % 5 == 0"}


def _numbers(rng: random.Random, spread: int | None = None) -> list[int]:
    """Four distinct numbers in [LOW, HIGH]; with ``spread``, all within +-spread of a random
    centre (close numbers share leading digits, so the maximum is hard to see)."""
    if spread is None:
        return rng.sample(range(LOW, HIGH + 1), NUM_OPTIONS)
    centre = rng.randint(LOW + spread, HIGH - spread)
    return rng.sample(range(centre - spread, centre + spread + 1), NUM_OPTIONS)


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
        "solution": RATIONALE,
        "synthetic_id": f"{split}-{index}",
    }


def is_test_key(numbers: list[int]) -> bool:
    """Held-out partition of the option sets (about one in five), by a stable hash, so that the
    test split never shares an option set with train or pretrain, whatever their sizes."""
    digest = hashlib.sha256(",".join(map(str, sorted(numbers))).encode()).digest()
    return digest[0] % 5 == 0


def generate_rows(split: str, count: int, *, seed: int = 0,
                  spread: int | None = None) -> list[dict[str, Any]]:
    """``count`` distinct rows of ``split`` ("train", "test" or "pretrain"), seeded; ``spread``
    draws close numbers (the pretraining's demonstration-reading phase only)."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown synthetic split {split!r}; allowed: {sorted(SPLIT_SEEDS)}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    want_test = split == "test"
    if spread is not None and not 2 <= spread <= (HIGH - LOW) // 2:
        raise ValueError(f"spread must be in [2, {(HIGH - LOW) // 2}], got {spread}")
    rng = random.Random(SPLIT_SEEDS[split] + seed + (0 if spread is None else 7_919 * spread))
    rows: list[dict[str, Any]] = []
    seen: set[tuple[int, ...]] = set()
    while len(rows) < count:
        numbers = _numbers(rng, spread)
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


def synthetic_records(split: str, count: int | None = None, *, seed: int = 0,
                      shuffle_seed: int = 0, spread: int | None = None) -> list:
    """Records of benchmark ``synthetic``: ``count`` rows (default ``DEFAULT_COUNTS``) of
    ``split`` generated with ``seed`` (and ``spread``), options shuffled with ``shuffle_seed``."""
    from unisd_core.data.adapters import synthetic as adapter

    count = DEFAULT_COUNTS.get(split, 0) if count is None else count
    rows = generate_rows(split, count, seed=seed, spread=spread)
    return [adapter.to_record(row, index, shuffle_seed, split=split) for index, row in enumerate(rows)]


def write_default_files(folder: Path) -> dict[str, Path]:
    """The default train and test splits as ``<folder>/synthetic_<split>.jsonl``."""
    return {
        split: write_rows(folder / f"synthetic_{split}.jsonl", generate_rows(split, count))
        for split, count in DEFAULT_COUNTS.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m unisd_core.data.synthetic",
        description="Write the default synthetic train/test splits as JSONL (ScienceQA schema).",
    )
    parser.add_argument("command", choices=["write"])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    for split, path in write_default_files(args.folder).items():
        print(f"{split}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
