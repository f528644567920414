"""Teacher-side temperatures inside the training loop (issue 18 item 2, issue 13 item 1).

The loop scores the K agreement contexts with the frozen base at tau = 1 (method.md 2.1) and the
bad teacher with the teacher's weights at the training tau (method.md 2.2). These log-probs are
captured where the loop hands them to the loss (a recording wrapper around the real loss
function, nothing replaced) and compared with an independent float64 reference: the model folder
loaded afresh through the zoo, run by transformers' own full forward (its own soft-cap), one row
at a time without padding, then ``log_softmax(logits / tau)`` at the completion tokens.

A plain-vs-chunked comparison cannot see a temperature swapped in the loop (both paths receive
the same wrong log-probs); this test fails by two orders of magnitude over its tolerance for each
swap (see the mutation notes of issue 13). A second test takes one optimizer step first, so that
the EMA teacher differs from the base: the bad teacher must then score with the teacher's weights
and the contexts still with the base.
"""

from __future__ import annotations

import copy

import pytest
import torch

from tolerances import assert_close_scaled
from unisd_core.config import AgreementConfig, ComponentsConfig, ContrastiveConfig, EmaConfig
from unisd_core.models.tokenizer import VOCAB_SIZE

TAU = 0.6  # far enough from 1 that a swap moves every log-prob
COMPONENTS = ComponentsConfig(agreement=AgreementConfig(num_contexts=2, gamma=1.0),
                              contrastive=ContrastiveConfig(weight=0.5))


def _spy_on_losses(monkeypatch) -> list[dict[str, torch.Tensor | None]]:
    """Record the teacher-side inputs of every loss call of the loop (both loss paths)."""
    import unisd_core.training.step as step

    calls: list[dict[str, torch.Tensor | None]] = []
    for name in ("distillation_loss", "chunked_distillation_loss"):
        real = getattr(step, name)

        def recording(*args, _real=real, **kwargs):
            calls.append({key: kwargs.get(key) for key in (
                "agreement_logprobs_KBT", "bad_teacher_logprobs_BT", "contrastive_usable_B")})
            return _real(*args, **kwargs)

        monkeypatch.setattr(step, name, recording)
    return calls


@torch.no_grad()
def _reference_logprobs(model, prompt_ids: list[int], completion: list[int], tau: float) -> torch.Tensor:
    """float64 log p(y_t | prompt, y_<t) under softmax(logits / tau), from the full forward. -> [T]."""
    ids = torch.tensor([prompt_ids + completion])
    logits_LV = model(input_ids=ids).logits[0].double()
    start = len(prompt_ids) - 1  # the position predicting y_0
    rows_TV = logits_LV[start:start + len(completion)]
    return torch.log_softmax(rows_TV / tau, dim=-1).gather(-1, torch.tensor(completion)[:, None])[:, 0]


@pytest.mark.parametrize("model,lora,softcap,loss_path", [
    ("tiny-qwen2", True, None, "chunked"),
    ("tiny-qwen2", False, None, "plain"),
    ("tiny-gemma3", True, 5.0, "chunked"),  # the family's final soft-cap goes before the 1/tau
])
def test_agreement_at_tau_one_and_bad_teacher_at_training_tau(model, lora, softcap, loss_path, monkeypatch,
                                                              tiny_train_config, tiny_train_records,
                                                              tiny_prepared_caches):
    from unisd_core.models.zoo import load_model_and_tokenizer
    from unisd_core.training.forward import causal_lm
    from unisd_core.training.loop import accumulate_gradients, prepare_run

    records = tiny_train_records(4)
    caches = tiny_prepared_caches(records, k=2, without_negative=("r1",))
    settings = dict(model=model, components=COMPONENTS, per_device_batch=2, grad_accum=2, temperature=TAU,
                    loss_path=loss_path, loss_chunk_tokens=3)
    if not lora:
        settings["lora"] = None
    run = prepare_run(tiny_train_config(**settings), records, caches=caches)
    reference_model, _ = load_model_and_tokenizer(model)
    reference_model = reference_model.double().eval()
    if softcap is not None:  # tiny-gemma3 is built without one; exercise the family's cap
        modules = [run.model, getattr(run.teachers, "frozen_base", None), reference_model]
        for module in filter(None, modules):
            causal_lm(module).config.final_logit_softcapping = softcap

    generator = torch.Generator().manual_seed(0)
    completions = [torch.randint(10, VOCAB_SIZE, (n - 1,), generator=generator).tolist() + [run.end_id]
                   for n in (6, 3, 5, 4)]
    examples = run.examples[:4]
    calls = _spy_on_losses(monkeypatch)
    accumulate_gradients(run, 1, examples, completions)  # step 1: the teacher is still the base
    assert len(calls) == 2  # two micro-batches of two rows

    for micro, call in enumerate(calls):
        agreement_KBT, bad_BT = call["agreement_logprobs_KBT"], call["bad_teacher_logprobs_BT"]
        assert agreement_KBT.shape[:2] == (2, 2) and bad_BT.shape[0] == 2
        for row in range(2):
            example, completion = examples[2 * micro + row], completions[2 * micro + row]
            steps = len(completion)
            for k in range(2):
                # terms: the V-way log-sum-exp (>= the H = 64 and 128-wide matmuls of the forward)
                assert_close_scaled(agreement_KBT[k, row, :steps],
                                    _reference_logprobs(reference_model, example.context_prompt_ids[k],
                                                        completion, 1.0),
                                    terms=VOCAB_SIZE, msg=f"agreement context {k}, row {example.record.id}")
            usable = example.negative_prompt_ids is not None
            assert bool(call["contrastive_usable_B"][row]) == usable
            if usable:
                assert_close_scaled(bad_BT[row, :steps],
                                    _reference_logprobs(reference_model, example.negative_prompt_ids,
                                                        completion, TAU),
                                    terms=VOCAB_SIZE, msg=f"bad teacher, row {example.record.id}")
            else:
                assert bool((bad_BT[row] == 0).all())
    assert sum(not bool(call["contrastive_usable_B"].all()) for call in calls) == 1  # r1 was used


def test_after_a_step_the_bad_teacher_uses_the_ema_teacher_and_contexts_the_base(
        monkeypatch, tiny_train_config, tiny_train_records, tiny_prepared_caches):
    from unisd_core.models.zoo import load_model_and_tokenizer
    from unisd_core.training.loop import accumulate_gradients, optimizer_step, prepare_run

    records = tiny_train_records(4)
    components = COMPONENTS.model_copy(update={"ema": EmaConfig(every_steps=1, beta=0.0)})
    run = prepare_run(tiny_train_config(components=components, per_device_batch=2, temperature=TAU,
                                        learning_rate=5e-2), records, caches=tiny_prepared_caches(records, k=2))
    optimizer_step(run, 1)  # the student moves; beta = 0: the EMA teacher is now a copy of it
    teacher_model = copy.deepcopy(run.model).merge_and_unload().double().eval()
    base_model = load_model_and_tokenizer(run.config.model)[0].double().eval()
    examples, completions = run.examples[:2], [[40, 41, 42, run.end_id], [50, 51, run.end_id]]
    probe = examples[0].negative_prompt_ids
    moved = (_reference_logprobs(teacher_model, probe, completions[0], TAU)
             - _reference_logprobs(base_model, probe, completions[0], TAU)).abs().max()
    assert moved > 1e-2, "the teacher must differ from the base for this test to mean anything"

    calls = _spy_on_losses(monkeypatch)
    accumulate_gradients(run, 2, examples, completions)
    (call,) = calls
    for row, (example, completion) in enumerate(zip(examples, completions)):
        steps = len(completion)
        for k in range(2):  # terms: see the test above
            assert_close_scaled(call["agreement_logprobs_KBT"][k, row, :steps],
                                _reference_logprobs(base_model, example.context_prompt_ids[k], completion, 1.0),
                                terms=VOCAB_SIZE, msg=f"agreement context {k} (the frozen base), row {row}")
        assert_close_scaled(call["bad_teacher_logprobs_BT"][row, :steps],
                            _reference_logprobs(teacher_model, example.negative_prompt_ids, completion, TAU),
                            terms=VOCAB_SIZE, msg=f"bad teacher (the EMA teacher), row {row}")
