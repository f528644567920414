"""The training loop on a CUDA device (skipped without one): every component on, LoRA and full
fine-tuning, float32 and bf16, gradient checkpointing; exact resume with the CUDA RNG restored.

Run on a GPU machine with ``pytest -m gpu tests/integration/test_training_gpu.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from unisd_core.config import (
    AgreementConfig,
    ClippingConfig,
    ComponentsConfig,
    ContrastiveConfig,
    EmaConfig,
    FeatureMatchingConfig,
)
from unisd_core.training import InMemorySink, train

pytestmark = [
    pytest.mark.integration,
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

EVERY_COMPONENT = ComponentsConfig(
    agreement=AgreementConfig(num_contexts=2), contrastive=ContrastiveConfig(),
    feature_matching=FeatureMatchingConfig(), ema=EmaConfig(every_steps=1, beta=0.5),
    clipping=ClippingConfig(),
)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
@pytest.mark.parametrize("model", ["tiny-qwen2", "tiny-gemma3"])
def test_every_component_trains_on_cuda(model, lora, dtype, tmp_path, tiny_train_config,
                                        tiny_train_records, tiny_prepared_caches):
    records = tiny_train_records(4)
    caches = tiny_prepared_caches(records, k=2, without_negative=("r1",))
    extra = {} if lora else {"lora": None}
    config = tiny_train_config(model=model, components=EVERY_COMPONENT, dtype=dtype, grad_accum=2,
                               gradient_checkpointing=True, max_steps=2, **extra)
    sink = InMemorySink()
    result = train(config, records, output_dir=tmp_path, metrics=sink, caches=caches, device="cuda")
    assert result.status == "completed"
    assert all(math.isfinite(v) for v in sink.series("loss") + sink.series("grad_norm"))
    assert sink.series("peak_memory_mb")[-1] > 0
    loaded = AutoModelForCausalLM.from_pretrained(result.model_dir)
    assert next(loaded.parameters()).dtype == getattr(torch, dtype)


def test_resume_on_cuda_equals_uninterrupted(tmp_path, tiny_train_config, tiny_train_records,
                                             tiny_prepared_caches):
    records = tiny_train_records(4)
    caches = tiny_prepared_caches(records, k=2)
    config = tiny_train_config(components=EVERY_COMPONENT, max_steps=4)
    straight = InMemorySink()
    train(config, records, output_dir=tmp_path / "a", metrics=straight, caches=caches, device="cuda")
    calls = []
    train(config, records, output_dir=tmp_path / "b", caches=caches, device="cuda",
          should_stop=lambda: calls.append(1) or len(calls) >= 2)
    resumed = InMemorySink()
    train(config, records, output_dir=tmp_path / "b", metrics=resumed, caches=caches, device="cuda")
    assert resumed.series("loss") == pytest.approx(straight.series("loss")[2:], rel=1e-4)
