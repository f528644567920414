"""What one step of a cell does inside a worker: prepare, train, evaluate (record is in the driver).

Each function takes a plain payload dict (picklable, so Ray ships it as is) and returns a plain
dict: ``{"ok": True, ...}`` or ``{"ok": False, "error_type": "oom" | "nonfinite" | "error",
"message", "traceback", "log_tail"}``. Returning failures instead of raising keeps the
classification independent of whether Ray can rebuild a library exception in the driver; a worker
that dies outright (killed, segfault) is retried by Ray and then reported by the runner.
``error_type`` ``permanent`` marks failures that the same input repeats (a missing model folder or
data file, an invalid config): the runner does not retry them. ``stopped`` means the step found
the study's stop file when it started (Ctrl-C's grace period) and did nothing.

Everything a step writes lives in its own folder ``<output>/steps/<step_id>/`` (``log.txt``,
``worker.json``, ``starts.jsonl``, ``records.jsonl``, ``train/``, ``results.json``), written
durably (fsync, then rename), so a killed driver or worker loses nothing: training resumes from
its last readable checkpoint in ``train/`` (a damaged one is set aside, :mod:`pipelines.repair`).
Each start of a step appends a line to ``starts.jsonl`` with the driver's launch id: the driver
reads it to tell a queued step from a running one, and to count Ray's own restarts.

Test-only fault injection (inert by default): the driver copies the environment variable
``UNISD_FAULTS`` into every payload, a comma-separated list of ``kind@cell:step`` entries, each
firing once per step folder (a marker file remembers it fired):
- ``kill@<cell>:<n>``: the worker SIGKILLs itself when training logs step n (a dead worker);
- ``oom@<cell>:<n>``: training raises ``torch.OutOfMemoryError`` at step n;
- ``nan@<cell>:<n>``: the logged loss at step n is replaced by NaN and the library's
  ``NonFiniteLossError`` raised, as the loop does on a real non-finite loss;
- ``slow@<cell>:<s>``: training sleeps s seconds after every step (gives a test time to kill the
  driver mid-training); unlike the others it fires on every step.

Departures from the paper: the authors delete checkpoints after evaluation; we keep them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

from pipelines.repair import set_aside_damaged_training
from pipelines.environment import collect_environment
from pipelines.retention_step import measure_retention, merge_retention
from pipelines.starts import append_start
from pipelines.state import write_json_atomic, write_text_atomic
from unisd_core.data.records import Record

LOG_TAIL_LINES = 40
FAULT_KINDS: tuple[str, ...] = ("kill", "oom", "nan", "slow")
# Failures that the same input repeats, by class name anywhere in the exception's MRO (the
# driver may not be able to import the library's classes): not retried.
PERMANENT_ERRORS: frozenset[str] = frozenset({
    "FileNotFoundError", "NotADirectoryError", "IsADirectoryError", "ModelNotAvailableError",
    "ValidationError"})


@dataclasses.dataclass(frozen=True)
class JobFunctions:
    """The library calls a step makes; ``None`` fields resolve to the real ones in the worker.

    Tests may pass stand-ins (module-level functions, so that Ray can ship them).
    """

    load_records: Callable[..., list[Record]] | None = None
    prepare_caches: Callable[..., Any] | None = None
    train: Callable[..., Any] | None = None
    evaluate: Callable[..., Any] | None = None
    # (payload, plain results, logger) -> {benchmark: RetentionReport}. None: the real one when
    # ``evaluate`` is the real one; a stand-in evaluation has no real model outputs to measure,
    # so with a stand-in ``evaluate`` retention is skipped unless a stand-in is given here too.
    retention: Callable[..., Any] | None = None

    def resolved(self) -> "JobFunctions":
        # Imported here: the driver never needs torch-heavy modules, only workers do.
        load_records = self.load_records
        if load_records is None:
            from unisd_core.data.datasets import load_records
        prepare_caches = self.prepare_caches
        if prepare_caches is None:
            from unisd_core.components.prepared import prepare_caches
        train = self.train
        if train is None:
            from unisd_core.training import train
        evaluate, retention = self.evaluate, self.retention
        if evaluate is None:
            from evaluation.lm_eval_adapter import evaluate
        if retention is None:
            retention = measure_retention if self.evaluate is None else skip_retention
        return JobFunctions(load_records, prepare_caches, train, evaluate, retention)


def run_step(payload: dict[str, Any]) -> dict[str, Any]:
    """Entry point of every remote step: dispatch on ``payload["kind"]``, capture the log."""
    step_dir = Path(payload["step_dir"])
    step_dir.mkdir(parents=True, exist_ok=True)
    started = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
               "launch": payload.get("launch"), "attempt": payload.get("attempt", 1)}
    _write_json(step_dir / "worker.json", started)
    append_start(step_dir, started)
    stop_file = payload.get("stop_file")
    if stop_file and Path(stop_file).exists():  # queued before Ctrl-C, started during the grace
        return {"ok": False, "error_type": "stopped", "message": "the study is stopping"}
    functions = (payload.get("functions") or JobFunctions()).resolved()
    with _step_log(step_dir / "log.txt") as logger:
        try:
            logger.info("step %s (%s) attempt %s", payload["step_id"], payload["kind"],
                        payload.get("attempt", 1))
            outcome = STEP_KINDS[payload["kind"]](payload, functions, logger)
            # after the step: its thread settings are the ones the arithmetic ran with
            return {"ok": True, **outcome, "environment": collect_environment()}
        except BaseException as error:  # noqa: BLE001 - every failure is reported, not lost
            if isinstance(error, KeyboardInterrupt):
                raise
            logger.error("step failed:\n%s", traceback.format_exc())
            failure = classify_failure(error)
    return {**failure, "log_tail": log_tail(step_dir / "log.txt")}


def classify_failure(error: BaseException) -> dict[str, Any]:
    """``oom`` (retry with a smaller micro-batch), ``nonfinite`` and ``permanent`` (final), or
    ``error`` (retried)."""
    kind = "error"
    if _is_oom(error):
        kind = "oom"
    elif type(error).__name__ == "NonFiniteLossError":
        kind = "nonfinite"
    elif PERMANENT_ERRORS & {cls.__name__ for cls in type(error).__mro__}:
        kind = "permanent"
    return {"ok": False, "error_type": kind, "message": f"{type(error).__name__}: {error}",
            "step": getattr(error, "step", None),
            "traceback": "".join(traceback.format_exception(error))[-4000:]}


def _is_oom(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    torch = sys.modules.get("torch")
    return bool(torch is not None and isinstance(error, torch.OutOfMemoryError))


# ---- the three worker-side steps ----------------------------------------------------------

def prepare_step(payload: dict[str, Any], functions: JobFunctions,
                 logger: logging.Logger) -> dict[str, Any]:
    """Load the training records once and build the shared caches for every cache setting."""
    from unisd_core.config import TrainConfig

    data = payload["data"]
    records = functions.load_records(payload["training_set"], "train", data["source"],
                                     limit=data["limit"], seed=data["seed"])
    records_path = Path(payload["step_dir"]) / "records.jsonl"
    _write_jsonl(records_path, [record.to_json() for record in records])
    logger.info("%d training records -> %s", len(records), records_path)
    for config_payload in payload["cache_configs"]:
        config = TrainConfig.model_validate(config_payload)
        logger.info("building caches for %s", config.components.subset_label())
        functions.prepare_caches(config, records, cache_dir=Path(payload["cache_dir"]))
    return {"records_path": str(records_path), "num_records": len(records),
            "cache_dir": payload["cache_dir"]}


def train_step(payload: dict[str, Any], functions: JobFunctions,
               logger: logging.Logger) -> dict[str, Any]:
    """Train one cell (resuming from ``train/`` when a checkpoint is there)."""
    from unisd_core.config import TrainConfig

    config = TrainConfig.model_validate(payload["train"])
    records = [Record.from_json(row) for row in _read_jsonl(Path(payload["records_path"]))]
    caches = None
    if payload.get("needs_caches"):
        caches = functions.prepare_caches(config, records, cache_dir=Path(payload["cache_dir"]))
    output_dir = Path(payload["step_dir"]) / "train"
    repaired = set_aside_damaged_training(output_dir)
    for note in repaired:
        logger.warning("damaged training state set aside: %s", note)
    checkpoint_before = _latest_checkpoint_name(output_dir)
    sink = _metrics_sink(payload)
    stop_file = Path(payload["stop_file"])
    logger.info("training %s: batch %d x accum %d, checkpoints present: %s", payload["cell"],
                config.per_device_batch, config.grad_accum, checkpoint_before or "none")
    try:
        result = functions.train(config, records, output_dir=output_dir, metrics=sink,
                                 caches=caches, resume=True, should_stop=stop_file.exists)
    finally:
        sink.close()
    logger.info("training ended: status %s after %s steps", result.status, result.steps)
    return {"model_dir": str(result.model_dir), "steps": int(result.steps),
            "status": str(result.status), "final_metrics": _floats(result.final_metrics),
            "resumed_from": checkpoint_before, "model_family": model_family(config.model),
            "repaired": repaired}


def evaluate_step(payload: dict[str, Any], functions: JobFunctions,
                  logger: logging.Logger) -> dict[str, Any]:
    """Score a checkpoint (or the base model) on the cell's benchmarks; results to disk.

    Then, unless ``eval.retention`` is off, gold fit, retention and JSD to base per benchmark
    and per item (:mod:`pipelines.retention_step`), merged into the results' ``metrics``.
    """
    model = payload["model_dir"]
    if model is None:
        from unisd_core.models.zoo import resolve_model

        model = resolve_model(payload["model"])
    settings = payload["eval"]
    logger.info("evaluating %s on %s", model, payload["benchmarks"])
    results = functions.evaluate(model, tuple(payload["benchmarks"]), limit=settings["limit"],
                                 max_new_tokens=settings["max_new_tokens"],
                                 batch_size=settings["batch_size"],
                                 sources=payload.get("sources") or None)
    serial = {name: to_plain(result) for name, result in results.items()}
    if settings.get("retention", True):
        merge_retention(serial, functions.retention(payload, serial, logger))
    results_path = Path(payload["step_dir"]) / "results.json"
    _write_json(results_path, serial)
    scores = {name: result["score"] for name, result in serial.items()}
    logger.info("scores: %s", scores)
    return {"results_path": str(results_path), "scores": scores,
            "model_family": model_family(payload["model"])}


def skip_retention(payload: dict[str, Any], results: dict[str, Any],
                   logger: logging.Logger) -> dict[str, Any]:
    """The retention stand-in for stand-in evaluations: measures nothing."""
    logger.info("retention skipped: the evaluation is a stand-in")
    return {}


def model_family(model: str) -> str:
    """The architecture family of a model (tag only: ``unknown`` rather than a failed step)."""
    try:
        from unisd_core.models.zoo import model_family as family

        return family(model)
    except Exception:  # noqa: BLE001 - e.g. a hub id with no config reachable offline
        return "unknown"


STEP_KINDS: dict[str, Callable[..., dict[str, Any]]] = {
    "prepare": prepare_step, "train": train_step, "evaluate": evaluate_step,
    "base_eval": evaluate_step,
}


# ---- metrics, faults, logs ------------------------------------------------------------------

def _metrics_sink(payload: dict[str, Any]) -> Any:
    from unisd_core.training.metrics import FanOutSink

    sinks: list[Any] = []  # the loop itself appends every step to train/metrics.jsonl
    if payload.get("run_id") and payload.get("tracking_uri"):
        from pipelines.mlflow_adapter import MlflowMetricsSink

        sinks.append(MlflowMetricsSink(payload["tracking_uri"], payload["run_id"]))
    faults = parse_faults(payload.get("faults", ""), payload["cell"])
    return _ClosingSink(FanOutSink(*sinks), sinks, faults, Path(payload["step_dir"]))


class _ClosingSink:
    """Fan-out sink that flushes batched sinks on close and fires test-only faults."""

    def __init__(self, inner: Any, sinks: list[Any], faults: dict[str, int], step_dir: Path):
        self.inner, self.sinks, self.faults, self.step_dir = inner, sinks, faults, step_dir

    def log(self, step: int, values: dict[str, float]) -> None:
        fired = self._fire("nan", step)
        if fired:
            values = {**values, "loss": float("nan")}
        self.inner.log(step, values)
        if fired:
            from unisd_core.training.errors import NonFiniteLossError

            self.close()
            raise NonFiniteLossError(step, values)  # injected by UNISD_FAULTS (test hook)
        if self._fire("oom", step):
            import torch

            raise torch.OutOfMemoryError("injected by UNISD_FAULTS (test hook)")
        if self._fire("kill", step):
            self.close()
            os.kill(os.getpid(), signal.SIGKILL)
        if "slow" in self.faults:
            self.close()  # flush, so that a killed run still shows its steps
            time.sleep(self.faults["slow"])

    def _fire(self, kind: str, step: int) -> bool:
        marker = self.step_dir / f".fault-{kind}-fired"
        if kind not in self.faults or step < self.faults[kind] or marker.exists():
            return False
        marker.write_text(str(step))
        return True

    def close(self) -> None:
        for sink in self.sinks:
            if hasattr(sink, "close"):
                sink.close()


def parse_faults(spec: str, cell: str) -> dict[str, int]:
    """``"kill@a:2,oom@b:1"`` -> the faults of ``cell`` as ``{kind: step}``."""
    faults: dict[str, int] = {}
    for entry in filter(None, (part.strip() for part in (spec or "").split(","))):
        kind, _, target = entry.partition("@")
        name, _, step = target.rpartition(":")
        if kind not in FAULT_KINDS or not name or not step.isdigit():
            raise ValueError(f"UNISD_FAULTS entry {entry!r} is not kind@cell:step "
                             f"(kind one of {', '.join(FAULT_KINDS)})")
        if name == cell:
            faults[kind] = int(step)
    return faults


@contextlib.contextmanager
def _step_log(path: Path) -> Iterator[logging.Logger]:
    """Route this step's logging, prints and warnings to ``path`` (appended across attempts)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    with path.open("a", encoding="utf-8") as stream, contextlib.redirect_stdout(stream), \
            contextlib.redirect_stderr(stream):
        try:
            yield logging.getLogger("unisd.step")
        finally:
            root.removeHandler(handler)
            root.setLevel(previous_level)
            handler.close()


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def to_plain(value: Any) -> Any:
    """Dataclasses / pydantic models / tuples -> JSON-ready structures."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "model_dump"):
        return to_plain(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return {str(key): to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    return value


def _floats(values: Any) -> dict[str, float]:
    return {str(k): float(v) for k, v in dict(values or {}).items()
            if isinstance(v, (int, float))}


def _latest_checkpoint_name(output_dir: Path) -> str | None:
    from unisd_core.training.checkpoint import latest_checkpoint

    found = latest_checkpoint(output_dir)
    return found.name if found is not None else None


def _write_json(path: Path, payload: Any) -> None:
    write_json_atomic(path, payload)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
