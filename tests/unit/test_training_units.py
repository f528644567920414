"""Fast checks of the training pieces: token layout, EOS handling, EMA math, metric sinks, presets,
the forward that gathers only the completion positions, seeded generation, example dropping."""

from __future__ import annotations


import pytest
import torch

from tolerances import assert_close_scaled
from unisd_core.components.ema_teacher import EmaTeacher, ema_update_
from unisd_core.config import ComponentsConfig, EmaConfig, TrainConfig
from unisd_core.generation.tokens import cut_at_eos
from unisd_core.presets import UNISD_STAR, all_subsets, component_subset, preset_config
from unisd_core.training import InMemorySink, JsonlSink, NonFiniteLossError
from unisd_core.training.sequences import ForcedBatch, build_forced_batch, gold_completion, stack_forced_batches
from unisd_core.training.step import combine_metrics


def test_forced_batch_positions_predict_each_completion_token():
    batch = build_forced_batch([[1, 2, 3], [4]], [[7, 8], [9, 10, 11]], pad_id=0)
    assert batch.input_ids_BL.tolist() == [[1, 2, 3, 7, 8], [4, 9, 10, 11, 0]]
    assert batch.attention_mask_BL.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    # Position p's output predicts token p + 1: row 0 predicts 7 at 2, 8 at 3.
    assert batch.positions_BT.tolist() == [[2, 3, 4], [0, 1, 2]]
    assert batch.completion_ids_BT.tolist() == [[7, 8, 0], [9, 10, 11]]
    assert batch.mask_BT.tolist() == [[1, 1, 0], [1, 1, 1]]
    for b in range(2):
        for t in range(3):
            if batch.mask_BT[b, t]:
                p = batch.positions_BT[b, t]
                assert batch.input_ids_BL[b, p + 1] == batch.completion_ids_BT[b, t]


def test_stacking_pads_and_keeps_rows():
    a = build_forced_batch([[1, 2]], [[3]], pad_id=0)
    b = build_forced_batch([[1, 2, 3, 4]], [[5, 6, 7]], pad_id=0)
    both = stack_forced_batches([a, b], pad_id=0)
    assert both.input_ids_BL.shape == (2, 7) and both.mask_BT.tolist() == [[1, 0, 0], [1, 1, 1]]


def test_empty_completion_is_an_all_masked_row_and_empty_prompt_is_refused():
    batch = build_forced_batch([[1]], [[]], pad_id=0)
    assert batch.mask_BT.sum() == 0
    with pytest.raises(ValueError, match="empty prompt"):
        build_forced_batch([[]], [[1]], pad_id=0)


def test_cut_at_eos_keeps_the_eos_and_drops_padding():
    assert cut_at_eos([5, 6, 2, 0, 0], [2]) == [5, 6, 2]
    assert cut_at_eos([5, 6, 7], [2]) == [5, 6, 7]
    assert cut_at_eos([9, 3, 2], [2, 3]) == [9, 3]


def test_ema_update_matches_the_formula():
    teacher, student = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -2.0])
    ema_update_([teacher], [student], beta=0.75)
    assert teacher.tolist() == pytest.approx([0.75 * 1 + 0.25 * 3, 0.75 * 2 + 0.25 * -2])
    with pytest.raises(ValueError):
        ema_update_([teacher], [student], beta=1.5)


def test_full_weight_ema_teacher_degenerate_settings_and_schedule():
    student = torch.nn.Linear(3, 2)
    frozen = EmaTeacher(EmaConfig(every_steps=1, beta=1.0), student, lora=False)
    live = EmaTeacher(EmaConfig(every_steps=2, beta=0.0), student, lora=False)
    initial = student.weight.detach().clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    assert frozen.after_optimizer_step(1, student)
    assert not live.after_optimizer_step(1, student)  # every 2 steps only
    torch.testing.assert_close(live.model.weight, initial)
    assert live.after_optimizer_step(2, student)
    torch.testing.assert_close(frozen.model.weight, initial)
    torch.testing.assert_close(live.model.weight, student.weight.detach())
    assert live.model.weight.dtype == torch.float32 and not live.model.weight.requires_grad
    restored = EmaTeacher(EmaConfig(every_steps=2, beta=0.0), torch.nn.Linear(3, 2), lora=False)
    restored.load_state_dict(live.state_dict())
    torch.testing.assert_close(restored.model.weight, live.model.weight)
    assert restored.updates == 1 and live.drift() == pytest.approx(0.0)


def test_sinks_and_metric_combination(tmp_path):
    memory = InMemorySink()
    memory.log(1, {"loss": 1.0})
    memory.log(2, {"loss": 0.5, "kl": 0.1})
    assert memory.series("loss") == [1.0, 0.5] and memory.series("kl") == [0.1]
    sink = JsonlSink(tmp_path / "m" / "metrics.jsonl")
    sink.log(3, {"loss": float("nan"), "kl": 0.25})
    assert sink.read() == [{"step": 3, "loss": "nan", "kl": 0.25}]
    combined = combine_metrics([{"loss": 1.0, "tokens": 4.0}, {"loss": 3.0, "tokens": 6.0}])
    assert combined == {"loss": 2.0, "tokens": 10.0}


def test_non_finite_error_names_the_bad_values():
    error = NonFiniteLossError(7, {"loss": float("nan"), "kl": 1.0})
    assert error.step == 7 and "loss" in str(error) and "kl" not in str(error).split("non-finite:")[1]


def test_presets():
    star = preset_config("unisd_star", model="tiny-qwen2").components
    assert star.enabled() == ("agreement", "contrastive", "feature_matching", "ema")
    assert star == UNISD_STAR
    assert (star.agreement.gamma, star.contrastive.weight, star.contrastive.margin) == (0.001, 0.01, 0.1)
    assert (star.feature_matching.weight, star.ema.every_steps, star.ema.beta) == (0.01, 10, 0.98)
    assert star.agreement.granularity == "token" and star.agreement.context_source == "retrieval"
    assert preset_config("gkd", model="m").gkd_on_policy_fraction == 0.5
    ssd = preset_config("ssd", model="m")
    assert (ssd.ssd_temperature, ssd.ssd_top_p) == (1.0, 0.95)
    assert preset_config("sdft", model="m", seed=3).seed == 3
    with pytest.raises(ValueError, match="did you mean 'opsd'"):
        preset_config("opds", model="m")
    with pytest.raises(ValueError, match="fixes method"):
        preset_config("sft", model="m", method="gkd")
    subsets = all_subsets()
    assert len({s.subset_label() for s in subsets}) == 32 and subsets[0] == ComponentsConfig()
    assert component_subset(["ema"], defaults="unisd_star").ema.beta == 0.98
    assert component_subset(["ema"]).ema.beta == 0.9


@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-llama", "tiny-gemma3"])
def test_gathered_forward_equals_the_full_forward(name):
    """The passes run without the padding mask (right padding + causal attention); what they
    gather must equal the masked full forward, with rows padded by up to 9 tokens."""
    from unisd_core.models.zoo import load_model_and_tokenizer
    from unisd_core.training.forward import completion_hidden, completion_logits

    model, _ = load_model_and_tokenizer(name)
    batch = build_forced_batch([[3, 4, 5, 6, 7, 8, 9, 10, 11], [7, 8]], [[9, 10], [11, 12, 13]], pad_id=0)
    hidden, logits = completion_logits(model, batch)
    with torch.no_grad():
        full = model(input_ids=batch.input_ids_BL, attention_mask=batch.attention_mask_BL).logits
    for b in range(2):
        for t in range(int(batch.mask_BT[b].sum())):
            # masked vs unmasked attention over padded rows: terms 2048-way head + decoder matmuls
            assert_close_scaled(logits[b, t], full[b, batch.positions_BT[b, t]], terms=2048 + 3 * 64,
                                msg=f"{name} row {b} token {t}")
    assert hidden.shape == (2, 3, model.config.hidden_size)
    left_padded = ForcedBatch(batch.input_ids_BL.flip(1), batch.attention_mask_BL.flip(1), batch.positions_BT,
                              batch.completion_ids_BT, batch.mask_BT)
    with pytest.raises(ValueError, match="right-padded"):
        completion_hidden(model, left_padded)


def test_hf_generation_is_seeded_and_leaves_the_global_rng_alone(qwen):
    from unisd_core.generation.hf import HFGenerationBackend
    from unisd_core.prompts import chat_prompt

    model, tokenizer = qwen
    backend = HFGenerationBackend(model, tokenizer)
    prompts = [chat_prompt(tokenizer, "Which number is larger?"), chat_prompt(tokenizer, "Hi")]
    settings = dict(max_new_tokens=6, temperature=1.0, top_p=1.0)
    torch.manual_seed(123)
    first = backend.generate(prompts, seed=5, **settings)
    after = torch.rand(1)
    torch.manual_seed(123)
    second = backend.generate(prompts, seed=5, **settings)
    assert first == second and torch.equal(after, torch.rand(1))
    assert first != backend.generate(prompts, seed=6, **settings)
    assert all(1 <= len(c) <= 6 for c in first)
    assert model.training is False  # restored to the state it came in


def test_gold_completion_and_end_of_turn_for_each_family():
    from unisd_core.models.zoo import load_model_and_tokenizer
    from unisd_core.training.sequences import end_of_turn_id, eos_token_ids

    expected = {"tiny-qwen2": "<|im_end|>", "tiny-llama": "<|eot_id|>", "tiny-gemma3": "<end_of_turn>"}
    for name, token in expected.items():
        model, tokenizer = load_model_and_tokenizer(name)
        end = end_of_turn_id(tokenizer, eos_token_ids(tokenizer, model))
        assert tokenizer.convert_ids_to_tokens(end) == token
        ids = gold_completion(tokenizer, "Answer: B", end, max_tokens=50)
        assert ids[-1] == end and tokenizer.decode(ids[:-1]) == "Answer: B"


def test_examples_over_the_prompt_limit_are_dropped(qwen, tiny_train_records, tiny_prepared_caches):
    from unisd_core.config import AgreementConfig
    from unisd_core.training.examples import prepare_examples

    _, tokenizer = qwen
    records = tiny_train_records(3)
    long = records[1].__class__(**{**records[1].to_json(), "prompt": "word " * 300})
    config = TrainConfig(model="tiny-qwen2", max_prompt_tokens=200)
    kept, dropped = prepare_examples(config, [records[0], long, records[2]], tokenizer)
    assert dropped == ["r1"] and [e.record.id for e in kept] == ["r0", "r2"]
    # A too-long agreement context drops the example too ("any context").
    caches = tiny_prepared_caches(records)
    caches.agreement_contexts["r2"][1] = "word " * 300
    with_agreement = config.model_copy(update={"components": ComponentsConfig(agreement=AgreementConfig())})
    kept, dropped = prepare_examples(with_agreement, records, tokenizer, caches)
    assert dropped == ["r2"]
    with pytest.raises(ValueError, match="no agreement contexts"):
        prepare_examples(with_agreement, records, tokenizer, None)
    with pytest.raises(ValueError, match="no training example left"):
        prepare_examples(config, [long], tokenizer)


def test_gkd_mixes_the_exact_on_policy_count(qwen, tiny_train_records):
    from unisd_core.training.completions import step_completions
    from unisd_core.training.examples import prepare_examples

    model, tokenizer = qwen

    class Recording:
        def __init__(self):
            self.prompts = []

        def generate(self, prompts, **_):
            self.prompts += prompts
            return [[42] for _ in prompts]

        def sync_weights(self, model):
            pass

    config = TrainConfig(model="tiny-qwen2", method="gkd", gkd_on_policy_fraction=0.25, max_new_tokens=32)
    examples, _ = prepare_examples(config, tiny_train_records(8), tokenizer)
    backend = Recording()
    completions, count = step_completions(config, examples, step=3, backend=backend, tokenizer=tokenizer, end_id=2)
    assert count == 2 and len(backend.prompts) == 2 and sum(c == [42] for c in completions) == 2
    again, _ = step_completions(config, examples, step=3, backend=Recording(), tokenizer=tokenizer, end_id=2)
    assert again == completions  # seeded by (seed, step)


def test_vllm_backend_fails_clearly_without_vllm(qwen):
    try:
        import vllm  # noqa: F401
    except ImportError:
        from unisd_core.generation.base import make_backend
        from unisd_core.generation.vllm_backend import VllmUnavailableError

        with pytest.raises(VllmUnavailableError, match="generation_backend='hf'"):
            make_backend("vllm", *qwen)
    else:  # pragma: no cover - GPU machines
        pytest.skip("vllm is installed here")


def test_group_by_length_orders_longest_first_and_keeps_pairs():
    from unisd_core.training.step import split_micro_batches

    examples = ["a", "b", "c", "d", "e"]
    completions = [[1], [1, 2, 3], [1, 2], [1, 2, 3], [1, 2, 3, 4]]
    plain = split_micro_batches(examples, completions, 2)
    assert [list(m.examples) for m in plain] == [["a", "b"], ["c", "d"], ["e"]]
    grouped = split_micro_batches(examples, completions, 2, group_by_length=True)
    assert [list(m.examples) for m in grouped] == [["e", "b"], ["d", "c"], ["a"]]  # stable among equals
    assert all(len(c) == {"a": 1, "b": 3, "c": 2, "d": 3, "e": 4}[e]
               for m in grouped for e, c in zip(m.examples, m.completions))
    assert TrainConfig(model="m", group_by_length=True).fingerprint() == TrainConfig(model="m").fingerprint()



@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_teacher_passes_carry_no_gradient(lora, tiny_train_config):
    """Teacher, bad-teacher and agreement passes run without gradient: under LoRA they use the
    student's own module (whose adapter requires grad), under full fine-tuning a frozen copy."""
    from unisd_core.config import EmaConfig
    from unisd_core.training.model_setup import build_student
    from unisd_core.training.teachers import TeacherModels

    overrides = {} if lora else {"lora": None}
    for components in (ComponentsConfig(), ComponentsConfig(ema=EmaConfig())):
        config = tiny_train_config(components=components, **overrides)
        student, _ = build_student(config)
        teachers = TeacherModels(config, student, lora=lora)
        batch = build_forced_batch([[3, 4, 5], [6, 7]], [[8, 9], [10]], pad_id=0)
        # base passes (agreement contexts) exist only where the base is kept: no EMA, or LoRA
        base_batches = [batch] if (components.ema is None or lora) else []
        teacher_outputs, base_outputs = teachers.run([batch, batch], base_batches, pad_id=0)
        for output in teacher_outputs + base_outputs:
            assert not output.hidden_RTH.requires_grad and output.hidden_RTH.grad_fn is None
        frozen = [m for m in (teachers.frozen_base, teachers.ema.model if teachers.ema else None) if m is not None]
        assert all(not p.requires_grad for module in frozen for p in module.parameters())
        assert any(p.requires_grad for p in student.parameters())
