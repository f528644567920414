"""Test-session environment: offline hubs, a fresh cache for built tiny models, quiet tokenizers.

Set before anything imports transformers/datasets so that no test can reach a hub, and so that the
suite passes on a fresh machine with no cache (the tiny models are built on first use).
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_TRACKING_URI", "")  # never log to a user's default store
os.environ.pop("MLFLOW_TRACKING_URI")
if "UNISD_CACHE_DIR" not in os.environ:
    os.environ["UNISD_CACHE_DIR"] = tempfile.mkdtemp(prefix="unisd-test-cache-")


# --- shared fixtures: one torch thread per test, tiny configs, records, caches, a tiny model ---
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One thread: the suite shares two cores with Ray workers and sandboxed programs, and a
    fixed thread count keeps float reductions (and so the equality tests) reproducible."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def qwen():
    """tiny-qwen2 (model, tokenizer), loaded once per test module."""
    from unisd_core.models.zoo import load_model_and_tokenizer

    return load_model_and_tokenizer("tiny-qwen2")


@pytest.fixture
def tiny_train_config():
    """Factory of a tiny, fast TrainConfig: tiny-qwen2, LoRA r=4 (no dropout), 2x1 batch,
    8 new tokens, 2 steps, lr 1e-3 without warmup. Keyword overrides replace any field."""
    from unisd_core.config import LoraSettings, TrainConfig

    def make(**overrides):
        fields = dict(
            model="tiny-qwen2", per_device_batch=2, grad_accum=1, max_new_tokens=8, max_steps=2,
            max_prompt_tokens=1024, lora=LoraSettings(rank=4, alpha=8.0, dropout=0.0),
            learning_rate=1e-3, warmup_ratio=0.0, checkpoint_every=1000,
        )
        fields.update(overrides)
        return TrainConfig(**fields)

    return make


@pytest.fixture
def tiny_train_records():
    """Factory: ``n`` short multiple-choice Records (ids r0..r{n-1}), no dataset files needed."""
    from unisd_core.data.records import Record

    def make(n: int = 8):
        return [
            Record(
                id=f"r{i}", benchmark="scienceqa",
                prompt=f"Which number is larger?\nA. {10 + i}\nB. {20 + i}",
                demonstration=f"Reasoning: {20 + i} is more than {10 + i}.\nAnswer: B",
                answer="B", metadata={"choices": [str(10 + i), str(20 + i)]},
            )
            for i in range(n)
        ]

    return make


@pytest.fixture
def tiny_prepared_caches():
    """Factory: PreparedCaches with ``k`` hand-written agreement contexts per record and one
    negative per record (``None`` for the ids in ``without_negative``); no model generation."""
    from unisd_core.components.prepared import PreparedCaches

    def make(records, k: int = 3, without_negative: tuple[str, ...] = ()):
        contexts = {
            r.id: [f"Reference example {j}: {records[(i + j + 1) % len(records)].prompt}\n\n{r.prompt}"
                   for j in range(k)]
            for i, r in enumerate(records)
        }
        negatives = {r.id: None if r.id in without_negative else "Reasoning: the first is more.\nAnswer: A"
                     for r in records}
        return PreparedCaches(agreement_contexts=contexts, negatives=negatives)

    return make
