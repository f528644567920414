"""The offline tiny model zoo: real architectures, deterministic builds, round-tripping tokenizers.

Everything runs on the real transformers classes; the models are built into a fresh cache (the
session cache from conftest, or a tmp dir where a test needs its own).
"""

from __future__ import annotations

import json
import math
import shutil
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GPT2Config

from unisd_core.models.tokenizer import VOCAB_SIZE, chat_format, train_tokenizer
from unisd_core.models.zoo import (
    TINY_FAMILIES,
    TINY_MODELS,
    ModelNotAvailableError,
    build_tiny_model,
    load_model_and_tokenizer,
    model_family,
    resolve_model,
)

torch.set_num_threads(1)

EXPECTED_CLASS = {
    "tiny-qwen2": "Qwen2ForCausalLM",
    "tiny-llama": "LlamaForCausalLM",
    "tiny-gemma3": "Gemma3ForCausalLM",
}
SAMPLE_TEXTS = (
    "Plants use sunlight, water and carbon dioxide to make sugar. Isn't that neat?",
    "def add(a, b):\n    return a + b\n\n\nassert add(2, 3) == 5\n",
    "Thought: I need the weather.\nAction: getWeather\nAction Input: {\"city\": \"Paris\"}",
    "Unseen words: zyxqwv Ünïcödé 日本語 emoji \U0001F600 tabs\tand\r\nCRLF 1234567 3.14159",
    "   leading spaces and trailing   ",
)
CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Which gas do plants take in?"},
    {"role": "assistant", "content": "Reasoning: photosynthesis.\nAnswer: B"},
]


@pytest.fixture(scope="module")
def folders() -> dict[str, Path]:
    return {name: Path(resolve_model(name)) for name in TINY_MODELS}


@pytest.mark.parametrize("name", TINY_MODELS)
def test_auto_classes_load_the_real_architecture(folders: dict[str, Path], name: str) -> None:
    # The lm_eval command line loads exactly like this: Auto classes, no remote code.
    model = AutoModelForCausalLM.from_pretrained(folders[name], trust_remote_code=False)
    assert type(model).__name__ == EXPECTED_CLASS[name]
    assert model_family(name) == model_family(str(folders[name])) == TINY_FAMILIES[name]
    config = model.config
    assert config.num_hidden_layers == 2 and config.hidden_size <= 128
    assert config.vocab_size == VOCAB_SIZE
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


@pytest.mark.parametrize("name", TINY_MODELS)
def test_saved_tokenizer_round_trips_through_auto_tokenizer(
    folders: dict[str, Path], name: str, tmp_path: Path
) -> None:
    trained = train_tokenizer(TINY_FAMILIES[name])
    loaded = AutoTokenizer.from_pretrained(folders[name])
    # A checkpoint re-saves the loaded tokenizer (Qwen2Tokenizer for qwen2): it must keep the ids.
    loaded.save_pretrained(tmp_path)
    shutil.copy(folders[name] / "config.json", tmp_path / "config.json")
    resaved = AutoTokenizer.from_pretrained(tmp_path)
    chat_text = trained.apply_chat_template(CONVERSATION, tokenize=False)
    assert len(loaded) == len(trained) == VOCAB_SIZE
    for text in (*SAMPLE_TEXTS, chat_text):
        for add_special in (True, False):
            expected = trained(text, add_special_tokens=add_special).input_ids
            assert loaded(text, add_special_tokens=add_special).input_ids == expected, text
            assert resaved(text, add_special_tokens=add_special).input_ids == expected, text
        decoded = loaded.decode(loaded(text, add_special_tokens=False).input_ids)
        assert decoded == text  # byte-level: lossless, whatever the script
    spec = chat_format(TINY_FAMILIES[name])
    assert loaded.eos_token == spec.end_of_turn_token and loaded.pad_token == spec.pad_token
    assert loaded.bos_token == spec.bos_token
    for token in spec.special_tokens:  # specials stay single tokens inside text
        assert loaded(f"a{token}b", add_special_tokens=False).input_ids.count(
            loaded.convert_tokens_to_ids(token)
        ) == 1


@pytest.mark.parametrize("name", TINY_MODELS)
def test_chat_template_renders_turns_and_generation_prompt(name: str) -> None:
    _, tokenizer = load_model_and_tokenizer(name)
    spec = chat_format(TINY_FAMILIES[name])
    without = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    with_prompt = tokenizer.apply_chat_template(
        CONVERSATION[:2], tokenize=False, add_generation_prompt=True
    )
    for message in CONVERSATION:
        assert message["content"] in without
    assert without.count(spec.end_of_turn_token) == (2 if name == "tiny-gemma3" else 3)
    assert without.endswith(spec.end_of_turn_token + ("" if name == "tiny-llama" else "\n"))
    header = tokenizer.apply_chat_template(CONVERSATION[:2], tokenize=False)
    assert with_prompt.startswith(header) and len(with_prompt) > len(header)
    generation_header = with_prompt[len(header):]
    assert ("model" if name == "tiny-gemma3" else "assistant") in generation_header
    if spec.bos_token:
        assert with_prompt.startswith(spec.bos_token)


@pytest.mark.parametrize("name", TINY_MODELS)
def test_forward_and_generate(name: str) -> None:
    model, tokenizer = load_model_and_tokenizer(name)
    tokenizer.padding_side = "left"
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                      add_generation_prompt=True)
        for text in ("What is 2+2?", "Name a planet that is larger than the Earth, please.")
    ]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    batch_size, length = batch.input_ids.shape
    with torch.no_grad():
        output = model(**batch, output_hidden_states=True)
    assert output.logits.shape == (batch_size, length, model.config.vocab_size)
    assert torch.isfinite(output.logits).all()
    assert len(output.hidden_states) == model.config.num_hidden_layers + 1
    assert output.hidden_states[-1].shape == (batch_size, length, model.config.hidden_size)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id is not None
    generated = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert generated.shape[0] == batch_size and generated.shape[1] > length
    assert generated.shape[1] <= length + 4


def test_builds_are_deterministic_across_cache_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds = []
    for cache in ("first", "second"):
        monkeypatch.setenv("UNISD_CACHE_DIR", str(tmp_path / cache))
        builds.append({name: build_tiny_model(name) for name in TINY_MODELS})
    for name in TINY_MODELS:
        first, second = builds[0][name], builds[1][name]
        assert first != second and first.name == second.name  # same build hash, two places
        assert first.parent == tmp_path / "first" / "models"
        weights_a = load_file(first / "model.safetensors")
        weights_b = load_file(second / "model.safetensors")
        assert weights_a.keys() == weights_b.keys()
        assert all(torch.equal(weights_a[key], weights_b[key]) for key in weights_a)
        vocab_a = json.loads((first / "tokenizer.json").read_text())["model"]
        vocab_b = json.loads((second / "tokenizer.json").read_text())["model"]
        assert vocab_a["vocab"] == vocab_b["vocab"] and vocab_a["merges"] == vocab_b["merges"]
    assert [build.name.rsplit("-", 1)[0] for build in builds[0].values()] == list(TINY_MODELS)


def test_concurrent_first_use_builds_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # flock locks are per open file, so threads contend exactly as Ray worker processes do.
    monkeypatch.setenv("UNISD_CACHE_DIR", str(tmp_path))
    results: list[Path] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            results.append(build_tiny_model("tiny-llama"))
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1
    models_dir = tmp_path / "models"
    assert [p.name for p in models_dir.iterdir() if p.is_dir()] == [results[0].name]
    assert AutoConfig.from_pretrained(results[0]).model_type == "llama"


def test_unfinished_folder_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNISD_CACHE_DIR", str(tmp_path))
    target = build_tiny_model("tiny-qwen2")
    (target / "unisd_build.json").unlink()
    (target / "model.safetensors").write_bytes(b"truncated")
    dead_staging = target.parent / f".{target.name}.tmp-crashed"
    dead_staging.mkdir()
    rebuilt = build_tiny_model("tiny-qwen2")
    assert rebuilt == target and (rebuilt / "unisd_build.json").is_file()
    assert not dead_staging.exists()
    assert load_file(rebuilt / "model.safetensors")  # a valid file again


def test_resolve_model_paths_and_errors(tmp_path: Path) -> None:
    local = tmp_path / "checkpoint"
    local.mkdir()
    assert resolve_model(str(local)) == str(local)
    with pytest.raises(ValueError, match="did you mean 'tiny-qwen2'"):
        resolve_model("tiny-qwen")
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        resolve_model(str(tmp_path / "missing"))
    # conftest sets HF_HUB_OFFLINE, and no hub cache holds this id.
    with pytest.raises(ModelNotAvailableError, match="offline"):
        resolve_model("unisd-test-org/no-such-model-anywhere")


def test_model_family_of_other_architectures(tmp_path: Path) -> None:
    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path)
    assert model_family(str(tmp_path)) == "gpt2"


def test_load_in_bfloat16(folders: dict[str, Path]) -> None:
    model, tokenizer = load_model_and_tokenizer(str(folders["tiny-gemma3"]), dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert tokenizer.pad_token_id is not None
    with pytest.raises(ValueError, match="dtype"):
        load_model_and_tokenizer("tiny-gemma3", dtype="float64")


def test_lm_eval_hf_model_loads_tiny_folder(folders: dict[str, Path]) -> None:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    folder = folders["tiny-qwen2"]  # the family whose tokenizer transformers rebuilds on load
    lm = HFLM(pretrained=str(folder), device="cpu", batch_size=1, dtype="float32")
    assert type(lm.model).__name__ == "Qwen2ForCausalLM"
    trained = train_tokenizer("qwen2")
    assert lm.tok_encode(SAMPLE_TEXTS[1]) == trained(SAMPLE_TEXTS[1]).input_ids
    request = Instance(
        request_type="loglikelihood", doc={}, arguments=("Question: 2+2?\nAnswer:", " 4"), idx=0
    )
    (logprob, _), = lm.loglikelihood([request])
    assert math.isfinite(logprob) and logprob < 0
