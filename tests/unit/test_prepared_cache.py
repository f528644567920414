"""The on-disk preparation cache: keys, reuse, atomic writes, two processes at once."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

from unisd_core.components import prepared
from unisd_core.components.prepared import (
    PreparedCaches,
    agreement_settings,
    artifact_path,
    load_or_build,
    negatives_settings,
    prepare_caches,
    records_fingerprint,
)
from unisd_core.config import (
    AgreementConfig,
    ComponentsConfig,
    ContrastiveConfig,
    EmaConfig,
    TrainConfig,
)
from unisd_core.data.records import Record

RECORDS = [Record(f"r{i}", "cose", f"Question {i}?", f"Answer: {i}", "A") for i in range(6)]


def train_config(**components) -> TrainConfig:
    return TrainConfig(model="tiny-qwen2", components=ComponentsConfig(**components))


def test_agreement_key_changes_with_what_changes_contexts_only() -> None:
    records_hash = records_fingerprint(RECORDS)
    base = train_config(agreement=AgreementConfig(context_source="random"))

    def key(config: TrainConfig, records_hash: str = records_hash, seed: int = 0) -> Path:
        return artifact_path(Path("/c"), agreement_settings(config, records_hash, seed))

    assert key(base) == key(base)
    assert key(base) != key(base, seed=1)
    assert key(base) != key(base, records_fingerprint(RECORDS[:5]))
    edited = [*RECORDS[:5], Record("r5", "cose", "Question 5 edited?", "Answer: 5", "A")]
    assert key(base) != key(base, records_fingerprint(edited))
    for change in ({"num_contexts": 4}, {"context_source": "retrieval"}):
        settings = {"context_source": "random", **change}
        assert key(base) != key(train_config(agreement=AgreementConfig(**settings)))
    # Loss-only settings and the model do not rebuild model-free contexts.
    assert key(base) == key(train_config(agreement=AgreementConfig(context_source="random", gamma=0.5)))
    assert key(base) == key(
        TrainConfig(model="tiny-llama", components=ComponentsConfig(agreement=AgreementConfig(context_source="random")))
    )
    induced = train_config(agreement=AgreementConfig(context_source="induction"))
    assert key(induced) != key(
        TrainConfig(model="tiny-llama", components=ComponentsConfig(agreement=AgreementConfig(context_source="induction")))
    )
    assert key(induced) != key(
        train_config(agreement=AgreementConfig(context_source="induction", induction_max_new_tokens=8))
    )


def test_negatives_key_changes_with_model_and_generation_settings(monkeypatch) -> None:
    records_hash = records_fingerprint(RECORDS)

    def key(config: TrainConfig) -> Path:
        return artifact_path(Path("/c"), negatives_settings(config, records_hash, 0))

    base = key(train_config(contrastive=ContrastiveConfig()))
    assert base == key(train_config(contrastive=ContrastiveConfig(weight=0.5, margin=1.0)))
    assert base != key(train_config(contrastive=ContrastiveConfig(num_negatives=2)))
    assert base != key(train_config(contrastive=ContrastiveConfig(negative_max_new_tokens=8)))
    assert base != key(train_config(contrastive=ContrastiveConfig(negative_source="template")))
    assert base != key(TrainConfig(model="tiny-gemma3", components=ComponentsConfig(contrastive=ContrastiveConfig())))
    monkeypatch.setattr(prepared, "LIBRARY_VERSION", "999.0.0")
    assert base != key(train_config(contrastive=ContrastiveConfig()))


def test_nothing_is_built_when_neither_component_is_on(tmp_path: Path) -> None:
    caches = prepare_caches(train_config(ema=EmaConfig()), RECORDS, cache_dir=tmp_path)
    assert caches == PreparedCaches(None, None, {})
    assert list(tmp_path.iterdir()) == []


def test_random_contexts_are_cached_with_settings_and_reused(tmp_path: Path) -> None:
    config = train_config(agreement=AgreementConfig(context_source="random", num_contexts=2))
    first = prepare_caches(config, RECORDS, cache_dir=tmp_path)
    assert first.stats["agreement"]["cache"] == "built" and first.negatives is None
    assert all(len(texts) == 2 for texts in first.agreement_contexts.values())
    path = Path(first.stats["agreement"]["path"])
    stored = json.loads(path.read_text())
    assert stored["settings"]["context_source"] == "random"
    assert stored["data"]["contexts"] == first.agreement_contexts
    second = prepare_caches(config, RECORDS, cache_dir=tmp_path)
    assert second.stats["agreement"]["cache"] == "hit"
    assert second.agreement_contexts == first.agreement_contexts
    # Stored settings must match, not just the file name.
    stored["settings"]["seed"] = 99
    path.write_text(json.dumps(stored))
    assert prepare_caches(config, RECORDS, cache_dir=tmp_path).stats["agreement"]["cache"] == "built"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _build_slowly(cache_dir: str, counter: str, results: str) -> None:
    def build() -> dict:
        with open(counter, "a") as handle:
            handle.write("built\n")
        time.sleep(0.5)
        return {"value": 42}

    data, reused = load_or_build(Path(cache_dir), {"artifact": "demo", "x": 1}, build)
    with open(results, "a") as handle:
        handle.write(json.dumps([data, reused]) + "\n")


def test_two_processes_build_once(tmp_path: Path) -> None:
    counter, results = tmp_path / "count.txt", tmp_path / "results.txt"
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_build_slowly, args=(str(tmp_path / "cache"), str(counter), str(results)))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)  # a deadline against hangs, not a speed claim: generous under load
        assert worker.exitcode == 0
    assert counter.read_text().count("built") == 1
    outcomes = sorted(json.loads(line)[1] for line in results.read_text().splitlines())
    assert outcomes == [False, True]
    assert all(json.loads(line)[0] == {"value": 42} for line in results.read_text().splitlines())
