"""Review checks of on-policy sampling (method.md 1.1): the student samples from softmax(z / tau)
with top_p over the full vocabulary, and nothing else.

transformers 5 fills every generation field left unset by the caller from the model's own
``generation_config`` (generation/utils.py ``_prepare_generation_config``). Released instruct
checkpoints ship sampling defaults there (Qwen2.5-*-Instruct: ``repetition_penalty`` 1.05, ``top_k``
20; Gemma-3-it: ``top_k`` 64), which would silently reshape the student's sampling distribution.
"""

from __future__ import annotations

import pytest
import torch

from tolerances import assert_close_scaled
from unisd_core.generation.hf import HFGenerationBackend
from unisd_core.prompts import chat_prompt


def _draw(backend, tokenizer, temperature):
    prompts = [chat_prompt(tokenizer, "Which number is larger, seven or nine?"), chat_prompt(tokenizer, "Hi")]
    return backend.generate(prompts, max_new_tokens=10, temperature=temperature, top_p=1.0, seed=3)


@pytest.mark.parametrize("temperature", [1e-4, 0.7], ids=["near-greedy", "tau"])
def test_model_generation_defaults_do_not_leak_into_sampling(qwen, temperature):
    model, tokenizer = qwen
    backend = HFGenerationBackend(model, tokenizer)
    clean = _draw(backend, tokenizer, temperature)
    original = model.generation_config
    polluted = original.__class__.from_dict(original.to_dict())
    # What released instruct checkpoints carry (exaggerated so that a leak changes the tokens).
    polluted.repetition_penalty = 5.0
    polluted.no_repeat_ngram_size = 1
    polluted.min_new_tokens = 9
    model.generation_config = polluted
    try:
        leaked = _draw(backend, tokenizer, temperature)
    finally:
        model.generation_config = original
    assert leaked == clean
    assert model.generation_config is original  # the model's own config is left as it was
    # The sampled rows are real completions (not empty), so the comparison above is not vacuous.
    assert all(len(row) >= 1 for row in clean)


def test_generation_defaults_do_not_leak_through_a_peft_student():
    from peft import LoraConfig, get_peft_model

    from unisd_core.models.zoo import load_model_and_tokenizer

    base, tokenizer = load_model_and_tokenizer("tiny-qwen2")
    student = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    backend = HFGenerationBackend(student, tokenizer)
    clean = _draw(backend, tokenizer, 1e-4)
    base.generation_config.repetition_penalty = 5.0
    base.generation_config.no_repeat_ngram_size = 1
    assert _draw(backend, tokenizer, 1e-4) == clean
    assert base.generation_config.no_repeat_ngram_size == 1  # restored, not replaced


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma3", "tiny-qwen2"])
def test_vllm_prompts_are_the_training_token_ids_with_one_bos(name):
    """vLLM tokenises text prompts with special tokens on; chat text of Llama and Gemma already
    starts with BOS, so text prompts would carry two. The backend hands it the training ids."""
    from unisd_core.generation.vllm_backend import token_prompts
    from unisd_core.models.zoo import load_model_and_tokenizer
    from unisd_core.training.sequences import encode_chat

    _, tokenizer = load_model_and_tokenizer(name)
    texts = [chat_prompt(tokenizer, "Which number is larger?"), chat_prompt(tokenizer, "Hi")]
    prompts = token_prompts(tokenizer, texts)
    assert [p["prompt_token_ids"] for p in prompts] == [encode_chat(tokenizer, t) for t in
                                                         ("Which number is larger?", "Hi")]
    bos = tokenizer.bos_token_id
    if name != "tiny-qwen2":  # the families whose template writes BOS: exactly one survives
        assert all(p["prompt_token_ids"].count(bos) == 1 for p in prompts)
        # ...where vLLM's own text tokenisation (special tokens on) would have doubled it.
        assert tokenizer(texts[0])["input_ids"][:2] == [bos, bos]


def _lora_student(dtype: str):
    from peft import LoraConfig, get_peft_model

    from unisd_core.models.zoo import load_model_and_tokenizer

    base, _ = load_model_and_tokenizer("tiny-qwen2", dtype=dtype)
    student = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                              task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    with torch.no_grad():  # a trained adapter: B is no longer zero
        for name, parameter in student.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.5)
    return student


def test_vllm_weight_sync_leaves_the_bf16_base_weights_untouched():
    """The vLLM sync runs after every optimizer step; the frozen base must stay bit-identical."""
    from unisd_core.generation.vllm_backend import _merged_state_dict

    student = _lora_student("bfloat16")
    before = {n: t.clone() for n, t in student.get_base_model().state_dict().items()}
    for _ in range(3):
        _merged_state_dict(student)
    after = student.get_base_model().state_dict()
    assert [n for n in before if not torch.equal(before[n], after[n])] == []


def test_vllm_weight_sync_sends_the_merged_student():
    import copy

    from unisd_core.generation.vllm_backend import _merged_state_dict

    student = _lora_student("float32")
    merged = _merged_state_dict(student)
    reference = copy.deepcopy(student).merge_and_unload().state_dict()
    assert merged.keys() == reference.keys()
    for name, tensor in reference.items():
        # W + s * B @ A two ways: a rank-4 product (terms 4) added to the weight
        assert_close_scaled(merged[name], tensor, terms=4, msg=name)
    # The adapter is really in there (not just the base weights).
    base_q = student.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight
    assert (merged["model.layers.0.self_attn.q_proj.weight"] - base_q).abs().max() > 1e-3
