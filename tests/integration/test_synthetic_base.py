"""A short pretraining run already makes the tiny Qwen2 follow the answer format of the synthetic
task (``Reasoning: ...`` / ``Answer: <letter>`` then end of turn), with greedy decoding and the real
letter scorer, and the saved folder loads through the zoo's loader. The full budget (minutes) is
not run here; its accuracies are measured by ``python -m benchmarks.synthetic_effect``."""

from __future__ import annotations

import re

import pytest
import torch

from evaluation.scorers import extract_letter_with_rule
from unisd_core.data.datasets import load_records
from unisd_core.data.synthetic import RATIONALE
from unisd_core.models.pretrain import PretrainSettings, pretrain, save_pretrained_base
from unisd_core.models.zoo import load_model_and_tokenizer
from unisd_core.prompts import chat_prompt

pytestmark = pytest.mark.integration

FORMAT = re.compile(rf"^Reasoning: {re.escape(RATIONALE)}\nAnswer: [A-D]$")


@pytest.fixture(scope="module")
def short_base(tmp_path_factory):
    """The default model and data, only fewer steps in both phases (format is learned long
    before reading or the rule)."""
    torch.set_num_threads(1)
    settings = PretrainSettings(steps=120, reading_steps=40, pool_size=256)
    model, tokenizer, stats = pretrain(settings)
    return save_pretrained_base(model, tokenizer, tmp_path_factory.mktemp("synth") / "base",
                                settings, stats)


def test_short_pretraining_follows_the_answer_format(short_base) -> None:
    model, tokenizer = load_model_and_tokenizer(str(short_base))
    tokenizer.padding_side = "left"
    records = load_records("synthetic", "test", limit=8)
    batch = tokenizer([chat_prompt(tokenizer, r.prompt) for r in records], return_tensors="pt",
                      padding=True, add_special_tokens=False)
    with torch.no_grad():
        generated = model.generate(**batch, max_new_tokens=32, do_sample=False)
    new_tokens = generated[:, batch["input_ids"].shape[1]:]
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    for text, tokens in zip(texts, new_tokens.tolist()):
        assert FORMAT.match(text.strip()), text
        assert end_id in tokens  # stops by itself at end of turn
        letter, rule = extract_letter_with_rule(text, "ABCD")
        assert letter in "ABCD" and rule == "answer_line"


def test_lm_eval_task_scores_like_the_effect_script(short_base) -> None:
    """``unisd_synthetic`` through lm-eval and the effect script's greedy scoring agree per item."""
    from benchmarks.synthetic_effect import item_scores
    from evaluation.lm_eval_adapter import evaluate

    result = evaluate(str(short_base), ["synthetic"], limit=12, max_new_tokens=32, batch_size=12)
    records = load_records("synthetic", "test", limit=12)
    scores, _ = item_scores(str(short_base), records)
    assert result["synthetic"].item_scores() == {r.id: s for r, s in zip(records, scores)}
