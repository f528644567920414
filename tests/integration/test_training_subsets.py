"""Every one of the 32 component subsets trains 2 optimizer steps with finite losses, on each tiny
family, under LoRA and full fine-tuning (method.md 2: any of the 2^5 subsets must train), and
every component that is on shows its own liveness within those 2 steps: agreement weights below 1,
contrastive tokens that carry a hinge gradient, a non-zero feature-matching term, clipping that
fires (quantile cap at the median), and an EMA teacher whose passes moved away from the start.

Kept fast: one model load per (family, LoRA/full) case, 2x1 batch, 6 new tokens, through the same
``prepare_run`` / ``optimizer_step`` the public ``train`` uses (export is covered elsewhere).
"""

from __future__ import annotations

import dataclasses
import math
import time

import pytest
import torch

from unisd_core.presets import all_subsets
from unisd_core.training.loop import optimizer_step, prepare_run
from unisd_core.training.sequences import build_forced_batch

pytestmark = pytest.mark.integration

FAMILIES = ("tiny-qwen2", "tiny-llama", "tiny-gemma3")
# A negative far from the gold demonstration: with the fixture's short one the tiny random-init
# models score good and bad teacher alike (g ~ n), the student's log-prob sits outside [g, n] on
# every token of a step and the hinge has no gradient (measured: 0 of 12 tokens on tiny-gemma3
# full fine-tuning with EMA, both steps); with this one 2 to 5 of 12 carry a gradient.
NEGATIVE = ("Reasoning: Zebra quantum violet harbor 9 7 3 banana; the first number is obviously more "
            "because letters outrank digits.\nAnswer: A A A A")


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
@pytest.mark.parametrize("model", FAMILIES)
def test_every_subset_trains_two_steps(model, lora, tiny_train_config, tiny_train_records,
                                       tiny_prepared_caches):
    torch.set_num_threads(1)
    records = tiny_train_records(4)
    caches = tiny_prepared_caches(records, k=2, without_negative=("r1",))
    caches = dataclasses.replace(caches, negatives={rid: text and NEGATIVE for rid, text in caches.negatives.items()})
    started = time.perf_counter()
    losses = {}
    for components in all_subsets():
        # EMA every step so that the EMA update itself runs inside the 2 steps.
        if components.ema is not None:
            components = components.model_copy(update={"ema": components.ema.model_copy(update={"every_steps": 1})})
        if components.agreement is not None:
            components = components.model_copy(
                update={"agreement": components.agreement.model_copy(update={"num_contexts": 2})})
        if components.clipping is not None:  # the default cap C = 10 never fires on 2 steps
            components = components.model_copy(
                update={"clipping": components.clipping.model_copy(update={"mode": "quantile", "quantile": 0.5})})
        overrides = {} if lora else {"lora": None}
        config = tiny_train_config(model=model, components=components, max_new_tokens=6, **overrides)
        run = prepare_run(config, records, caches=caches)
        teacher_before = _teacher_hidden(run) if components.ema is not None else None
        values = [optimizer_step(run, step) for step in (1, 2)]
        for row in values:
            assert math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"]), components.subset_label()
            assert row["tokens"] > 0
        assert ("ema/drift" in values[-1]) == (components.ema is not None)
        assert ("contrastive/loss" in values[-1]) == (components.contrastive is not None)
        _assert_live(run, components, values, teacher_before)
        losses[components.subset_label()] = values[0]["loss"]
    assert len(losses) == 32
    # Components change the objective: the 32 first-step losses are not all the same number.
    assert len({round(v, 6) for v in losses.values()}) > 4
    print(f"{model} lora={lora}: 32 subsets x 2 steps in {time.perf_counter() - started:.1f}s")


def _teacher_hidden(run) -> torch.Tensor:
    """The teacher's last hidden states on a fixed batch (the first examples' teacher prompts)."""
    examples = run.examples[:2]
    batch = build_forced_batch([e.teacher_prompt_ids for e in examples], [[5, 6, 7]] * len(examples),
                               run.pad_id).to(next(run.model.parameters()).device)
    return run.teachers.teacher_pass(batch).hidden_RTH.clone()


def _assert_live(run, components, values, teacher_before) -> None:
    """Each enabled component's own liveness metric, over the 2 steps."""
    label = components.subset_label()
    if components.agreement is not None:  # weights below 1 where the contexts disagree
        assert min(row["agreement/weight_min"] for row in values) < 1.0, label
    if components.contrastive is not None:  # some token's hinge has a gradient
        assert max(row["contrastive/active_fraction"] for row in values) > 0.0, label
    if components.feature_matching is not None:
        assert min(row["feature_matching/loss"] for row in values) > 0.0, label
    if components.clipping is not None:  # the median cap clips the upper half of the tokens
        assert min(row["clipping/clipped_fraction"] for row in values) > 0.0, label
    if components.ema is not None:  # the teacher used by the passes moved (EMA every step)
        assert run.teachers.ema.updates == 2, label
        assert (_teacher_hidden(run) - teacher_before).abs().max() > 0, label
