"""Every one of the 32 component subsets trains 2 optimizer steps with finite losses, on each tiny
family, under LoRA and full fine-tuning (method.md 2: any of the 2^5 subsets must train).

Kept fast: one model load per (family, LoRA/full) case, 2x1 batch, 6 new tokens, through the same
``prepare_run`` / ``optimizer_step`` the public ``train`` uses (export is covered elsewhere).
"""

from __future__ import annotations

import math
import time

import pytest
import torch

from unisd_core.presets import all_subsets
from unisd_core.training.loop import optimizer_step, prepare_run

pytestmark = pytest.mark.integration

FAMILIES = ("tiny-qwen2", "tiny-llama", "tiny-gemma3")


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
@pytest.mark.parametrize("model", FAMILIES)
def test_every_subset_trains_two_steps(model, lora, tiny_train_config, tiny_train_records,
                                       tiny_prepared_caches):
    torch.set_num_threads(1)
    records = tiny_train_records(4)
    caches = tiny_prepared_caches(records, k=2, without_negative=("r1",))
    started = time.perf_counter()
    losses = {}
    for components in all_subsets():
        # EMA every step so that the EMA update itself runs inside the 2 steps.
        if components.ema is not None:
            components = components.model_copy(update={"ema": components.ema.model_copy(update={"every_steps": 1})})
        if components.agreement is not None:
            components = components.model_copy(
                update={"agreement": components.agreement.model_copy(update={"num_contexts": 2})})
        overrides = {} if lora else {"lora": None}
        config = tiny_train_config(model=model, components=components, max_new_tokens=6, **overrides)
        run = prepare_run(config, records, caches=caches)
        values = [optimizer_step(run, step) for step in (1, 2)]
        for row in values:
            assert math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"]), components.subset_label()
            assert row["tokens"] > 0
        assert ("ema/drift" in values[-1]) == (components.ema is not None)
        assert ("contrastive/loss" in values[-1]) == (components.contrastive is not None)
        losses[components.subset_label()] = values[0]["loss"]
    assert len(losses) == 32
    # Components change the objective: the 32 first-step losses are not all the same number.
    assert len({round(v, 6) for v in losses.values()}) > 4
    print(f"{model} lora={lora}: 32 subsets x 2 steps in {time.perf_counter() - started:.1f}s")
