"""Pretraining of the synthetic base (unisd_core.models.pretrain): determinism for a fixed seed,
the completion-only loss, a saved folder that loads the way users and lm-eval load it, and the
shipped bases (SHA-256 manifest checked on load, recipe current).
Tiny settings (a few steps of a 1-layer model) keep this fast; the real budget is not run here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tolerances import assert_close_scaled
from unisd_core.data.synthetic import synthetic_records
from unisd_core.models import shipped, zoo
from unisd_core.models.pretrain import (
    PretrainSettings,
    completion_loss,
    encode_examples,
    make_batch,
    pretrain,
    save_pretrained_base,
)
from unisd_core.prompts import chat_prompt, teacher_prompt_text

TINY = dict(steps=3, reading_steps=1, batch_size=4, pool_size=16, hidden_size=32, intermediate_size=64,
            num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, threads=1,
            warmup_steps=1)


def state(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def test_same_seed_gives_identical_weights_and_another_seed_does_not() -> None:
    first, _, stats = pretrain(PretrainSettings(seed=0, **TINY))
    second, _, _ = pretrain(PretrainSettings(seed=0, **TINY))
    other, _, _ = pretrain(PretrainSettings(seed=1, **TINY))
    a, b, c = state(first), state(second), state(other)
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert any(not torch.equal(a[name], c[name]) for name in a)
    assert stats["parameters"] == sum(p.numel() for p in first.parameters())
    # Training moved the weights away from the seeded init.
    torch.manual_seed(0)
    init = state(AutoModelForCausalLM.from_config(first.config))
    assert any(not torch.equal(a[name], init[name]) for name in a if name in init)


def test_batch_masks_prompt_and_padding_and_loss_matches_full_logits() -> None:
    _, tokenizer, _ = pretrain(PretrainSettings(**{**TINY, "steps": 1}))
    records = synthetic_records("pretrain", 3)
    examples = encode_examples(tokenizer, records, seed=0)
    first = examples[0]
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.decode(first.student_prompt) == chat_prompt(tokenizer, records[0].prompt)
    assert tokenizer.decode(first.completion[:-1]) == records[0].demonstration
    assert first.completion[-1] == end_id and first.teacher[1] == first.completion
    assert tokenizer.decode(first.teacher[0]) == chat_prompt(
        tokenizer, teacher_prompt_text(records[0].prompt, records[0].demonstration))
    # The mismatched teacher example follows its (wrong) demonstration: completion = that demo.
    wrong = tokenizer.decode(first.mismatched[1][:-1])
    assert wrong != records[0].demonstration and wrong in tokenizer.decode(first.mismatched[0])
    letter = wrong.rsplit("Answer: ", 1)[1]
    assert letter in "ABCD" and letter != records[0].answer
    assert wrong == records[0].demonstration.replace(f"Answer: {records[0].answer}", f"Answer: {letter}")
    rows = [(first.student_prompt, first.completion), examples[1].mismatched]
    input_ids, attention, labels = make_batch(rows, tokenizer.pad_token_id)
    assert int((labels != -100).sum()) == len(first.completion) + len(examples[1].mismatched[1])
    assert int(attention[0].sum()) == len(first.student_prompt) + len(first.completion)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        __import__("unisd_core.models.pretrain", fromlist=["model_config"]).model_config(
            PretrainSettings(**TINY)))
    reference = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
    # two float32 paths of one token-mean NLL: terms = vocabulary log-sum-exp + the tokens summed
    assert_close_scaled(completion_loss(model, input_ids, attention, labels), reference,
                        terms=model.config.vocab_size + int((labels != -100).sum()), msg="completion loss")


def test_saved_base_round_trips_through_auto_classes(tmp_path) -> None:
    settings = PretrainSettings(**TINY)
    model, tokenizer, stats = pretrain(settings)
    folder = save_pretrained_base(model, tokenizer, tmp_path / "base", settings, stats)
    loaded_tokenizer = AutoTokenizer.from_pretrained(folder)
    loaded = AutoModelForCausalLM.from_pretrained(folder)
    text = chat_prompt(loaded_tokenizer, synthetic_records("test", 1)[0].prompt)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert loaded_tokenizer(text, add_special_tokens=False)["input_ids"] == ids
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([ids])).logits
        # the same weights after a save/load round trip: rounding of the same ops at most
        assert_close_scaled(loaded(input_ids=torch.tensor([ids])).logits, expected,
                            terms=model.config.vocab_size, msg="logits after the round trip")
    assert loaded.generation_config.eos_token_id == loaded_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert (folder / "unisd_build.json").is_file()


def test_shipped_bases_pass_their_manifest_and_match_the_current_recipe() -> None:
    """Each shipped base's files hash to the manifest's SHA-256, and the manifest's recipe is the
    one the code builds now (settings of its seed, training data spec, procedure version): a
    change of the generator, prompts or settings without a rebuild fails here."""
    from unisd_core.models import pretrain as pretraining

    manifest = shipped.read_manifest()
    assert set(manifest) == set(shipped.SHIPPED_SEEDS) == set(zoo.PRETRAINED_MODELS)
    for name, seed in shipped.SHIPPED_SEEDS.items():
        assert zoo.model_family(name) == "qwen2" and name not in zoo.TINY_MODELS
        entry = manifest[name]
        assert entry["seed"] == seed
        assert entry["settings"] == PretrainSettings(seed=seed).model_dump()
        assert entry["data"] == json.loads(json.dumps(pretraining.data_spec()))
        assert entry["pretrain_version"] == pretraining.PRETRAIN_VERSION
        folder = zoo.resolve_model(name)
        assert Path(folder) == shipped.BASES_DIR / name
        assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(entry["files"])
    size = sum(p.stat().st_size for p in shipped.BASES_DIR.rglob("*") if p.is_file())
    assert size < 10 * 2**20  # the budget for tracked binaries


def test_a_corrupted_shipped_file_is_refused_with_the_rebuild_command(tmp_path, monkeypatch) -> None:
    """Copy the shipped folders, flip one byte of a weight file: loading refuses it by name."""
    import shutil

    copy = tmp_path / "bases"
    shutil.copytree(shipped.BASES_DIR, copy)
    monkeypatch.setattr(shipped, "BASES_DIR", copy)
    monkeypatch.setattr(shipped, "MANIFEST", copy / "MANIFEST.json")
    assert shipped.check_base("tiny-qwen2-synth-s1") == copy / "tiny-qwen2-synth-s1"
    weights = copy / "tiny-qwen2-synth-s1" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(shipped.ShippedBaseError, match="model.safetensors.*--seed 1 --ship"):
        zoo.resolve_model("tiny-qwen2-synth-s1")
    (copy / "tiny-qwen2-synth" / "config.json").unlink()
    with pytest.raises(shipped.ShippedBaseError, match="config.json is missing"):
        zoo.load_model_and_tokenizer("tiny-qwen2-synth")
