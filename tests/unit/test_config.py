"""TrainConfig identity: what enters the fingerprint, and the baseline/component rule."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from unisd_core.config import ComponentsConfig, EmaConfig, TrainConfig


def test_fingerprint_ignores_only_the_micro_batch_split_of_the_effective_batch() -> None:
    base = TrainConfig(model="tiny-qwen2", per_device_batch=4, grad_accum=2)
    halved = base.model_copy(update={"per_device_batch": 2, "grad_accum": 4})
    assert halved.effective_batch == base.effective_batch == 8
    assert halved.fingerprint() == base.fingerprint()
    bigger = base.model_copy(update={"grad_accum": 4})
    assert bigger.fingerprint() != base.fingerprint()
    assert base.model_copy(update={"seed": 1}).fingerprint() != base.fingerprint()


def test_baselines_reject_components_with_the_reason() -> None:
    with pytest.raises(ValidationError, match="baseline and takes no components"):
        TrainConfig(model="tiny-qwen2", method="sft", components=ComponentsConfig(ema=EmaConfig()))


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ValidationError, match="extra"):
        TrainConfig(model="tiny-qwen2", learning_rte=1e-3)
