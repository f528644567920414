"""The training loop end to end on tiny models: it trains, exports a loadable folder, logs, raises
on a non-finite loss, keeps the EMA degenerate settings exact, accumulates gradients exactly and
resumes exactly."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tolerances import assert_close_scaled
from unisd_core.config import (
    AgreementConfig,
    ClippingConfig,
    ComponentsConfig,
    ContrastiveConfig,
    EmaConfig,
    FeatureMatchingConfig,
)
from unisd_core.models.zoo import load_model_and_tokenizer
from unisd_core.training import InMemorySink, JsonlSink, NonFiniteLossError, train
from unisd_core.training.forward import completion_logits
from unisd_core.training.loop import accumulate_gradients, optimizer_step, prepare_run
from unisd_core.training.sequences import build_forced_batch

pytestmark = pytest.mark.integration
# Longest chain of float reductions behind one logit or one gradient entry of the tiny models: the
# 2048-way softmax, the decoder's H = 64 and 128-wide matmuls, a step's ~20 tokens (tests/tolerances.py).
TERMS = 2048 + 3 * 64 + 20

EVERY_COMPONENT = ComponentsConfig(
    agreement=AgreementConfig(num_contexts=2), contrastive=ContrastiveConfig(),
    feature_matching=FeatureMatchingConfig(), ema=EmaConfig(every_steps=1, beta=0.5),
    clipping=ClippingConfig(mode="quantile", quantile=0.9),
)


def test_train_runs_logs_and_exports_a_loadable_model(tmp_path, tiny_train_config, tiny_train_records):
    config = tiny_train_config(max_steps=3, grad_accum=2)
    sink = InMemorySink()
    result = train(config, tiny_train_records(6), output_dir=tmp_path, metrics=sink)
    assert result.status == "completed" and result.steps == 3
    assert [step for step, _ in sink.rows] == [1, 2, 3]
    for name in ("loss", "kl", "grad_norm", "student_entropy", "tokens_per_s", "peak_memory_mb"):
        assert all(math.isfinite(v) for v in sink.series(name)), name
    assert sink.series("kl")[0] >= 0.0
    assert len(JsonlSink(tmp_path / "metrics.jsonl").read()) == 3
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert tokenizer("Answer: B")["input_ids"]
    # A finished run is not trained again.
    again = train(config, tiny_train_records(6), output_dir=tmp_path, metrics=InMemorySink())
    assert again.status == "completed" and again.final_metrics == pytest.approx(result.final_metrics)


def test_merged_export_matches_the_trained_student(tmp_path, tiny_train_config, tiny_train_records):
    config = tiny_train_config(max_steps=2, learning_rate=5e-2)
    result = train(config, tiny_train_records(4), output_dir=tmp_path)
    exported = AutoModelForCausalLM.from_pretrained(result.model_dir).eval()
    run = prepare_run(config, tiny_train_records(4))
    base = run.model.get_base_model()
    batch = build_forced_batch([[3, 4, 5, 6]], [[7, 8, 9]], run.pad_id)
    _, exported_logits = completion_logits(exported, batch)
    _, base_logits = completion_logits(base.eval(), batch)
    assert not torch.allclose(exported_logits, base_logits, atol=1e-4), "training changed nothing"


@pytest.mark.parametrize("method", ["sft", "sdft"])
def test_non_finite_loss_raises_before_the_weights_change(method, tiny_train_config, tiny_train_records):
    run = prepare_run(tiny_train_config(method=method), tiny_train_records(4))
    adapter = next(p for n, p in run.model.named_parameters() if "lora_A" in n)
    with torch.no_grad():
        adapter[0, 0] = float("nan")
    snapshot = {n: p.detach().clone() for n, p in run.model.named_parameters() if p.requires_grad}
    with pytest.raises(NonFiniteLossError) as caught:
        if method == "sft":
            optimizer_step(run, 1)
        else:  # a NaN policy cannot sample, so feed fixed completions to the micro-steps
            accumulate_gradients(run, 1, run.examples_for_step(1), [[5, 6, 2], [7, 2]])
    assert caught.value.step == 1 and "loss" in caught.value.values
    for name, parameter in run.model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is None
            torch.testing.assert_close(parameter.detach(), snapshot[name], equal_nan=True)


def _teacher_vs(run, reference: str):
    """Teacher logits and (frozen base | live student) logits on one fixed row, eval mode."""
    batch = build_forced_batch([[3, 4, 5, 6, 7]], [[8, 9, 10, 11]], run.pad_id)
    teacher = run.teachers.teacher_pass(batch).logits_RTV
    if reference == "base":  # the untouched base, loaded afresh
        base, _ = load_model_and_tokenizer(run.config.model)
        with torch.no_grad():
            return teacher, completion_logits(base, batch)[1]
    run.model.eval()
    with torch.no_grad():
        student = completion_logits(run.model, batch)[1]
    run.model.train()
    return teacher, student


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_ema_degenerate_settings(lora, tiny_train_config, tiny_train_records):
    records = tiny_train_records(4)
    extra = {} if lora else {"lora": None}
    frozen = prepare_run(tiny_train_config(components=ComponentsConfig(ema=EmaConfig(every_steps=1, beta=1.0)),
                                           learning_rate=5e-2, **extra), records)
    live = prepare_run(tiny_train_config(components=ComponentsConfig(ema=EmaConfig(every_steps=1, beta=0.0)),
                                         learning_rate=5e-2, **extra), records)
    for step in (1, 2):
        optimizer_step(frozen, step)
        optimizer_step(live, step)
    # Same weights through two code paths (EMA substitution vs the plain module): rounding only.
    teacher, base = _teacher_vs(frozen, "base")
    assert_close_scaled(teacher, base, terms=TERMS, msg="beta = 1 teacher vs the base")
    teacher, student = _teacher_vs(live, "student")
    assert_close_scaled(teacher, student, terms=TERMS, msg="beta = 0 teacher vs the student")
    # ...and the live student has moved away from the base, so the two checks are not the same.
    _, base = _teacher_vs(live, "base")
    assert (student - base).abs().max() > 1e-3


def test_lora_ema_teacher_moves_after_a_few_steps(tiny_train_config, tiny_train_records):
    config = tiny_train_config(components=ComponentsConfig(ema=EmaConfig(every_steps=1, beta=0.5)),
                               learning_rate=5e-2, max_steps=3)
    run = prepare_run(config, tiny_train_records(4))
    before = {name: tensor.clone() for name, tensor in run.teachers.ema.adapter.items()}
    for step in (1, 2, 3):
        optimizer_step(run, step)
    moved = max(float((run.teachers.ema.adapter[n] - before[n]).abs().max()) for n in before)
    assert moved > 1e-4
    teacher, base = _teacher_vs(run, "base")
    assert (teacher - base).abs().max() > 1e-4, "base + EMA(adapter) must differ from the base"


def _gradients(run) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in run.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_grad_accumulation_4x1_equals_1x4(lora, tiny_train_config, tiny_train_records, tiny_prepared_caches):
    records = tiny_train_records(4)
    caches = tiny_prepared_caches(records)
    # Agreement and quantile clipping use micro-batch statistics by definition (method.md 2.1, 2.5),
    # and the contrastive mean runs over the micro-batch's usable rows, so: no agreement, no
    # quantile clipping, every negative usable; the per-sequence components are on.
    components = ComponentsConfig(contrastive=ContrastiveConfig(), feature_matching=FeatureMatchingConfig(),
                                  ema=EmaConfig(), clipping=ClippingConfig(cap=0.5))
    extra = {} if lora else {"lora": None}
    completions = [[5, 6, 7, 2], [8, 9, 10, 11, 12, 2], [13, 2], [14, 15, 16, 17, 18, 19, 20]]
    gradients = []
    for batch, accum in ((4, 1), (1, 4)):
        run = prepare_run(tiny_train_config(components=components, per_device_batch=batch, grad_accum=accum,
                                            **extra), records, caches=caches)
        examples = run.examples_for_step(1)
        values = accumulate_gradients(run, 1, examples, completions[: len(examples)])
        assert math.isfinite(values["loss"])
        gradients.append(_gradients(run))
    assert gradients[0].keys() == gradients[1].keys() and gradients[0]
    for name in gradients[0]:
        assert_close_scaled(gradients[1][name], gradients[0][name], terms=TERMS, msg=name)


def test_short_last_batch_is_divided_by_its_own_micro_batch_count(tiny_train_config, tiny_train_records):
    """The loop's documented departure: 6 examples at 2 x 2 leave step 2 one micro-batch, whose
    loss is divided by 1 (its micro-batch count), not by grad_accum = 2: the same gradient as a
    2 x 1 step on those examples. Dividing by grad_accum would halve it (fails at ~5e3x the bound)."""
    records = tiny_train_records(6)
    completions = [[5, 6, 7, 2], [8, 9, 10, 2]]
    gradients = []
    for accum, step in ((2, 2), (1, 1)):
        run = prepare_run(tiny_train_config(per_device_batch=2, grad_accum=accum), records)
        if accum == 2:
            examples = run.examples_for_step(2)
            assert len(examples) == 2  # the short last batch of the epoch
        accumulate_gradients(run, step, examples, completions)
        gradients.append(_gradients(run))
    assert gradients[0].keys() == gradients[1].keys() and gradients[0]
    for name in gradients[0]:
        assert_close_scaled(gradients[0][name], gradients[1][name], terms=TERMS, msg=name)


def test_group_by_length_moves_rows_between_micro_batches_not_the_gradient(
        tiny_train_config, tiny_train_records, tiny_prepared_caches):
    """Length grouping only changes which prompts share a micro-batch: without per-micro-batch
    statistics (as in the 4x1 = 1x4 test) the step's gradient is the same, and it pads less."""
    from unisd_core.training.step import split_micro_batches

    records = tiny_train_records(4)
    caches = tiny_prepared_caches(records)
    components = ComponentsConfig(feature_matching=FeatureMatchingConfig(), clipping=ClippingConfig(cap=0.5))
    completions = [[5, 2], [8, 9, 10, 11, 12, 13, 14, 2], [13, 2], [14, 15, 16, 17, 18, 19, 20]]
    gradients, padded = [], []
    for grouped in (False, True):
        run = prepare_run(tiny_train_config(components=components, per_device_batch=2, grad_accum=2,
                                            group_by_length=grouped), records, caches=caches)
        examples = run.examples_for_step(1)
        accumulate_gradients(run, 1, examples, completions[: len(examples)])
        gradients.append(_gradients(run))
        micros = split_micro_batches(examples, completions[: len(examples)], 2, group_by_length=grouped)
        padded.append(sum(len(m.completions) * max(map(len, m.completions)) for m in micros))
    assert padded[1] < padded[0]  # 2 x 8 + 2 x 2 rows grouped, against 2 x 8 twice
    for name in gradients[0]:
        assert_close_scaled(gradients[1][name], gradients[0][name], terms=TERMS, msg=name)
    # with a per-micro-batch statistic (the quantile cap) the loop's grouping does show
    quantile = ComponentsConfig(clipping=ClippingConfig(mode="quantile", quantile=0.5))
    capped = []
    for grouped in (False, True):
        run = prepare_run(tiny_train_config(components=quantile, per_device_batch=2, grad_accum=2,
                                            group_by_length=grouped), records, caches=caches)
        examples = run.examples_for_step(1)
        accumulate_gradients(run, 1, examples, completions[: len(examples)])
        capped.append(_gradients(run))
    assert max(float((capped[0][n] - capped[1][n]).abs().max()) for n in capped[0]) > 1e-6


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_resume_equals_uninterrupted(lora, tmp_path, tiny_train_config, tiny_train_records, tiny_prepared_caches):
    records = tiny_train_records(6)
    caches = tiny_prepared_caches(records, k=2, without_negative=("r0",))
    extra = {} if lora else {"lora": None}
    config = tiny_train_config(components=EVERY_COMPONENT, max_steps=4, checkpoint_every=3,
                               warmup_ratio=0.25, **extra)
    straight_sink = InMemorySink()
    straight = train(config, records, output_dir=tmp_path / "straight", metrics=straight_sink, caches=caches)
    calls = []
    stopped = train(config, records, output_dir=tmp_path / "split", caches=caches,
                    should_stop=lambda: calls.append(1) or len(calls) >= 2)
    assert stopped.status == "stopped" and stopped.steps == 2
    assert (tmp_path / "split" / "checkpoints" / "step-00000002").is_dir()
    resumed_sink = InMemorySink()
    resumed = train(config, records, output_dir=tmp_path / "split", caches=caches, metrics=resumed_sink)
    assert resumed.status == "completed" and [s for s, _ in resumed_sink.rows] == [3, 4]
    # Same machine, same ops in the same order: equal to rounding; per-step loss scaled to itself.
    for step, (got, expected) in enumerate(zip(resumed_sink.series("loss"), straight_sink.series("loss")[2:]), 3):
        assert_close_scaled(got, expected, terms=TERMS, msg=f"loss at step {step}")
    a = AutoModelForCausalLM.from_pretrained(straight.model_dir).state_dict()
    b = AutoModelForCausalLM.from_pretrained(resumed.model_dir).state_dict()
    for name in a:
        # Scaled to each weight tensor: a merged LoRA delta is rounded at the weight's magnitude.
        # The 2 resumed steps at lr 1e-3 move a weight by ~1e-3, 30x this bound for a 0.4 weight.
        assert_close_scaled(b[name], a[name], terms=TERMS, msg=name)


def test_each_loss_component_changes_the_gradient(tiny_train_config, tiny_train_records, tiny_prepared_caches):
    """Liveness through the real loop: same completions, each component alone vs the empty set."""
    records = tiny_train_records(4)
    caches = tiny_prepared_caches(records, k=2)
    completions = [[5, 6, 7, 2], [8, 9, 10, 11, 12, 2], [13, 14, 2], [15, 16, 17, 18]]
    biting = {  # settings strong enough to act on a tiny random model
        "none": ComponentsConfig(),
        "agreement": ComponentsConfig(agreement=AgreementConfig(num_contexts=2, gamma=10.0)),
        "contrastive": ComponentsConfig(contrastive=ContrastiveConfig(weight=1.0)),
        "feature_matching": ComponentsConfig(feature_matching=FeatureMatchingConfig(weight=1.0)),
        "clipping": ComponentsConfig(clipping=ClippingConfig(cap=0.05)),
    }
    gradients = {}
    for name, components in biting.items():
        run = prepare_run(tiny_train_config(components=components, per_device_batch=4), records, caches=caches)
        accumulate_gradients(run, 1, run.examples_for_step(1), completions)
        gradients[name] = torch.cat([g.flatten() for g in _gradients(run).values()])
    for name in biting:
        if name != "none":
            change = (gradients[name] - gradients["none"]).norm() / gradients["none"].norm()
            assert change > 1e-3, f"{name} did not change the gradient ({float(change):.2e})"
