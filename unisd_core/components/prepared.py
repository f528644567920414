"""Preparation artifacts built once per (model, dataset, settings) and cached on disk.

:func:`prepare_caches` builds only what the run's components need: agreement contexts when
agreement is on, negative demonstrations (one chosen per example) when contrastive is on. Each
artifact is a JSON file under ``cache_dir`` named by a hash of exactly the inputs that change it:
the dataset (content hash of every record), the settings of that artifact, the model id where a
model writes it, the preparation seed and ``LIBRARY_VERSION``. The file stores those settings next
to the data and is reused only when they match. Writes go to a temp file renamed into place, and
building holds an exclusive ``flock`` on a sibling ``.lock`` file, so two processes preparing the
same artifact at once generate it once: the second waits and then reads.

Departures from the paper: artifacts are generated with a fixed ``preparation_seed`` (default 0),
not the training seed, so all 32 subsets and all seeds share one set of contexts and negatives
(design.md: computed once, reused). The one negative used per example is then chosen with the
training seed (cheap, no generation). Random and retrieval contexts do not depend on the model, so
the model id is not part of their key. Negatives are sampled in batches of 32 on a GPU and 8 on a
CPU (seed per batch), so a GPU-built and a CPU-built artifact differ; the key does not name the
device, and whichever is built first is reused.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from unisd_core.config import TrainConfig, config_hash
from unisd_core.data.records import Record
from unisd_core.version import LIBRARY_VERSION

PREPARATION_SEED = 0
# Layout of the cached JSON; bump when the stored data's shape changes, so old files are not read.
ARTIFACT_SCHEMA = 1


@dataclass(frozen=True)
class PreparedCaches:
    """What the training loop consumes; a field is None when its component is off."""

    agreement_contexts: dict[str, list[str]] | None = None
    negatives: dict[str, str | None] | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def records_fingerprint(records: Sequence[Record]) -> str:
    """Content hash of the dataset: ids, prompts, demonstrations, answers, metadata, in order."""
    return config_hash([record.to_json() for record in records])


def agreement_settings(config: TrainConfig, records_hash: str, seed: int) -> dict[str, Any]:
    """Every input that changes the agreement contexts (and nothing else)."""
    agreement = config.components.agreement
    assert agreement is not None
    settings: dict[str, Any] = {
        "artifact": "agreement_contexts",
        "schema": ARTIFACT_SCHEMA,
        "library_version": LIBRARY_VERSION,
        "records": records_hash,
        "context_source": agreement.context_source,
        "num_contexts": agreement.num_contexts,
        "seed": seed,
    }
    if agreement.context_source == "retrieval":
        from unisd_core.components.embeddings import EMBEDDING_MODEL_ID

        settings["embedding_model"] = EMBEDDING_MODEL_ID
    if agreement.context_source == "induction":
        settings["model"] = config.model
        settings["induction_examples"] = agreement.induction_examples
        settings["induction_max_new_tokens"] = agreement.induction_max_new_tokens
    return settings


def negatives_settings(config: TrainConfig, records_hash: str, seed: int) -> dict[str, Any]:
    """Every input that changes the generated negatives (weight and margin do not)."""
    contrastive = config.components.contrastive
    assert contrastive is not None
    return {
        "artifact": "negatives",
        "schema": ARTIFACT_SCHEMA,
        "library_version": LIBRARY_VERSION,
        "records": records_hash,
        "model": config.model,
        "num_negatives": contrastive.num_negatives,
        "negative_max_new_tokens": contrastive.negative_max_new_tokens,
        "negative_source": contrastive.negative_source,
        "seed": seed,
    }


def artifact_path(cache_dir: Path, settings: dict[str, Any]) -> Path:
    """``<cache_dir>/<artifact>-<hash of settings>.json``."""
    return Path(cache_dir) / f"{settings['artifact']}-{config_hash(settings)[:24]}.json"


@contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to a temp file in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, ensure_ascii=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _read_matching(path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return payload["data"] if payload.get("settings") == settings else None


def load_or_build(
    cache_dir: Path, settings: dict[str, Any], build: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], bool]:
    """(data, reused): the cached artifact when its stored settings match, else ``build()``."""
    path = artifact_path(cache_dir, settings)
    cached = _read_matching(path, settings)
    if cached is not None:
        return cached, True
    with _exclusive_lock(path.with_name(path.name + ".lock")):
        cached = _read_matching(path, settings)  # another process may have built it meanwhile
        if cached is not None:
            return cached, True
        data = build()
        write_json_atomic(path, {"settings": settings, "data": data})
        return data, False


class _LazyModel:
    """Loads the model only on a cache miss that needs it, at most once per prepare call."""

    def __init__(self, config: TrainConfig, model: Any, tokenizer: Any) -> None:
        self._config, self._pair = config, (model, tokenizer)

    def get(self) -> tuple[Any, Any]:
        if self._pair[0] is None or self._pair[1] is None:
            import torch

            from unisd_core.models.zoo import load_model_and_tokenizer

            device = "cuda" if torch.cuda.is_available() else "cpu"
            self._pair = load_model_and_tokenizer(
                self._config.model, dtype=self._config.dtype, device=device
            )
        return self._pair


def _prepare_agreement(
    config: TrainConfig, records: Sequence[Record], cache_dir: Path, lazy: _LazyModel, seed: int
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    from unisd_core.components.contexts import build_agreement_contexts
    from unisd_core.components.induction import build_induction_contexts, induce_instructions

    agreement = config.components.agreement
    assert agreement is not None
    settings = agreement_settings(config, records_fingerprint(records), seed)

    def build() -> dict[str, Any]:
        if agreement.context_source != "induction":
            return {"contexts": build_agreement_contexts(records, config=agreement, seed=seed)}
        model, tokenizer = lazy.get()
        instructions = induce_instructions(records, model, tokenizer, config=agreement, seed=seed)
        contexts = build_induction_contexts(
            records, model, tokenizer, config=agreement, seed=seed, instructions=instructions
        )
        return {"contexts": contexts, "instructions": instructions}

    data, reused = load_or_build(cache_dir, settings, build)
    stats: dict[str, Any] = {
        "cache": "hit" if reused else "built",
        "path": str(artifact_path(cache_dir, settings)),
        "source": agreement.context_source,
        "num_contexts": agreement.num_contexts,
    }
    if "instructions" in data:
        stats["empty_instructions"] = sum(not text for text in data["instructions"])
    return data["contexts"], stats


def _prepare_negatives(
    config: TrainConfig, records: Sequence[Record], cache_dir: Path, lazy: _LazyModel, seed: int
) -> tuple[dict[str, str | None], dict[str, Any]]:
    from unisd_core.components.negatives import (
        NegativeDemonstration,
        choose_negative,
        generate_negatives,
        negative_stats,
        template_negatives,
        usable_texts,
    )

    contrastive = config.components.contrastive
    assert contrastive is not None
    settings = negatives_settings(config, records_fingerprint(records), seed)

    def build() -> dict[str, Any]:
        if contrastive.negative_source == "template":  # no model needed
            generated = template_negatives(records, contrastive.num_negatives)
            return {rid: [item.to_json() for item in items] for rid, items in generated.items()}
        model, tokenizer = lazy.get()
        # Bigger batches on a GPU: N x num_negatives prompts is the costliest preparation step.
        on_gpu = next(model.parameters()).device.type == "cuda"
        generated = generate_negatives(
            records, model, tokenizer, config=contrastive, seed=seed, batch_size=32 if on_gpu else 8
        )
        return {rid: [item.to_json() for item in items] for rid, items in generated.items()}

    data, reused = load_or_build(cache_dir, settings, build)
    generated = {
        rid: [NegativeDemonstration(**item) for item in items] for rid, items in data.items()
    }
    texts = usable_texts(generated)
    chosen = {record.id: choose_negative(texts, record.id, config.seed) for record in records}
    stats = {
        "cache": "hit" if reused else "built",
        "path": str(artifact_path(cache_dir, settings)),
        **negative_stats(generated),
        "examples_without_chosen": sum(text is None for text in chosen.values()),
    }
    return chosen, stats


def prepare_caches(
    config: TrainConfig,
    records: Sequence[Record],
    *,
    cache_dir: Path,
    model: Any = None,
    tokenizer: Any = None,
    preparation_seed: int = PREPARATION_SEED,
) -> PreparedCaches:
    """Build or reuse what ``config.components`` needs; nothing at all when neither is on.

    ``model``/``tokenizer`` are used for generation (induction, negatives) when given; otherwise
    ``config.model`` is loaded, and only on a cache miss that needs it.
    """
    lazy = _LazyModel(config, model, tokenizer)
    contexts, negatives, stats = None, None, {}
    if config.components.agreement is not None:
        contexts, stats["agreement"] = _prepare_agreement(
            config, records, Path(cache_dir), lazy, preparation_seed
        )
    if config.components.contrastive is not None:
        negatives, stats["contrastive"] = _prepare_negatives(
            config, records, Path(cache_dir), lazy, preparation_seed
        )
    return PreparedCaches(agreement_contexts=contexts, negatives=negatives, stats=stats)
