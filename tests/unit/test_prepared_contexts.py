"""Agreement contexts without models: random donors, the neighbour search, the context layout."""

from __future__ import annotations

import numpy as np
import pytest

from unisd_core.components import embeddings
from unisd_core.components.contexts import (
    DONOR_HEADER,
    build_agreement_contexts,
    donor_context_text,
    random_donor_indices,
)
from unisd_core.components.embeddings import nearest_neighbours
from unisd_core.components.induction import clean_instruction, induction_context_text
from unisd_core.config import AgreementConfig
from unisd_core.data.records import Record
from unisd_core.prompts import TEACHER_INSTRUCTION


def make_records(count: int) -> list[Record]:
    return [
        Record(f"r{i}", "cose", f"Question {i}: what is {i} + {i}?", f"Answer: {2 * i}", "A")
        for i in range(count)
    ]


def test_random_donors_exclude_self_are_distinct_and_seeded() -> None:
    ids = [f"r{i}" for i in range(12)]
    donors = random_donor_indices(ids, 5, seed=3)
    assert len(donors) == len(ids)
    for index, row in enumerate(donors):
        assert len(row) == 5
        assert index not in row
        assert len(set(row)) == 5
        assert all(0 <= j < len(ids) for j in row)
    assert random_donor_indices(ids, 5, seed=3) == donors
    assert random_donor_indices(ids, 5, seed=4) != donors


def test_random_donors_need_enough_items() -> None:
    with pytest.raises(ValueError, match="at least num_contexts \\+ 1"):
        random_donor_indices(["a", "b", "c"], 3, seed=0)
    assert len(random_donor_indices(["a", "b", "c", "d"], 3, seed=0)[0]) == 3


def test_random_contexts_show_donor_then_prompt() -> None:
    records = make_records(6)
    contexts = build_agreement_contexts(
        records, config=AgreementConfig(num_contexts=3, context_source="random"), seed=0
    )
    assert set(contexts) == {record.id for record in records}
    by_id = {record.id: record for record in records}
    for record in records:
        assert len(contexts[record.id]) == 3
        assert len(set(contexts[record.id])) == 3  # three distinct donors
        for text in contexts[record.id]:
            assert text.startswith(DONOR_HEADER)
            assert text.endswith(record.prompt)
            donors = [other for other in records if other.id != record.id and other.prompt in text]
            assert len(donors) == 1  # exactly one donor, never the record itself
            assert by_id[donors[0].id].demonstration in text


def test_donor_context_layout() -> None:
    donor, target = make_records(2)
    text = donor_context_text(donor, target.prompt)
    assert text.index(donor.prompt) < text.index(donor.demonstration) < text.index(target.prompt)


def brute_force_neighbours(vectors: np.ndarray, k: int) -> list[list[int]]:
    result = []
    for i, vi in enumerate(vectors):
        scores = []
        for j, vj in enumerate(vectors):
            if i != j:
                cosine = float(vi @ vj / (np.linalg.norm(vi) * np.linalg.norm(vj)))
                scores.append((-cosine, j))
        result.append([j for _, j in sorted(scores)[:k]])
    return result


@pytest.mark.parametrize("block_rows", [1024, 3])
def test_nearest_neighbours_match_brute_force(block_rows: int, monkeypatch) -> None:
    monkeypatch.setattr(embeddings, "_BLOCK_ROWS", block_rows)
    vectors = np.random.default_rng(0).normal(size=(17, 8)).astype(np.float32)
    found = nearest_neighbours(vectors, 4)
    assert found.shape == (17, 4)
    assert found.tolist() == brute_force_neighbours(vectors, 4)
    assert all(i not in row for i, row in enumerate(found.tolist()))


def test_nearest_neighbours_exclude_self_even_for_duplicates() -> None:
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    assert nearest_neighbours(vectors, 1).tolist() == [[1], [0], [0]]
    with pytest.raises(ValueError):
        nearest_neighbours(vectors, 3)


def test_induction_context_layout_and_cleaning() -> None:
    assert clean_instruction("  Instruction: Read the options.  ") == "Read the options."
    text = induction_context_text("Read the options.", "What is 2 + 2?")
    assert text == f"Read the options.\n\nWhat is 2 + 2?\n\n{TEACHER_INSTRUCTION}"
    assert induction_context_text("", "Q?") == f"Q?\n\n{TEACHER_INSTRUCTION}"


def test_induction_needs_a_model() -> None:
    with pytest.raises(ValueError, match="needs the model"):
        build_agreement_contexts(
            make_records(5), config=AgreementConfig(context_source="induction"), seed=0
        )
