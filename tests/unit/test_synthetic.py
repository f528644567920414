"""The synthetic "largest number" benchmark: seeded generation, disjoint splits, registration as
benchmark ``synthetic`` and gold answers that the real letter scorer accepts."""

from __future__ import annotations

import re

import pytest

from evaluation.scorers import score_letter
from unisd_core.data import synthetic
from unisd_core.data.synthetic import generate_rows, is_test_key
from unisd_core.data.adapters import ADAPTERS, EXTRA_ADAPTERS, scienceqa
from unisd_core.data.datasets import load_records, sample_path
from unisd_core.prompts import MC_INSTRUCTION


def option_sets(rows: list[dict]) -> set[tuple[str, ...]]:
    return {tuple(sorted(row["choices"])) for row in rows}


def test_generation_is_deterministic_and_seeded() -> None:
    assert synthetic.generate_rows("train", 50) == synthetic.generate_rows("train", 50)
    assert synthetic.generate_rows("train", 50, seed=1) != synthetic.generate_rows("train", 50)
    # A longer draw extends a shorter one (the rng stream is consumed in order).
    assert synthetic.generate_rows("test", 80)[:30] == synthetic.generate_rows("test", 30)


def test_splits_are_disjoint_and_rows_distinct() -> None:
    rows = {split: synthetic.generate_rows(split, 400) for split in ("train", "test", "pretrain")}
    for split, split_rows in rows.items():
        assert len(option_sets(split_rows)) == len(split_rows), split
    assert not option_sets(rows["test"]) & option_sets(rows["train"])
    assert not option_sets(rows["test"]) & option_sets(rows["pretrain"])
    assert all(synthetic.is_test_key([int(c) for c in row["choices"]]) for row in rows["test"])


def test_answer_is_the_largest_option_and_only_the_letter_is_item_specific() -> None:
    for row in synthetic.generate_rows("pretrain", 100, seed=3):
        numbers = [int(choice) for choice in row["choices"]]
        assert numbers[row["answer"]] == max(numbers)
        assert row["solution"] == synthetic.RATIONALE


@pytest.mark.parametrize("split", ["train", "test"])
def test_registered_benchmark_loads_generated_records(split: str) -> None:
    records = load_records("synthetic", split)
    assert "synthetic" in EXTRA_ADAPTERS and "synthetic" not in ADAPTERS  # not one of the paper's six
    assert len(records) == synthetic.DEFAULT_COUNTS[split]
    assert records == synthetic.synthetic_records(split)
    assert [r.id for r in records[:2]] == [f"synthetic-{split}-0", f"synthetic-{split}-1"]
    assert {r.benchmark for r in records} == {"synthetic"}
    assert load_records("synthetic", split, limit=5) == records[:5]


def test_gold_demonstrations_score_one_through_the_letter_scorer() -> None:
    for record in load_records("synthetic", "test", limit=60, seed=4):
        valid = "".join(record.metadata["valid_letters"])
        score, letter, _ = score_letter(record.demonstration, record.answer, valid)
        assert (score, letter) == (1.0, record.answer)
        shown = record.metadata["choices"]
        assert shown[valid.index(record.answer)] == str(max(int(c) for c in shown))
        assert record.prompt.endswith(MC_INSTRUCTION)
        assert re.search(rf"^{record.answer}\. {max(int(c) for c in shown)}$", record.prompt, re.M)


def test_option_shuffle_follows_the_load_seed_only() -> None:
    first, other = load_records("synthetic", "test", limit=40), load_records("synthetic", "test", limit=40, seed=9)
    assert [sorted(r.metadata["choices"]) for r in first] == [sorted(r.metadata["choices"]) for r in other]
    assert [r.answer for r in first] != [r.answer for r in other]


def test_written_files_load_as_synthetic_and_as_scienceqa(tmp_path) -> None:
    paths = synthetic.write_default_files(tmp_path)
    from_file = load_records("synthetic", "test", paths["test"])
    assert from_file == load_records("synthetic", "test")
    # The rows are valid ScienceQA rows too: same prompt and demonstration, other benchmark name.
    as_scienceqa = load_records("scienceqa", "test", paths["test"], limit=10)
    assert [r.prompt for r in as_scienceqa] != []
    for sq, own in zip(as_scienceqa, from_file):
        assert sq.benchmark == "scienceqa"
        assert sorted(sq.metadata["choices"]) == sorted(own.metadata["choices"])
    assert scienceqa.is_text_only(synthetic.generate_rows("test", 1)[0])


def test_synthetic_errors_are_explicit(tmp_path) -> None:
    with pytest.raises(ValueError, match="no sample file"):
        sample_path("synthetic", "test")
    with pytest.raises(ValueError, match="unknown split"):
        load_records("synthetic", "validation")
    with pytest.raises(FileNotFoundError):
        load_records("synthetic", "test", tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="unknown synthetic split"):
        synthetic.generate_rows("dev", 3)


def test_close_numbers_stay_within_the_spread_and_keep_the_test_partition() -> None:
    """``spread`` (the pretraining's reading phase) draws four numbers within +-spread of a centre;
    rows stay distinct, off the test partition, and differ from the ordinary rows."""
    close = generate_rows("pretrain", 200, spread=30)
    for row in close:
        numbers = [int(c) for c in row["choices"]]
        assert max(numbers) - min(numbers) <= 60 and len(set(numbers)) == 4
        assert not is_test_key(numbers)
        assert row["choices"][row["answer"]] == str(max(numbers))
    ordinary = generate_rows("pretrain", 200)
    assert max(max(map(int, r["choices"])) - min(map(int, r["choices"])) for r in ordinary) > 60
    assert generate_rows("pretrain", 200, spread=30) == close
    with pytest.raises(ValueError, match="spread"):
        generate_rows("pretrain", 1, spread=1)
