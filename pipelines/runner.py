"""Run a study: the driver loop over the job graph, on Ray, recorded in MLflow, resumable.

``run_study`` is idempotent: a step whose state file says ``done`` with the same key is skipped;
anything else runs (training resumes from its checkpoint); cell runs are found in MLflow by run key,
never duplicated, and created when a cell first needs one (its training starts or it is recorded),
so a large grid's first steps do not wait for thousands of runs. Start-up: the SQLite store is
created while Ray starts. Failures: a step that returns an error is retried up to ``max_retries`` times;
an out-of-memory failure is retried with half the micro-batch and twice the gradient accumulation
(effective batch unchanged; the change is recorded in the state and as run tags); a non-finite
loss fails its cell at once. A failed step never stops the others; its dependents are skipped
with the reason. Ctrl-C (or SIGTERM) writes a stop file that training polls at each optimizer
step, waits ``stop_grace_s`` for steps to return, cancels the rest, and leaves a resumable study.

Departures from the paper: the authors' OOM retry halves the batch without raising the gradient
accumulation, silently changing the effective batch; ours preserves it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

from pipelines import ray_adapter
from pipelines.cells import CellSpec
from pipelines.environment import cell_dtype, environment_tags
from pipelines.graph import Graph, Step, build_graph, cell_tags
from pipelines.job import JobFunctions, run_step
from pipelines.mlflow_adapter import StudyTracker, default_tracking_uri, prepare_store
from pipelines.progress import ProgressView
from pipelines.state import StateStore, StepState, study_status

STOP_FILE = "STOP"

__all__ = ["CellOutcome", "StudyOutcome", "run_study", "study_status"]


@dataclasses.dataclass(frozen=True)
class CellOutcome:
    name: str
    status: str  # done / failed / interrupted / pending
    run_key: str
    run_id: str | None
    reason: str
    scores: dict[str, float]


@dataclasses.dataclass(frozen=True)
class StudyOutcome:
    study_name: str
    output_dir: Path
    tracking_uri: str
    cells: dict[str, CellOutcome]
    summary: dict[str, int]
    executed: dict[str, int]  # steps actually run by this call, per kind
    interrupted: bool

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(c.status == "done" for c in self.cells.values())


def run_study(cells: list[CellSpec], *, study_name: str, output_dir: Path | str,
              tracking_uri: str | None = None, ray_address: str | None = None,
              max_retries: int = 2, progress: bool = True,
              functions: JobFunctions | None = None, poll_s: float = 0.5,
              stop_grace_s: float = 60.0) -> StudyOutcome:
    """Run (or resume) every cell; returns when all are finished, failed or skipped.

    ``tracking_uri`` None = SQLite in ``output_dir``; ``ray_address`` None = a local cluster.
    ``functions`` replaces the library calls (tests only). On Ctrl-C the outcome has
    ``interrupted=True`` and the study can be resumed by calling this again.
    """
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    with _driver_lock(output_dir):
        return _run_locked(cells, study_name, output_dir, tracking_uri, ray_address, max_retries,
                           progress, functions, poll_s, stop_grace_s)


def _run_locked(cells: list[CellSpec], study_name: str, output_dir: Path,
                tracking_uri: str | None, ray_address: str | None, max_retries: int,
                progress: bool, functions: JobFunctions | None, poll_s: float,
                stop_grace_s: float) -> StudyOutcome:
    tracking_uri = tracking_uri or default_tracking_uri(output_dir)
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The store's creation (SQLite migrations, ~1.5 s here) overlaps Ray's start (~3 s);
        # both finish before any step is submitted, so no worker logs to a store being migrated.
        store = pool.submit(prepare_store, tracking_uri, output_dir)
        ray_adapter.connect(ray_address)
        artifact_root = store.result()
    tracker = StudyTracker(study_name, tracking_uri, artifact_root)
    run = _StudyRun(build_graph(cells), study_name, output_dir, tracker, max_retries,
                    functions, poll_s, stop_grace_s)
    with _interrupts_as_keyboard_interrupt(), ProgressView(study_name, progress) as view:
        run.execute(view)
    tracker.finish_parent("KILLED" if run.interrupted else "FINISHED")
    return run.outcome()


class _StudyRun:
    """The driver's mutable state for one call of :func:`run_study`."""

    def __init__(self, graph: Graph, study_name: str, output_dir: Path, tracker: StudyTracker,
                 max_retries: int, functions: JobFunctions | None, poll_s: float,
                 stop_grace_s: float):
        self.graph, self.study_name, self.output_dir = graph, study_name, output_dir
        self.tracker, self.max_retries, self.functions = tracker, max_retries, functions
        self.poll_s, self.stop_grace_s = poll_s, stop_grace_s
        self.store = StateStore(output_dir)
        self.stop_file = output_dir / STOP_FILE
        self.stop_file.unlink(missing_ok=True)
        self.faults = os.environ.get("UNISD_FAULTS", "")
        self.handles: dict[str, ray_adapter.TaskHandle] = {}
        self.executed: dict[str, int] = {}
        self.interrupted = False
        self.states = {step_id: self._initial_state(step) for step_id, step in graph.steps.items()}
        # A cell's MLflow run is found or created when the cell first needs it (its training
        # starts, or it is recorded), not all up front: at ~40 ms a run, a paper grid's 5376
        # cells would hold back the first step by minutes. Recorded cells keep theirs in state.
        self.run_ids = {name: self.states[graph.record_step_of[name]].result["run_id"]
                        for name in graph.cells
                        if self.states[graph.record_step_of[name]].result.get("run_id")}
        self.store.write_study({"study_name": study_name, "tracking_uri": tracker.tracking_uri,
                                "steps": [s.describe() for s in graph.steps.values()],
                                "record_step_of": graph.record_step_of})

    def _run_id(self, cell_name: str) -> str:
        """The cell's MLflow run (found by run key, else created), once per driver."""
        if cell_name not in self.run_ids:
            cell = self.graph.cells[cell_name]
            self.run_ids[cell_name] = self.tracker.ensure_cell_run(cell.model_dump(mode="json"),
                                                                   cell_tags(cell))
        return self.run_ids[cell_name]

    def _initial_state(self, step: Step) -> StepState:
        previous = self.store.load(step.step_id)
        if previous is not None and previous.key == step.key and previous.status == "done":
            return previous
        state = StepState(step.step_id, step.kind, step.key, step.label)
        if previous is not None:  # failed, interrupted or killed mid-run: run again, keep history
            state.history = [*previous.history, {"status": previous.status,
                                                 "error": previous.error}]
            state.adjustments = previous.adjustments
        self.store.save(state)
        return state

    # ---- the loop ----------------------------------------------------------------------------
    def execute(self, view: ProgressView) -> None:
        try:
            while True:
                self._skip_blocked()
                self._launch_ready()
                if not self.handles:
                    break
                view.update(self.states.values())
                for handle in ray_adapter.wait_any(list(self.handles.values()), self.poll_s):
                    self._complete(handle)
            view.update(self.states.values())
        except KeyboardInterrupt:
            self._stop(view)

    def _ready(self) -> list[Step]:
        return [step for step_id, step in self.graph.steps.items()
                if self.states[step_id].status == "pending"
                and all(self.states[dep].status == "done" for dep in step.deps)]

    def _skip_blocked(self) -> None:
        changed = True
        while changed:
            changed = False
            for step_id, step in self.graph.steps.items():
                state = self.states[step_id]
                blocker = next((dep for dep in step.deps
                                if self.states[dep].status in ("failed", "skipped")), None)
                if state.status == "pending" and blocker is not None:
                    cause = self.states[blocker]
                    reason = cause.error if cause.status == "skipped" else \
                        f"{cause.label} failed: {cause.error}"
                    self._finish(state, "skipped", error=reason)
                    if step.kind == "record":
                        self._record_failure(step, reason)
                    changed = True

    def _launch_ready(self) -> None:
        for step in self._ready():
            if step.kind == "train":  # before the state changes: a tracking failure loses nothing
                self._run_id(step.cells[0])
            state = self.states[step.step_id]
            state.attempts += 1
            state.status, state.started_at, state.finished_at = "running", time.time(), None
            state.error = ""
            self.store.save(state)
            self.executed[step.kind] = self.executed.get(step.kind, 0) + 1
            if step.kind == "record":
                self._record_safely(step)
                continue
            payload = self._payload(step, state)
            self.handles[step.step_id] = ray_adapter.submit(
                step.step_id, run_step, payload, num_cpus=step.resources.num_cpus,
                num_gpus=step.resources.num_gpus, memory_gb=step.resources.memory_gb)

    def _payload(self, step: Step, state: StepState) -> dict[str, Any]:
        step_dir = self.output_dir / "steps" / step.step_id
        payload = {**step.payload, "step_id": step.step_id, "kind": step.kind,
                   "step_dir": str(step_dir), "attempt": state.attempts,
                   "functions": self.functions, "faults": self.faults}
        if step.kind == "prepare":
            payload["cache_dir"] = str(step_dir / "caches")
        elif step.kind == "train":
            prepared = self.states[step.deps[0]].result
            payload.update(records_path=prepared["records_path"], cache_dir=prepared["cache_dir"],
                           tracking_uri=self.tracker.tracking_uri,
                           run_id=self._run_id(step.cells[0]), stop_file=str(self.stop_file))
            payload["train"] = {**payload["train"], **state.adjustments.get("train", {})}
        elif step.kind == "evaluate":
            payload["model_dir"] = self.states[step.deps[0]].result["model_dir"]
        elif step.kind == "base_eval":
            payload["model_dir"] = None
        return payload

    # ---- outcomes ----------------------------------------------------------------------------
    def _complete(self, handle: ray_adapter.TaskHandle) -> None:
        del self.handles[handle.step_id]
        state = self.states[handle.step_id]
        value, error = ray_adapter.result(handle)
        if error is not None:  # the worker died beyond Ray's own retries, or was cancelled
            if self.interrupted or ray_adapter.is_cancelled(error):
                self._finish(state, "interrupted", error="cancelled")
                return
            value = {"ok": False, "error_type": "error",
                     "message": f"{type(error).__name__}: {error}"[:2000]}
        if value.get("ok"):
            stopped = state.kind == "train" and value.get("status") == "stopped"
            state.result = {k: v for k, v in value.items() if k != "ok"}
            self._finish(state, "interrupted" if stopped else "done")
        else:
            self._handle_failure(state, value)

    def _handle_failure(self, state: StepState, failure: dict[str, Any]) -> None:
        state.log_tail = failure.get("log_tail", "")
        message = failure.get("message", "unknown error")
        if failure.get("step") is not None:
            message = f"{message} (at step {failure['step']})"
        if failure["error_type"] == "oom" and not self.interrupted and self._halve_batch(state):
            self._retry(state, message)
        elif failure["error_type"] == "nonfinite":
            self._finish(state, "failed", error=f"non-finite loss: {message}")
        elif state.attempts <= self.max_retries and not self.interrupted:
            self._retry(state, message)
        else:
            self._finish(state, "failed", error=message)

    def _halve_batch(self, state: StepState) -> bool:
        """Half micro-batch, double accumulation; False when the batch cannot be halved."""
        step = self.graph.steps[state.step_id]
        if step.kind != "train":
            return False
        current = {**step.payload["train"], **state.adjustments.get("train", {})}
        batch, accum = current["per_device_batch"], current["grad_accum"]
        if batch < 2 or batch % 2:
            return False
        state.oom_retries += 1
        state.adjustments = {"train": {"per_device_batch": batch // 2, "grad_accum": accum * 2},
                             "oom_retries": state.oom_retries,
                             "effective_batch": batch * accum}
        state.attempts -= 1  # an OOM halving is not a transient-failure retry
        return True

    def _retry(self, state: StepState, message: str) -> None:
        state.history.append({"attempt": state.attempts, "error": message,
                              "adjustments": state.adjustments})
        state.status, state.error = "pending", message
        self.store.save(state)

    def _finish(self, state: StepState, status: str, error: str = "") -> None:
        state.status, state.error, state.finished_at = status, error, time.time()
        self.store.save(state)

    # ---- records (driver side) --------------------------------------------------------------
    def _record_safely(self, step: Step) -> None:
        """Record a cell; a tracking failure fails this record step only (rerun retries it)."""
        try:
            self._record(step)
        except Exception as error:  # noqa: BLE001 - e.g. the tracking server is unreachable
            self._finish(self.states[step.step_id], "failed",
                         error=f"recording failed: {type(error).__name__}: {error}"[:2000])

    def _record(self, step: Step) -> None:
        state = self.states[step.step_id]
        cell_name = step.cells[0]
        run_id = self._run_id(cell_name)
        evaluated = self.states[step.deps[0]]
        results = json.loads(Path(evaluated.result["results_path"]).read_text())
        self.tracker.log_evaluation(run_id, results)
        trained_id = next((d for d in self.graph.steps[evaluated.step_id].deps), None)
        for step_id in filter(None, [trained_id, evaluated.step_id]):
            folder = self.output_dir / "steps" / step_id
            self.tracker.log_file(run_id, folder / "log.txt", f"logs/{step_id}")
            for metrics_file in sorted(folder.glob("train*/metrics.jsonl")):
                self.tracker.log_file(run_id, metrics_file,
                                      f"logs/{step_id}/{metrics_file.parent.name}")
        trained = self.states[trained_id].result if trained_id is not None else {}
        self.tracker.set_tags(run_id, environment_tags(
            trained.get("environment"), evaluated.result.get("environment"),
            cell_dtype(self.graph.cells[cell_name].model_dump(mode="json"))))
        if trained_id is not None:
            self._tag_training(run_id, self.states[trained_id])
        else:
            family = evaluated.result.get("model_family", "unknown")
            self.tracker.set_tags(run_id, {"unisd.model_family": str(family)})
        self.tracker.finish(run_id, "done")
        state.result = {"run_id": run_id, "scores": evaluated.result.get("scores", {})}
        self._finish(state, "done")

    def _tag_training(self, run_id: str, trained: StepState) -> None:
        tags = {"unisd.model_family": str(trained.result.get("model_family", "unknown")),
                "unisd.train_steps": str(trained.result.get("steps")),
                "unisd.resumed_from": str(trained.result.get("resumed_from") or "none"),
                "unisd.oom_retries": str(trained.oom_retries)}
        adjusted = trained.adjustments.get("train")
        if adjusted:
            tags.update({"unisd.effective_per_device_batch": str(adjusted["per_device_batch"]),
                         "unisd.effective_grad_accum": str(adjusted["grad_accum"])})
        self.tracker.set_tags(run_id, tags)

    def _record_failure(self, step: Step, reason: str) -> None:
        self.tracker.finish(self._run_id(step.cells[0]), "failed", reason)

    # ---- stopping ----------------------------------------------------------------------------
    def _stop(self, view: ProgressView) -> None:
        """Stop at a step boundary: training polls the stop file; the rest is cancelled."""
        self.interrupted = True
        self.stop_file.write_text(str(time.time()))
        deadline = time.time() + self.stop_grace_s
        try:
            while self.handles and time.time() < deadline:
                for handle in ray_adapter.wait_any(list(self.handles.values()), self.poll_s):
                    self._complete(handle)
                view.update(self.states.values())
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: cancel now
        ray_adapter.cancel(list(self.handles.values()))
        for step_id in list(self.handles):
            del self.handles[step_id]
            self._finish(self.states[step_id], "interrupted", error="cancelled by Ctrl-C")

    def outcome(self) -> StudyOutcome:
        cells = {}
        for name, cell in self.graph.cells.items():
            record = self.states[self.graph.record_step_of[name]]
            status = {"done": "done", "skipped": "failed"}.get(record.status, record.status)
            cells[name] = CellOutcome(name=name, status=status, run_key=cell.run_key(),
                                      run_id=self.run_ids.get(name), reason=record.error,
                                      scores=dict(record.result.get("scores", {})))
        summary: dict[str, int] = {}
        for state in self.states.values():
            summary[state.status] = summary.get(state.status, 0) + 1
        return StudyOutcome(study_name=self.study_name, output_dir=self.output_dir,
                            tracking_uri=self.tracker.tracking_uri, cells=cells,
                            summary=summary, executed=dict(self.executed),
                            interrupted=self.interrupted)


@contextlib.contextmanager
def _driver_lock(output_dir: Path) -> Iterator[None]:
    """One driver per study folder; the kernel drops the lock when a driver dies."""
    with (output_dir / "driver.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another driver is running the study in {output_dir}; "
                               "watch it with study_status / `python -m pipelines status`"
                               ) from None
        handle.write(str(os.getpid()))
        handle.flush()
        yield


class _interrupts_as_keyboard_interrupt:
    """SIGTERM (``ray job stop``, ``kill``) stops the study like Ctrl-C (main thread only)."""

    def __enter__(self) -> None:
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)

    @staticmethod
    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
