"""The offline tiny model zoo, and model resolution/loading for every layer.

``tiny-qwen2``, ``tiny-llama`` and ``tiny-gemma3`` are real ``Qwen2ForCausalLM``,
``LlamaForCausalLM`` and ``Gemma3ForCausalLM`` (text-only) models with random weights from a fixed
seed, 2 layers, hidden size 64, and a locally trained tokenizer with the family's chat template
(:mod:`unisd_core.models.tokenizer`). They stand in for Qwen2.5 / Llama-3.1 / Gemma-3 instruct
models where no hub is reachable (tests, the demo, CI).

A tiny model is built on first use into ``$UNISD_CACHE_DIR/models/<name>-<build hash>`` (default
cache ``~/.cache/unisd``). The hash covers the zoo version, the model config, the tokenizer spec
and corpus, the seed and the torch/transformers/tokenizers versions, so any change gives a new
folder and never a stale one. Concurrent first use (Ray workers) is safe: one process builds into a
temporary folder under a file lock and renames it into place atomically; the others wait on the
lock and then find the finished folder. The folder loads with plain
``AutoModelForCausalLM.from_pretrained(dir)`` / ``AutoTokenizer.from_pretrained(dir)`` (no remote
code), which is how the ``lm_eval`` command line loads it.

``tiny-qwen2-synth`` (and ``-s1``, ``-s2``) are *pretrained* tiny Qwen2 bases (hidden 96,
3 layers) shipped with the package (:mod:`unisd_core.models.shipped`): resolving one checks its
files against the SHA-256 manifest and returns the package folder, so every machine starts from
the same bytes (issue 14). They are not in ``TINY_MODELS`` (tests iterate over those);
``PRETRAINED_MODELS`` lists them.

Departures from the real models: random weights (initializer range 0.1 instead of 0.02, so that
output distributions are not flat and divergences between contexts are measurable); the
generation config stops at the end-of-turn token only; Llama's pad token is set (the real one has
none).
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import tokenizers
import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma3TextConfig,
    GenerationConfig,
    LlamaConfig,
    PreTrainedConfig,
    Qwen2Config,
)
from transformers.utils import logging as hf_logging

from unisd_core.models import shipped
from unisd_core.models.tokenizer import (
    VOCAB_SIZE,
    chat_format,
    tokenizer_build_spec,
    train_tokenizer,
)

ZOO_VERSION = "1"
TINY_MODELS: tuple[str, ...] = ("tiny-qwen2", "tiny-llama", "tiny-gemma3")
TINY_FAMILIES: dict[str, str] = {
    "tiny-qwen2": "qwen2",
    "tiny-llama": "llama",
    "tiny-gemma3": "gemma3",
}
# Pretrained bases shipped in the package (built by unisd_core.models.pretrain, seeds 0-2).
PRETRAINED_MODELS: dict[str, str] = {name: shipped.FAMILY for name in shipped.SHIPPED_SEEDS}
MODEL_SEED = 1234
_BUILD_MARKER = "unisd_build.json"
_FAMILY_BY_MODEL_TYPE = {
    "qwen2": "qwen2",
    "llama": "llama",
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
}
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

_SHAPE = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=8192,
    initializer_range=0.1,
)


class ModelNotAvailableError(OSError):
    """A model name or path that cannot be resolved or loaded here (e.g. a hub id while offline)."""


def cache_root() -> Path:
    """``$UNISD_CACHE_DIR`` or ``~/.cache/unisd`` (read at call time, so tests can redirect it)."""
    return Path(os.environ.get("UNISD_CACHE_DIR") or Path.home() / ".cache" / "unisd").expanduser()


def tiny_model_config(name: str) -> PreTrainedConfig:
    """The transformers config of tiny model ``name`` (special-token ids included)."""
    family = _tiny_family(name)
    spec = chat_format(family)
    token_ids = dict(
        eos_token_id=spec.token_id(spec.end_of_turn_token),
        pad_token_id=spec.token_id(spec.pad_token),
        bos_token_id=spec.token_id(spec.bos_token) if spec.bos_token else None,
    )
    if family == "qwen2":
        # Qwen2.5-0.5B/1.5B tie the LM head to the embeddings.
        return Qwen2Config(**_SHAPE, **token_ids, tie_word_embeddings=True)
    if family == "llama":
        return LlamaConfig(**_SHAPE, **token_ids, tie_word_embeddings=False)
    # Gemma-3 interleaves sliding-window and global layers; keep one of each.
    return Gemma3TextConfig(
        **_SHAPE,
        **token_ids,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
        tie_word_embeddings=True,
    )


def _build_hash(payload: dict) -> str:
    """12 hex digits over ``payload`` plus the library versions that change a build's bytes."""
    versions = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }
    text = json.dumps({**payload, "versions": versions}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def tiny_build_hash(name: str) -> str:
    """12 hex digits over everything that defines the build of tiny model ``name``."""
    config = tiny_model_config(name).to_dict()
    config.pop("transformers_version", None)
    payload = {
        "zoo_version": ZOO_VERSION,
        "name": name,
        "seed": MODEL_SEED,
        "config": config,
        "tokenizer": tokenizer_build_spec(TINY_FAMILIES[name]),
    }
    return _build_hash(payload)


def tiny_model_dir(name: str) -> Path:
    """Where tiny model ``name`` lives (built or not)."""
    return cache_root() / "models" / f"{name}-{tiny_build_hash(name)}"


def build_tiny_model(name: str) -> Path:
    """Build tiny model ``name`` into the cache unless already there; returns its folder.

    A pretrained base of ``PRETRAINED_MODELS`` is not built: its shipped folder is returned after
    its SHA-256 manifest check (:func:`unisd_core.models.shipped.check_base`)."""
    if name in PRETRAINED_MODELS:
        return shipped.check_base(name)
    return _build_once(tiny_model_dir(name), lambda staging: _write_tiny_model(name, staging))


def _build_once(target: Path, write: Any) -> Path:
    """Run ``write(staging_folder)`` and rename the result to ``target``, once across processes."""
    if (target / _BUILD_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if (target / _BUILD_MARKER).is_file():
            return target  # another process built it while we waited
        # Under the lock, any folder without a marker or staging folder is a dead build's leftover.
        for leftover in [target, *target.parent.glob(f".{target.name}.tmp-*")]:
            if leftover.exists():
                shutil.rmtree(leftover)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            write(staging)
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _write_tiny_model(name: str, folder: Path) -> None:
    """Train the tokenizer, initialise the model from the seed, save both, then the marker."""
    family = TINY_FAMILIES[name]
    tokenizer = train_tokenizer(family)
    config = tiny_model_config(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(MODEL_SEED)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    spec = chat_format(family)
    model.generation_config = GenerationConfig(
        eos_token_id=spec.token_id(spec.end_of_turn_token),
        pad_token_id=spec.token_id(spec.pad_token),
        bos_token_id=config.bos_token_id,
    )
    with _quiet_progress_bars():
        model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    marker = {"name": name, "family": family, "build_hash": tiny_build_hash(name)}
    (folder / _BUILD_MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """Silence the shard-writing bar of a build (noise in every Ray worker's log)."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _tiny_family(name: str) -> str:
    if name not in TINY_FAMILIES:
        close = difflib.get_close_matches(name, TINY_MODELS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown tiny model {name!r}{hint} (known: {', '.join(TINY_MODELS)})")
    return TINY_FAMILIES[name]


def resolve_model(name_or_path: str) -> str:
    """A folder or hub id that ``from_pretrained`` loads.

    Tiny name -> its built folder (built now if needed); existing local folder -> itself
    unchanged; anything else -> returned as a hub id. Raises ``ValueError`` for an unknown
    ``tiny-*`` name, :class:`ModelNotAvailableError` for a missing path that is clearly local
    (absolute, ``./``, ``~``) or a hub id absent from the local hub cache while offline.
    """
    if name_or_path in TINY_FAMILIES or name_or_path in PRETRAINED_MODELS:
        return str(build_tiny_model(name_or_path))
    if Path(name_or_path).expanduser().is_dir():
        return name_or_path
    if name_or_path.startswith("tiny-"):
        _tiny_family(name_or_path)  # raises with a suggestion
    if name_or_path.startswith(("/", "./", "../", "~")):
        raise ModelNotAvailableError(f"model folder {name_or_path!r} does not exist")
    if _hub_offline() and not _in_hub_cache(name_or_path):
        raise ModelNotAvailableError(_unavailable_message(name_or_path))
    return name_or_path


def _hub_offline() -> bool:
    flags = (os.environ.get(var, "") for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag.strip().lower() in {"1", "true", "yes", "on"} for flag in flags)


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def _unavailable_message(name_or_path: str) -> str:
    return (
        f"cannot load model {name_or_path!r}: it is not a local folder, not a tiny model "
        f"({', '.join(TINY_MODELS)}), and the hub is offline or unreachable with no cached copy. "
        "Pass a local folder, download it beforehand, or use a tiny model."
    )


def load_model_and_tokenizer(
    name_or_path: str, *, dtype: str = "float32", device: str = "cpu"
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` with the Auto classes from :func:`resolve_model`'s answer.

    The model is in eval mode on ``device``; the tokenizer always has a pad token (EOS when the
    checkpoint defines none). Padding side is left to the caller.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    resolved = resolve_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        model = AutoModelForCausalLM.from_pretrained(resolved, dtype=DTYPES[dtype])
    except OSError as error:
        raise ModelNotAvailableError(_unavailable_message(name_or_path)) from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(device)
    model.eval()
    return model, tokenizer


def model_family(name_or_path: str) -> str:
    """``"qwen2"``, ``"llama"``, ``"gemma3"``, else the config's ``model_type``.

    Tiny names answer without building; a PEFT adapter folder answers for its base model.
    """
    if name_or_path in TINY_FAMILIES:
        return TINY_FAMILIES[name_or_path]
    if name_or_path in PRETRAINED_MODELS:
        return PRETRAINED_MODELS[name_or_path]
    resolved = resolve_model(name_or_path)
    adapter_config = Path(resolved).expanduser() / "adapter_config.json"
    if not (Path(resolved).expanduser() / "config.json").is_file() and adapter_config.is_file():
        base = json.loads(adapter_config.read_text(encoding="utf-8"))["base_model_name_or_path"]
        return model_family(base)
    model_type = AutoConfig.from_pretrained(resolved).model_type
    return _FAMILY_BY_MODEL_TYPE.get(model_type, model_type)
