"""The baselines train as presets of the same loop (method.md 3), each with what makes it itself:
SFT trains on gold, GKD mixes a fraction of student samples, SSD draws its samples once and
reuses them on resume, OPSD's teacher sees the gold answer, UniSD* runs its four components."""

from __future__ import annotations

import json
import math

import pytest

from unisd_core.presets import preset_config
from unisd_core.training import InMemorySink, train
from unisd_core.training.loop import prepare_run

pytestmark = pytest.mark.integration

TINY = dict(model="tiny-qwen2", per_device_batch=2, grad_accum=2, max_new_tokens=6, max_steps=2,
            max_prompt_tokens=1024, warmup_ratio=0.0, learning_rate=1e-3)


@pytest.mark.parametrize("name", ["sft", "sdft", "gkd", "ssd", "opsd"])
def test_baseline_preset_trains(name, tmp_path, tiny_train_records):
    sink = InMemorySink()
    result = train(preset_config(name, **TINY), tiny_train_records(4), output_dir=tmp_path, metrics=sink)
    assert result.status == "completed" and result.steps == 2
    assert all(math.isfinite(v) for v in sink.series("loss"))
    fractions = sink.series("on_policy_fraction")
    expected = {"sft": 0.0, "ssd": 0.0, "sdft": 1.0, "opsd": 1.0, "gkd": 0.5}[name]
    assert fractions == [expected, expected]
    if name in ("sft", "ssd"):
        assert sink.series("nll/mean") and not sink.series("kl")
    else:
        assert len(sink.series("kl")) == 2


def test_sft_trains_on_the_gold_demonstration_ending_with_end_of_turn(tiny_train_records):
    from unisd_core.training.completions import step_completions

    end = None
    for budget in (64, 4):
        run = prepare_run(preset_config("sft", **{**TINY, "max_new_tokens": budget}), tiny_train_records(2))
        completions, _ = step_completions(run.config, run.examples, step=1, backend=None,
                                          tokenizer=run.tokenizer, end_id=run.end_id)
        end = run.tokenizer.convert_tokens_to_ids("<|im_end|>")
        demonstration = run.examples[0].record.demonstration
        if budget == 64:
            assert completions[0][-1] == end
            assert run.tokenizer.decode(completions[0][:-1]) == demonstration
        else:  # cut to the budget without an end token: a cut text must not teach stopping
            assert len(completions[0]) == 4 and end not in completions[0]
            assert demonstration.startswith(run.tokenizer.decode(completions[0]))


def test_ssd_samples_are_drawn_once_and_reused(tmp_path, tiny_train_records):
    config = preset_config("ssd", **TINY)
    records = tiny_train_records(4)
    stop_after_one = train(config, records, output_dir=tmp_path, should_stop=lambda: True)
    assert stop_after_one.status == "stopped"
    path = tmp_path / "ssd_samples.json"
    first = json.loads(path.read_text())["samples"]
    assert set(first) == {r.id for r in records} and all(first.values())
    train(config, records, output_dir=tmp_path)
    assert json.loads(path.read_text())["samples"] == first


def test_opsd_teacher_sees_the_gold_answer_not_the_demonstration(tiny_train_records):
    records = tiny_train_records(2)
    run = prepare_run(preset_config("opsd", **TINY), records)
    teacher_text = run.tokenizer.decode(run.examples[0].teacher_prompt_ids)
    assert "Answer: B" in teacher_text and "Reasoning:" not in teacher_text
    sdft = prepare_run(preset_config("sdft", **TINY), records)
    assert "Reasoning:" in sdft.tokenizer.decode(sdft.examples[0].teacher_prompt_ids)


def test_unisd_star_trains_with_its_components(tiny_train_records, tiny_prepared_caches):
    """Two steps of UniSD* (EMA every step, so that it acts inside them): each of its four
    components shows its own liveness, not just a finite number."""
    import dataclasses

    from unisd_core.training.loop import optimizer_step
    from unisd_core.training.sequences import build_forced_batch

    records = tiny_train_records(4)
    caches = tiny_prepared_caches(records, k=3)
    # A negative far from the gold one, so that the bad teacher's log-probs straddle the student's
    # on some tokens (with a near-copy of the gold text g ~ n and the hinge has no gradient).
    negative = ("Reasoning: Zebra quantum violet harbor 9 7 3 banana; the first number is obviously "
                "more because letters outrank digits.\nAnswer: A A A A")
    caches = dataclasses.replace(caches, negatives={rid: negative for rid in caches.negatives})
    config = preset_config("unisd_star", **TINY)
    ema = config.components.ema.model_copy(update={"every_steps": 1})
    config = config.model_copy(update={"components": config.components.model_copy(update={"ema": ema})})
    run = prepare_run(config, records, caches=caches)
    batch = build_forced_batch([e.teacher_prompt_ids for e in run.examples[:2]], [[5, 6, 7]] * 2, run.pad_id)
    teacher_before = run.teachers.teacher_pass(batch).hidden_RTH.clone()
    rows = [optimizer_step(run, step) for step in (1, 2)]
    assert all(math.isfinite(row["loss"]) for row in rows)
    assert min(row["agreement/weight_min"] for row in rows) < 1.0  # contexts disagree somewhere
    assert max(row["contrastive/active_fraction"] for row in rows) > 0.0  # a hinge with gradient
    assert min(row["feature_matching/loss"] for row in rows) > 0.0
    assert run.teachers.ema.updates == 2 and rows[-1]["ema/drift"] > 0.0
    assert (run.teachers.teacher_pass(batch).hidden_RTH - teacher_before).abs().max() > 0  # teacher moved
