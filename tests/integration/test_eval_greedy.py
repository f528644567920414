"""Greedy evaluation ignores sampling defaults a checkpoint ships in its generation_config
(e.g. Qwen2.5-Instruct's repetition_penalty), and leaves that config as it found it."""

from __future__ import annotations

import pytest
import torch

from evaluation.lm_eval_adapter import evaluate
from unisd_core.models.zoo import load_model_and_tokenizer

pytestmark = pytest.mark.integration


def _predictions(model, tokenizer) -> list[str]:
    results = evaluate(model, ["scienceqa"], tokenizer=tokenizer, limit=2, max_new_tokens=8,
                       batch_size=2, device="cpu")
    return [item.prediction for item in results["scienceqa"].items]


def test_checkpoint_generation_defaults_do_not_change_greedy_predictions() -> None:
    torch.set_num_threads(1)
    model, tokenizer = load_model_and_tokenizer("tiny-qwen2")
    plain = _predictions(model, tokenizer)
    model.generation_config.repetition_penalty = 5.0
    model.generation_config.no_repeat_ngram_size = 1
    assert _predictions(model, tokenizer) == plain
    assert model.generation_config.repetition_penalty == 5.0  # restored afterwards
