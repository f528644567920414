"""Review checks of the training side against method.md (sections 1-4) that the unit and
integration tests of the training layer did not pin: GKD's on-policy share at small batches, the
byte-identical bad-teacher template, and which weights score the agreement contexts."""

from __future__ import annotations

import torch

from tolerances import assert_close_scaled
from unisd_core.config import AgreementConfig, ComponentsConfig, ContrastiveConfig, EmaConfig, TrainConfig


def test_gkd_one_prompt_steps_are_on_policy_at_the_rate_lambda(qwen, tiny_train_records):
    """method.md 3: a fraction lambda of the completions are student samples. With one prompt per
    step a rounded count (round(0.5) == 0) would never sample; the expected share must be lambda."""
    from unisd_core.generation.hf import HFGenerationBackend
    from unisd_core.training.completions import step_completions
    from unisd_core.training.examples import prepare_examples

    model, tokenizer = qwen
    config = TrainConfig(model="tiny-qwen2", method="gkd", gkd_on_policy_fraction=0.5, max_new_tokens=2,
                         per_device_batch=1, grad_accum=1)
    examples, _ = prepare_examples(config, tiny_train_records(1), tokenizer)
    backend = HFGenerationBackend(model, tokenizer)
    counts = [step_completions(config, examples, step=step, backend=backend, tokenizer=tokenizer,
                               end_id=2)[1] for step in range(1, 41)]
    assert set(counts) <= {0, 1}
    assert 0.25 <= sum(counts) / len(counts) <= 0.75  # 40 fair coin flips: P(outside) < 0.2%
    again = [step_completions(config, examples, step=step, backend=backend, tokenizer=tokenizer,
                              end_id=2)[1] for step in range(1, 41)]
    assert again == counts  # seeded by (seed, step)


def test_on_policy_count_is_exact_when_lambda_n_is_whole_and_unbiased_otherwise():
    import random

    from unisd_core.training.completions import on_policy_count

    rng = random.Random(0)
    assert {on_policy_count(0.25, 8, rng) for _ in range(50)} == {2}
    assert {on_policy_count(1.0, 3, rng) for _ in range(50)} == {3}
    draws = [on_policy_count(0.5, 3, rng) for _ in range(4000)]  # 1.5: one or two, evenly
    assert set(draws) == {1, 2} and abs(sum(draws) / len(draws) - 1.5) < 0.05


def test_bad_teacher_prompt_differs_from_the_teacher_only_in_the_demonstration(qwen, tiny_train_records,
                                                                               tiny_prepared_caches):
    """method.md 2.2: x^- is the teacher template with the negative in the demonstration slot,
    byte-identical otherwise (the authors' whitespace differs; ours must not)."""
    from unisd_core.prompts import chat_prompt, teacher_prompt_text
    from unisd_core.training.examples import prepare_examples

    _, tokenizer = qwen
    records = tiny_train_records(3)
    caches = tiny_prepared_caches(records)
    config = TrainConfig(model="tiny-qwen2", components=ComponentsConfig(contrastive=ContrastiveConfig()))
    examples, _ = prepare_examples(config, records, tokenizer, caches)
    for example in examples:
        record, negative = example.record, caches.negatives[example.record.id]
        good = chat_prompt(tokenizer, teacher_prompt_text(record.prompt, record.demonstration))
        bad = chat_prompt(tokenizer, teacher_prompt_text(record.prompt, negative))
        head, tail = good.split(record.demonstration)
        assert bad == head + negative + tail
        assert tokenizer.decode(example.negative_prompt_ids) == tokenizer.decode(tokenizer(bad)["input_ids"])
        assert tokenizer.decode(example.teacher_prompt_ids) == good


def test_agreement_contexts_are_scored_by_the_frozen_base_not_the_ema_teacher(tiny_train_config,
                                                                                tiny_train_records,
                                                                                tiny_prepared_caches):
    """method.md 2.1: the K contexts are scored by the frozen base even when the teacher is an EMA
    that follows the student (beta = 0, every step: a live teacher)."""
    from unisd_core.training.loop import optimizer_step, prepare_run
    from unisd_core.training.sequences import build_forced_batch

    records = tiny_train_records(4)
    components = ComponentsConfig(agreement=AgreementConfig(num_contexts=2),
                                  ema=EmaConfig(every_steps=1, beta=0.0))
    run = prepare_run(tiny_train_config(components=components, learning_rate=5e-2), records,
                      caches=tiny_prepared_caches(records, k=2))
    optimizer_step(run, 1)
    example = run.examples[0]
    batch = build_forced_batch([example.context_prompt_ids[0]], [[5, 6, 7, 2]], run.pad_id)
    teacher_out, base_out = run.teachers.run([batch], [batch], run.pad_id)
    with torch.no_grad(), run.model.disable_adapter():
        run.model.eval()
        from unisd_core.training.forward import completion_logits

        _, base_logits = completion_logits(run.model, batch)
    run.model.train()
    # Same weights, two code paths; terms: 2048-way head after the 64/128-wide decoder matmuls
    assert_close_scaled(base_out[0].logits_RTV, base_logits, terms=2048 + 3 * 64, msg="base pass logits")
    # The EMA teacher has moved with the student, so the check above is not vacuous.
    assert (teacher_out[0].logits_RTV - base_out[0].logits_RTV).abs().max() > 1e-3
