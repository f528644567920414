"""The one module that imports lm_eval: run the ``unisd_*`` tasks and return typed results.

:func:`evaluate` runs the six task YAMLs of ``evaluation/tasks`` (method.md 5: chat-formatted
Record prompts, greedy decoding, our scorers) on a model given as

- a loaded HF model object (+ its tokenizer): wrapped in lm-eval's ``HFLM`` in memory, so a
  training job evaluates without writing and re-reading weights;
- a folder (``backend="hf"``): ``HFLM(pretrained=folder)``; a PEFT adapter folder
  (``adapter_config.json``) is loaded as base + adapter;
- a folder with ``backend="vllm"``: lm-eval's vLLM wrapper, imported lazily (GPU extra).

It returns one :class:`~evaluation.results.BenchmarkResult` per benchmark with every item's
prediction, extracted answer, score and reason, and the task version.

Greedy means greedy: with the HF backend, lm-eval's ``generate`` runs under a neutral model
``generation_config`` (the one :mod:`unisd_core.generation.hf` samples with), because released
instruct checkpoints ship defaults such as Qwen2.5's ``repetition_penalty`` 1.05 that
transformers would otherwise apply to every evaluation. (Through lm-eval's own command line those
checkpoint defaults still apply; that is lm-eval's behaviour, not ours.)

Departures: the task index is built from our folder only
(``TaskManager(include_path=..., include_defaults=False)``: indexing lm-eval's built-ins costs
seconds); stderr bootstrap is off (paired bootstrap over items happens in ``ablations``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from contextlib import nullcontext

from evaluation.results import PRIMARY_METRIC, BenchmarkResult, ItemResult
from unisd_core.generation.hf import neutral_generation_defaults

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
BACKENDS = ("hf", "vllm")


def task_name(benchmark: str) -> str:
    return f"unisd_{benchmark}"


def available_benchmarks() -> tuple[str, ...]:
    """Benchmarks with a task file in ``evaluation/tasks`` (the paper's six, plus e.g. synthetic)."""
    return tuple(sorted(path.stem.removeprefix("unisd_") for path in TASKS_DIR.glob("unisd_*.yaml")))


def _check_benchmarks(benchmarks: Iterable[str]) -> list[str]:
    chosen = list(dict.fromkeys(benchmarks))
    allowed = available_benchmarks()
    unknown = [name for name in chosen if name not in allowed or name not in PRIMARY_METRIC]
    if unknown or not chosen:
        raise ValueError(f"unknown benchmarks {unknown}; allowed: {', '.join(allowed)}")
    return chosen


def _hf_from_folder(folder: Path, batch_size: int, device: str, max_length: int | None):
    from lm_eval.models.huggingface import HFLM

    extra: dict[str, Any] = {} if max_length is None else {"max_length": max_length}
    adapter_config = folder / "adapter_config.json"
    if adapter_config.exists():
        base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
        has_tokenizer = (folder / "tokenizer_config.json").exists()
        return HFLM(
            pretrained=base, peft=str(folder), tokenizer=str(folder) if has_tokenizer else base,
            batch_size=batch_size, device=device, **extra,
        )
    return HFLM(pretrained=str(folder), batch_size=batch_size, device=device, **extra)


def _vllm_from_folder(folder: Path, batch_size: int, max_length: int | None, seed: int):
    try:
        import vllm  # noqa: F401 - only to fail early with a clear message
    except ImportError as error:
        raise ImportError(
            "backend='vllm' needs the GPU extra (pip install -c constraints-gpu.txt "
            "'unisd[gpu]'), which is not installed; use backend='hf'"
        ) from error
    from lm_eval.models.vllm_causallms import VLLM

    extra: dict[str, Any] = {} if max_length is None else {"max_model_len": max_length}
    adapter_config = folder / "adapter_config.json"
    if adapter_config.exists():
        settings = json.loads(adapter_config.read_text())
        return VLLM(
            pretrained=settings["base_model_name_or_path"], lora_local_path=str(folder),
            max_lora_rank=int(settings.get("r", 16)), batch_size=batch_size, seed=seed, **extra,
        )
    return VLLM(pretrained=str(folder), batch_size=batch_size, seed=seed, **extra)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_lm(
    model: Any,
    *,
    tokenizer: Any = None,
    batch_size: int = 8,
    backend: str = "hf",
    device: str | None = None,
    max_length: int | None = None,
    seed: int = 0,
):
    """An lm-eval ``LM`` for a folder path or a loaded model (see the module docstring)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if isinstance(model, (str, Path)):
        folder = Path(model)
        if not folder.exists():
            raise FileNotFoundError(f"model folder {folder} does not exist")
        if backend == "vllm":
            return _vllm_from_folder(folder, batch_size, max_length, seed)
        return _hf_from_folder(folder, batch_size, device or _default_device(), max_length)
    if backend == "vllm":
        raise ValueError("backend='vllm' needs a model folder, not a loaded model object")
    if tokenizer is None:
        raise ValueError("a loaded model needs its tokenizer: evaluate(model, ..., tokenizer=tok)")
    from lm_eval.models.huggingface import HFLM

    extra: dict[str, Any] = {} if max_length is None else {"max_length": max_length}
    return HFLM(
        pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
        device=device or str(next(model.parameters()).device), **extra,
    )


def _item_results(samples: list[dict[str, Any]], primary: str) -> tuple[ItemResult, ...]:
    items = []
    for sample in sorted(samples, key=lambda sample: sample["doc_id"]):
        detail = sample["doc"]["unisd_item"]  # written by the task's process_results
        prediction = sample["filtered_resps"][0]
        if isinstance(prediction, (list, tuple)):
            prediction = prediction[0]
        metrics = {name: float(sample[name]) for name in sample.get("metrics", [])}
        items.append(
            ItemResult(
                item_id=detail["item_id"],
                prediction=str(prediction),
                extracted=detail["extracted"],
                score=metrics[primary],
                reason=detail["reason"],
                metrics=metrics,
            )
        )
    return tuple(items)


def _benchmark_result(benchmark: str, output: dict[str, Any]) -> BenchmarkResult:
    name, primary = task_name(benchmark), PRIMARY_METRIC[benchmark]
    raw = output["results"][name]
    metrics = {
        key.split(",")[0]: float(value)
        for key, value in raw.items()
        if "," in key and "_stderr" not in key and isinstance(value, (int, float))
    }
    items = _item_results(output["samples"][name], primary)
    return BenchmarkResult(
        benchmark=benchmark,
        score=metrics[primary],
        metrics=metrics,
        items=items,
        task_version=str(output["versions"][name]),
    )


def evaluate(
    model: Any,
    benchmarks: Iterable[str],
    *,
    tokenizer: Any = None,
    limit: int | None = None,
    max_new_tokens: int = 1024,
    batch_size: int = 8,
    backend: str = "hf",
    sources: Mapping[str, str] | None = None,
    seed: int = 0,
    device: str | None = None,
    max_length: int | None = None,
) -> dict[str, BenchmarkResult]:
    """Score ``model`` (a folder or a loaded model) on ``benchmarks``; benchmark -> result.

    ``device`` defaults to the loaded model's device, or for a folder to CUDA when available;
    ``limit`` keeps the first items of each benchmark; ``sources`` maps a benchmark to a local
    JSONL path, a hub id or ``"hub"`` (default: the shipped samples); ``seed`` seeds the option
    shuffle and lm-eval's RNGs; ``max_length`` overrides the context length lm-eval assumes.
    """
    chosen = _check_benchmarks(benchmarks)
    # lm-eval puts a passed-in model in eval mode and leaves it there; a training job that
    # evaluates its live model must get it back as it gave it.
    was_training = getattr(model, "training", None)
    try:
        output = _run_tasks(model, chosen, tokenizer, limit, max_new_tokens, batch_size, backend,
                            sources, seed, device, max_length)
    finally:
        if was_training:
            model.train()
    return {name: _benchmark_result(name, output) for name in chosen}


def _run_tasks(model, chosen, tokenizer, limit, max_new_tokens, batch_size, backend, sources,
               seed, device, max_length) -> dict[str, Any]:
    from lm_eval.tasks import TaskManager

    lm = build_lm(
        model, tokenizer=tokenizer, batch_size=batch_size, backend=backend, device=device,
        max_length=max_length, seed=seed,
    )
    manager = TaskManager(
        include_path=str(TASKS_DIR),
        include_defaults=False,
        # allow_sample: a study without eval sources scores the shipped samples by design (the
        # CPU demo, tests); the task logs a WARNING into the step log for each one.
        metadata={"sources": dict(sources or {}), "shuffle_seed": seed, "allow_sample": True},
    )
    hf_model = getattr(lm, "model", None) if backend == "hf" else None
    neutral = neutral_generation_defaults(hf_model) if hf_model is not None else nullcontext()
    with neutral:
        output = _simple_evaluate(lm, chosen, manager, limit, max_new_tokens, seed)
    if output is None:  # lm-eval returns None on non-zero ranks; we run single-process
        raise RuntimeError("lm-eval returned no results")
    return output


def _simple_evaluate(lm, chosen, manager, limit, max_new_tokens, seed) -> dict[str, Any] | None:
    from lm_eval import simple_evaluate

    return simple_evaluate(
        model=lm,
        tasks=[task_name(name) for name in chosen],
        task_manager=manager,
        limit=limit,
        apply_chat_template=True,
        gen_kwargs={"max_gen_toks": max_new_tokens, "do_sample": False},
        log_samples=True,
        confirm_run_unsafe_code=True,
        bootstrap_iters=0,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
