"""Auxiliary teacher contexts for multi-teacher agreement (method.md 2.1), built once per dataset.

Three sources, each giving K plain-text contexts per record (no chat template; the training loop
applies it and appends the sampled completion):

- ``random``: context k shows one solved donor example (another training item; K distinct donors
  per record, drawn without replacement, seeded) as a reference not to solve, then the prompt x.
- ``retrieval``: the same layout; donor k is the k-th cosine nearest neighbour of x among the other
  training items, by all-MiniLM-L6-v2 embeddings of the prompts (:mod:`.embeddings`).
- ``induction``: K model-written general instructions (:mod:`.induction`).

Departures from the paper: the donor's exact wording is ours (the paper gives the layout, not the
text). Retrieval embeds the whole student prompt x, as the paper says, but MiniLM reads only its
first 256 word pieces: a long ScienceQA lecture or ToolAlpaca API doc pushes the question out of
the window, and the neighbours are then found by the context alone (docs/departures.md). Random donors are drawn per record from a generator seeded by (seed, record id), so a
record's donors do not depend on how many records came before it.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np

from unisd_core.config import AgreementConfig
from unisd_core.data.records import Record

DONOR_HEADER = (
    "Here is a solved example of a different question. It is shown for reference only; "
    "do not solve it."
)
DONOR_QUESTION_LABEL = "Example question:"
DONOR_SOLUTION_LABEL = "Example solution:"
TARGET_LABEL = "Now answer this question:"


def donor_context_text(donor: Record, prompt: str) -> str:
    """One context: the donor's question and solution as a reference, then the plain prompt x."""
    return (
        f"{DONOR_HEADER}\n\n{DONOR_QUESTION_LABEL}\n{donor.prompt}\n\n"
        f"{DONOR_SOLUTION_LABEL}\n{donor.demonstration}\n\n{TARGET_LABEL}\n{prompt}"
    )


def record_rng(seed: int, record_id: str) -> np.random.Generator:
    """A generator seeded by (seed, record id): stable across processes (no ``hash()``)."""
    digest = hashlib.sha256(f"{seed}:{record_id}".encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def random_donor_indices(record_ids: Sequence[str], k: int, seed: int) -> list[list[int]]:
    """For each record, k distinct donor indices into ``record_ids``, never the record itself."""
    count = len(record_ids)
    _require_enough_items(count, k)
    donors: list[list[int]] = []
    for index, record_id in enumerate(record_ids):
        pool = np.delete(np.arange(count), index)
        chosen = record_rng(seed, record_id).choice(pool, size=k, replace=False)
        donors.append([int(value) for value in chosen])
    return donors


def retrieval_donor_indices(records: Sequence[Record], k: int) -> list[list[int]]:
    """For each record, its k cosine-nearest other records by MiniLM embeddings of the prompts."""
    from unisd_core.components.embeddings import embed_texts, nearest_neighbours

    _require_enough_items(len(records), k)
    embeddings_ND = embed_texts([record.prompt for record in records])
    return nearest_neighbours(embeddings_ND, k).tolist()


def donor_contexts(records: Sequence[Record], donors: list[list[int]]) -> dict[str, list[str]]:
    """Record id -> [context built with donor k for k in order]."""
    return {
        record.id: [donor_context_text(records[j], record.prompt) for j in donor_row]
        for record, donor_row in zip(records, donors)
    }


def build_agreement_contexts(
    records: Sequence[Record],
    *,
    config: AgreementConfig,
    seed: int,
    model: Any = None,
    tokenizer: Any = None,
) -> dict[str, list[str]]:
    """Record id -> ``config.num_contexts`` context texts from ``config.context_source``.

    ``model``/``tokenizer`` are needed only by the ``induction`` source.
    """
    _require_unique_ids(records)
    k = config.num_contexts
    if config.context_source == "random":
        return donor_contexts(records, random_donor_indices([r.id for r in records], k, seed))
    if config.context_source == "retrieval":
        return donor_contexts(records, retrieval_donor_indices(records, k))
    if model is None or tokenizer is None:
        raise ValueError("context_source 'induction' needs the model and tokenizer")
    from unisd_core.components.induction import build_induction_contexts

    return build_induction_contexts(records, model, tokenizer, config=config, seed=seed)


def _require_enough_items(count: int, k: int) -> None:
    if count - 1 < k:
        raise ValueError(
            f"agreement needs at least num_contexts + 1 = {k + 1} training items to draw "
            f"{k} distinct donors per item; got {count}"
        )


def _require_unique_ids(records: Sequence[Record]) -> None:
    ids = [record.id for record in records]
    if len(set(ids)) != len(ids):
        raise ValueError("record ids must be unique to key agreement contexts")
