"""The packaged all-MiniLM-L6-v2 encoder (offline) and retrieval donors built on it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from unisd_core.components.contexts import build_agreement_contexts
from unisd_core.components.embeddings import EMBEDDING_DIM, embed_texts, load_sentence_encoder
from unisd_core.components.prepared import prepare_caches
from unisd_core.config import AgreementConfig, ComponentsConfig, TrainConfig
from unisd_core.data.records import Record

pytestmark = pytest.mark.integration

TOPICS = [
    "How do plants turn sunlight into chemical energy?",
    "What process lets green leaves make sugar from light?",
    "Which planet in our solar system is the largest?",
    "Name the biggest planet orbiting the Sun.",
    "What is the boiling point of water at sea level?",
    "At what temperature does water boil under normal pressure?",
    "Who wrote the play Romeo and Juliet?",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def test_minilm_is_real_and_loads_offline() -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    encoder = load_sentence_encoder()
    assert encoder.get_embedding_dimension() == EMBEDDING_DIM
    vectors = embed_texts(["A cat sits on the mat.", "A kitten rests on the rug.", "Interest rates rose."])
    assert vectors.shape == (3, EMBEDDING_DIM) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > unrelated + 0.2
    assert embed_texts([]).shape == (0, EMBEDDING_DIM)


def test_retrieval_donors_are_the_true_cosine_neighbours(tmp_path: Path) -> None:
    records = [Record(f"q{i}", "cose", text, f"Answer: {i}", "A") for i, text in enumerate(TOPICS)]
    vectors = embed_texts(TOPICS, batch_size=3)
    cosine = vectors @ vectors.T / np.outer(np.linalg.norm(vectors, axis=1), np.linalg.norm(vectors, axis=1))
    config = AgreementConfig(num_contexts=2, context_source="retrieval")
    contexts = build_agreement_contexts(records, config=config, seed=0)
    for i, record in enumerate(records):
        ranked = sorted((j for j in range(len(records)) if j != i), key=lambda j: -cosine[i, j])
        for k, text in enumerate(contexts[record.id]):
            assert records[ranked[k]].prompt in text.split("Now answer this question:")[0]
            assert text.endswith(record.prompt)
    # The paraphrase pairs find each other first.
    for a, b in ((0, 1), (2, 3), (4, 5)):
        assert TOPICS[b] in contexts[f"q{a}"][0] and TOPICS[a] in contexts[f"q{b}"][0]
    train = TrainConfig(model="tiny-qwen2", components=ComponentsConfig(agreement=config))
    cached = prepare_caches(train, records, cache_dir=tmp_path)
    assert cached.agreement_contexts == contexts
    assert prepare_caches(train, records, cache_dir=tmp_path).stats["agreement"]["cache"] == "hit"


def test_retrieval_reads_only_the_first_256_word_pieces_of_the_prompt() -> None:
    """Documented departure (docs/departures.md): the whole prompt is embedded, so past MiniLM's
    256-word-piece window a long lecture hides the question from retrieval."""
    encoder = load_sentence_encoder()
    assert encoder.max_seq_length == 256
    lecture = "Lecture: " + " ".join(f"Plants use light energy in step {i}." for i in range(80))
    assert len(encoder.tokenizer(lecture)["input_ids"]) > 256
    questions = ["Which planet is the largest?", "Who wrote Romeo and Juliet?"]
    long_prompts = embed_texts([f"{lecture}\n\nQuestion: {q}" for q in questions])
    short_prompts = embed_texts([f"Question: {q}" for q in questions])
    # Unit vectors: identical inputs to the encoder give a dot product of 1 up to float32 rounding
    # of a 384-term sum (~1e-6); different questions on their own are far apart.
    assert float(long_prompts[0] @ long_prompts[1]) > 1 - 1e-5
    assert float(short_prompts[0] @ short_prompts[1]) < 0.9
