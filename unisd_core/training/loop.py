"""The explicit training loop of every method: on-policy self-distillation and its baselines.

One optimizer step (method.md 1, 2.6): take the step's per_device_batch x grad_accum examples
(a seeded permutation per epoch), get their completions once (student samples, gold, or SSD's
pre-drawn samples: :mod:`.completions`), split into micro-batches, run each micro-step
(:mod:`.step`; loss scaled by 1 / number of micro-batches, which is grad_accum except for a short
last batch), clip the gradient norm, AdamW + cosine-with-warmup step, then the EMA update and the
generation backend's weight sync (a bf16 model under full fine-tuning is updated through float32
master weights: :mod:`.precision`). A non-finite loss or gradient norm raises
:class:`NonFiniteLossError` before the optimizer touches the weights. Checkpoints every
``checkpoint_every`` steps and when ``should_stop()`` turns true; ``resume=True`` continues from
the last one and returns at once for a run that already finished.

Departures from the paper: a short last batch of an epoch is kept (its micro-batch count, not
grad_accum, divides the loss) instead of being dropped, so small datasets still train.
"""

from __future__ import annotations

import json
import math
import random
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from transformers import get_cosine_schedule_with_warmup

from unisd_core.config import TrainConfig
from unisd_core.data.records import Record
from unisd_core.generation.base import GenerationBackend, make_backend
from unisd_core.training.checkpoint import checkpoint_root, latest_checkpoint, load_checkpoint, save_checkpoint
from unisd_core.training.completions import derived_seed, ssd_samples, step_completions
from unisd_core.training.errors import NonFiniteLossError
from unisd_core.training.examples import Example, prepare_examples
from unisd_core.training.metrics import FanOutSink, JsonlSink, MetricsSink
from unisd_core.training.model_setup import build_student, export_model, trainable_parameters
from unisd_core.training.precision import MasterWeights, needs_master_weights
from unisd_core.training.sequences import end_of_turn_id, eos_token_ids
from unisd_core.training.step import combine_metrics, micro_step, split_micro_batches
from unisd_core.training.teachers import TeacherModels

RESULT_FILE = "train_result.json"


@dataclass(frozen=True)
class TrainResult:
    """``model_dir`` loads with ``from_pretrained`` once ``status == "completed"``."""

    model_dir: Path
    steps: int
    status: str
    final_metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainingRun:
    """Everything one run holds between steps (built by :func:`prepare_run`)."""

    config: TrainConfig
    model: nn.Module
    tokenizer: Any
    teachers: TeacherModels | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    backend: GenerationBackend | None
    examples: list[Example]
    dropped: list[str]
    total_steps: int
    pad_id: int
    end_id: int
    ssd_samples: dict[str, list[int]] | None = None
    master: MasterWeights | None = None  # float32 copies of a bf16 model's weights (full FT)

    @property
    def lora(self) -> bool:
        return self.config.lora is not None

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.examples) / (self.config.per_device_batch * self.config.grad_accum))

    def examples_for_step(self, step: int) -> list[Example]:
        """The examples of optimizer step ``step`` (1-based): a pure function of (seed, step)."""
        size = self.config.per_device_batch * self.config.grad_accum
        epoch, chunk = divmod(step - 1, self.steps_per_epoch)
        order = list(range(len(self.examples)))
        random.Random(derived_seed(self.config.seed, epoch, salt=3)).shuffle(order)
        return [self.examples[i] for i in order[chunk * size:(chunk + 1) * size]]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def default_device() -> str:
    """The first CUDA device when there is one (the cluster path), else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def prepare_run(config: TrainConfig, records: Sequence[Record], *, caches: Any = None,
                device: str | None = None) -> TrainingRun:
    """Model, teachers, optimizer, schedule, backend and tokenised examples for ``config``."""
    seed_everything(config.seed)
    model, tokenizer = build_student(config, device=device or default_device())
    examples, dropped = prepare_examples(config, records, tokenizer, caches)
    teachers = None if config.method in ("sft", "ssd") else TeacherModels(config, model, lora=config.lora is not None)
    master = MasterWeights(trainable_parameters(model)) if needs_master_weights(config) else None
    optimizer = torch.optim.AdamW(master.parameters() if master else trainable_parameters(model),
                                  lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(examples) / (config.per_device_batch * config.grad_accum))
    total = config.max_steps or config.epochs * steps_per_epoch
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total), total)
    samples_needed = config.method in ("sdft", "opsd", "gkd", "ssd")
    backend = make_backend(config.generation_backend, model, tokenizer) if samples_needed else None
    eos_ids = eos_token_ids(tokenizer, model)
    pad = tokenizer.pad_token_id
    return TrainingRun(config, model, tokenizer, teachers, optimizer, scheduler, backend, examples,
                       dropped, total, int(pad if pad is not None else eos_ids[0]),
                       end_of_turn_id(tokenizer, eos_ids), master=master)


def accumulate_gradients(run: TrainingRun, step: int, examples: Sequence[Example],
                         completions: Sequence[Sequence[int]]) -> dict[str, float]:
    """All micro-steps of one optimizer step (gradients left in ``.grad``). -> combined metrics."""
    micros = split_micro_batches(examples, completions, run.config.per_device_batch,
                                 group_by_length=run.config.group_by_length)
    outputs = []
    for micro in micros:
        output = micro_step(run.config, run.model, run.teachers, micro, pad_id=run.pad_id,
                            scale=1.0 / len(micros))
        if not math.isfinite(float(output.loss.detach())):
            run.optimizer.zero_grad(set_to_none=True)
            run.model.zero_grad(set_to_none=True)
            raise NonFiniteLossError(step, output.metrics)
        outputs.append(output.metrics)
    return combine_metrics(outputs)


def optimizer_step(run: TrainingRun, step: int) -> dict[str, float]:
    """Completions, micro-steps, clip, AdamW, schedule, EMA, weight sync. -> the step's metrics."""
    started = time.perf_counter()
    examples = run.examples_for_step(step)
    completions, on_policy = step_completions(
        run.config, examples, step=step, backend=run.backend, tokenizer=run.tokenizer,
        end_id=run.end_id, ssd_samples=run.ssd_samples)
    generated = time.perf_counter()
    values = accumulate_gradients(run, step, examples, completions)
    if run.master is not None:
        run.master.grads_to_master()
    updated = run.master.parameters() if run.master is not None else trainable_parameters(run.model)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(updated, run.config.max_grad_norm))
    values.update(grad_norm=grad_norm, learning_rate=float(run.scheduler.get_last_lr()[0]))
    if not math.isfinite(grad_norm):
        run.optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLossError(step, values)
    run.optimizer.step()
    if run.master is not None:
        run.master.master_to_model()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.teachers is not None and run.teachers.after_optimizer_step(step):
        values["ema/drift"] = run.teachers.ema.drift()
    if run.backend is not None:
        run.backend.sync_weights(run.model)
    elapsed = time.perf_counter() - started
    values.update(
        step_s=elapsed, generation_s=generated - started,
        tokens_per_s=values.get("tokens", 0.0) / max(elapsed, 1e-9),
        completion_length_mean=float(np.mean([len(c) for c in completions])),
        on_policy_fraction=on_policy / max(1, len(examples)), peak_memory_mb=peak_memory_mb(),
    )
    return values


def peak_memory_mb() -> float:
    """Peak CUDA allocation when on GPU, else the process's peak RSS (Linux reports KiB)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _finished(output_dir: Path, config: TrainConfig) -> TrainResult | None:
    path = output_dir / RESULT_FILE
    if not path.is_file():
        return None
    stored = json.loads(path.read_text(encoding="utf-8"))
    model_dir = Path(stored["model_dir"])
    if stored.get("fingerprint") != config.fingerprint() or not (model_dir / "config.json").is_file():
        return None
    return TrainResult(model_dir, int(stored["steps"]), "completed", dict(stored["final_metrics"]))


def _metrics_file(path: Path, *, keep_through: int) -> JsonlSink:
    """The run's JSONL sink, without rows past the step the run (re)starts from."""
    sink = JsonlSink(path)
    rows = [row for row in sink.read() if int(row["step"]) <= keep_through]
    path.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows), encoding="utf-8")
    return sink


def train(config: TrainConfig, records: list[Record], *, output_dir: Path,
          metrics: MetricsSink | None = None, caches: Any = None, resume: bool = True,
          should_stop: Callable[[], bool] | None = None, device: str | None = None) -> TrainResult:
    """Train ``config`` on ``records``; see the module docstring for one step and resumption.

    ``device``: where the student lives (default: CUDA when available, else CPU).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if resume and (done := _finished(output_dir, config)) is not None:
        return done
    if not resume:  # a fresh start must not later resume from a stale checkpoint
        shutil.rmtree(checkpoint_root(output_dir), ignore_errors=True)
        (output_dir / RESULT_FILE).unlink(missing_ok=True)
    run = prepare_run(config, records, caches=caches, device=device)
    ema = run.teachers.ema if run.teachers is not None else None
    state = dict(config=config, model=run.model, lora=run.lora, optimizer=run.optimizer,
                 scheduler=run.scheduler, ema=ema, master=run.master)
    checkpoint = latest_checkpoint(output_dir) if resume else None
    start = load_checkpoint(checkpoint, **state) if checkpoint is not None else 0
    if config.method == "ssd":
        run.ssd_samples = ssd_samples(config, run.examples, run.backend, run.tokenizer,
                                      output_dir / "ssd_samples.json")
    sink = FanOutSink(_metrics_file(output_dir / "metrics.jsonl", keep_through=start), metrics)
    values: dict[str, float] = {}
    for step in range(start + 1, run.total_steps + 1):
        values = optimizer_step(run, step)
        values["dropped_examples"] = float(len(run.dropped))
        sink.log(step, values)
        stopping = should_stop is not None and should_stop() and step < run.total_steps
        if step % config.checkpoint_every == 0 or stopping:
            save_checkpoint(output_dir, step, **state)
        if stopping:
            return TrainResult(output_dir / "model", step, "stopped", values)
    model_dir = export_model(run.model, run.tokenizer, output_dir / "model", lora=run.lora,
                             extra={"config": config.model_dump(mode="json"), "steps": run.total_steps,
                                    "dropped": run.dropped})
    (output_dir / RESULT_FILE).write_text(json.dumps(
        {"model_dir": str(model_dir), "steps": run.total_steps, "fingerprint": config.fingerprint(),
         "final_metrics": values}, indent=2, default=float), encoding="utf-8")
    return TrainResult(model_dir, run.total_steps, "completed", values)
