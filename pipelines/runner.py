"""Run a study: the driver loop over the job graph, on Ray, recorded in MLflow, resumable.

``run_study`` is idempotent: ``done`` steps with the same key are skipped (their outputs checked
first when a step still to run needs them, :mod:`pipelines.repair`; an unreadable state file is
named and its step runs again); anything else runs, training resumes from its checkpoint. Cell
runs are found in MLflow by run key, created when a cell first needs one (so a large grid's first
steps do not wait for thousands of runs), and belong to one study folder
(:mod:`pipelines.ownership`). The SQLite store is created while Ray starts. MLflow writes run on
a few threads off the loop (:mod:`pipelines.recording`; outages: :mod:`pipelines.mlflow_calls`),
and the loop looks only at steps whose inputs changed (:mod:`pipelines.frontier`), so its cost
per step does not grow with the grid. Steps handed to Ray
are ``queued`` until a worker starts them, then ``running``; Ray's own restart of a dead worker's
task counts as an attempt (:mod:`pipelines.starts`). Failures: retried up to ``max_retries``
times; out of memory: retried with half the micro-batch and twice the accumulation (effective
batch unchanged, recorded in the state and as run tags); a non-finite loss, and a failure the same
input repeats (``permanent``: a missing model folder or data file), fail the cell at once. A
failed step never stops the others; its dependents are skipped with the reason. Ctrl-C (or
SIGTERM) writes a stop file that training polls at each optimizer step and that a queued step
checks when it starts, waits ``stop_grace_s`` for steps to return, cancels the rest, marks the
unfinished cells' MLflow runs ``KILLED`` and leaves a resumable study. Refusals
(:class:`~pipelines.driver_lock.StudyRefusal`): a second driver, an unwritable folder, cells of
another folder in the same store.

Departures from the paper: the authors' OOM retry halves the batch without raising the gradient
accumulation, silently changing the effective batch; ours preserves it.
"""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pipelines import ownership, ray_adapter
from pipelines.cells import CellSpec
from pipelines.driver_lock import (StudyRefusal, driver_lock, interrupts_as_keyboard_interrupt,
                                   start_driver_record, write_driver_record)
from pipelines.graph import Graph, Step, build_graph
from pipelines.job import JobFunctions, run_step
from pipelines.mlflow_adapter import StudyTracker, default_tracking_uri, prepare_store
from pipelines.progress import ProgressView
from pipelines.outcome import CellOutcome, StudyOutcome, study_outcome
from pipelines.frontier import Frontier
from pipelines.recording import (CellRuns, TrackingPool, default_threads, record_inputs,
                                 write_record)
from pipelines.repair import reset_damaged_inputs
from pipelines.starts import STARTS_FILE, note_starts, read_starts
from pipelines.state import DamagedStateError, StateStore, StepState, study_status

STOP_FILE = "STOP"
VIEW_EVERY_S = 1.0  # the progress view's refresh (its summary counts every step)

__all__ = ["CellOutcome", "StudyOutcome", "StudyRefusal", "run_study", "study_status"]
WATCH_HINT = "unisd study status <study file>"


def run_study(cells: list[CellSpec], *, study_name: str, output_dir: Path | str,
              tracking_uri: str | None = None, ray_address: str | None = None,
              max_retries: int = 2, progress: bool = True,
              functions: JobFunctions | None = None, poll_s: float = 0.5,
              stop_grace_s: float = 60.0, watch_hint: str = WATCH_HINT) -> StudyOutcome:
    """Run (or resume) every cell; returns when all are finished, failed or skipped.

    ``tracking_uri`` None = SQLite in ``output_dir``; ``ray_address`` None = a local cluster.
    ``functions`` replaces the library calls (tests only). On Ctrl-C the outcome has
    ``interrupted=True`` and the study can be resumed by calling this again. Raises
    :class:`StudyRefusal` (before any step runs) when the study must not run here;
    ``watch_hint`` is the command its message names for watching the study.
    """
    output_dir = Path(output_dir).resolve()
    with driver_lock(output_dir, watch_hint=watch_hint):
        start_driver_record(output_dir)
        try:
            outcome = _run_locked(cells, study_name, output_dir, tracking_uri, ray_address,
                                  max_retries, progress, functions, poll_s, stop_grace_s)
        except BaseException as error:
            ended = "interrupted" if isinstance(error, KeyboardInterrupt) else \
                f"stopped by {type(error).__name__}"
            write_driver_record(output_dir, ended_at=time.time(), outcome=ended)
            raise
        write_driver_record(output_dir, ended_at=time.time(),
                            outcome="interrupted" if outcome.interrupted else "finished")
        return outcome


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
    graph = build_graph(cells)
    folder = ownership.StudyFolder(output_dir)
    ownership.refuse_foreign_runs(tracker, folder, {c.run_key() for c in graph.cells.values()})
    tracking = TrackingPool(default_threads(tracker.tracking_uri))
    finished = False
    try:
        run = _StudyRun(graph, study_name, output_dir, tracker, max_retries,
                        functions, poll_s, stop_grace_s, folder, tracking)
        with interrupts_as_keyboard_interrupt(), ProgressView(study_name, progress) as view:
            run.execute(view)
        finished = not run.interrupted
    finally:  # a finished loop left nothing in the pool; otherwise drop what has not started
        tracking.close(wait=finished)
    tracker.finish_parent("KILLED" if run.interrupted else "FINISHED")
    return run.outcome()


class _StudyRun:
    """The driver's mutable state for one call of :func:`run_study`."""

    def __init__(self, graph: Graph, study_name: str, output_dir: Path, tracker: StudyTracker,
                 max_retries: int, functions: JobFunctions | None, poll_s: float,
                 stop_grace_s: float, folder: ownership.StudyFolder, tracking: TrackingPool):
        self.graph, self.study_name, self.output_dir = graph, study_name, output_dir
        self.folder, self.tracking = folder, tracking
        self.tracker, self.max_retries, self.functions = tracker, max_retries, functions
        self.poll_s, self.stop_grace_s = poll_s, stop_grace_s
        self.store = StateStore(output_dir)
        self.stop_file = output_dir / STOP_FILE
        self.stop_file.unlink(missing_ok=True)
        self.faults = os.environ.get("UNISD_FAULTS", "")
        self.handles: dict[str, ray_adapter.TaskHandle] = {}
        self.launches: dict[str, str] = {}  # step id -> launch id of its running task
        self.recording: set[str] = set()  # record steps whose writes are in flight
        self.starts_seen: dict[str, int] = {}
        self.starts_checked_at = 0.0
        self.executed: dict[str, int] = {}
        self.interrupted = False
        self.view_updated_at = 0.0
        self.repairs: list[str] = []
        self.frontier = Frontier(graph)  # the steps whose inputs changed
        self.states = {step_id: self._initial_state(step) for step_id, step in graph.steps.items()}
        deps_of = {step_id: step.deps for step_id, step in graph.steps.items()}
        self.repairs += reset_damaged_inputs(deps_of, self.states, self.store.save)
        # A cell's MLflow run is found or created when the cell first needs it (its training
        # starts, or it is recorded), not all up front: at ~40 ms a run, a paper grid's 5376
        # cells would hold back the first step by minutes. Recorded cells keep theirs in state.
        self.runs = CellRuns(graph, tracker, folder, tracking, {
            name: self.states[graph.record_step_of[name]].result["run_id"] for name in graph.cells
            if self.states[graph.record_step_of[name]].result.get("run_id")})
        self.store.write_study({"study_name": study_name, "tracking_uri": tracker.tracking_uri,
                                "steps": [s.describe() for s in graph.steps.values()],
                                "record_step_of": graph.record_step_of})

    def _initial_state(self, step: Step) -> StepState:
        try:
            previous = self.store.load(step.step_id)
        except DamagedStateError as error:
            self.repairs.append(str(error))
            previous = None
        if previous is not None and previous.key == step.key and previous.status == "done":
            return previous
        state = StepState(step.step_id, step.kind, step.key, step.label)
        if previous is not None:  # failed, interrupted or killed mid-run: run again, keep history
            state.history = [*previous.history, {"status": previous.status,
                                                 "error": previous.error}]
            state.adjustments = previous.adjustments
        if self.store.path(step.step_id).exists():  # without a file a step reads as pending
            self.store.save(state, durable=False)  # lost in a crash: it runs again anyway
        return state

    # ---- the loop ----------------------------------------------------------------------------
    def execute(self, view: ProgressView) -> None:
        try:
            while True:
                self._skip_blocked()
                self._launch_ready()
                if not self.handles and not self.tracking.busy:
                    break
                self._update_view(view)
                self._wait()
                self._observe_starts()
            view.update(self.states.values())
        except KeyboardInterrupt:
            self._stop(view)

    def _wait(self) -> None:
        """Collect finished Ray tasks and tracking tasks (waiting up to ``poll_s``)."""
        if self.handles:  # tracking work in flight: look at Ray more often, not longer
            timeout = min(self.poll_s, 0.2) if self.tracking.busy else self.poll_s
            for handle in ray_adapter.wait_any(list(self.handles.values()), timeout):
                self._complete(handle)
        self.tracking.collect(0.0 if self.handles else self.poll_s)

    def _update_view(self, view: ProgressView) -> None:
        now = time.monotonic()
        if now - self.view_updated_at >= VIEW_EVERY_S:
            self.view_updated_at = now
            view.update(self.states.values())

    def _skip_blocked(self) -> None:
        """Skip pending steps with a failed or skipped input (their dependents in turn)."""
        looked: set[str] = set()
        while blocked := self.frontier.blocked(self.states, looked):
            for step_id, blocker in blocked:
                cause = self.states[blocker]
                reason = cause.error if cause.status == "skipped" else \
                    f"{cause.label} failed: {cause.error}"
                self._finish(self.states[step_id], "skipped", error=reason)
                if self.graph.steps[step_id].kind == "record":
                    self._record_failure(self.graph.steps[step_id], reason)

    def _launch_ready(self) -> None:
        self.frontier.again(self.runs.arrived)
        self.runs.arrived = []
        for step_id in self.frontier.ready(self.states):
            step, state = self.graph.steps[step_id], self.states[step_id]
            if step.kind in ("train", "record") and not self._run_ready(step, state):
                continue  # waits for its run (looked at again when it exists), or failed
            state.attempts += 1
            queued = "running" if step.kind == "record" else "queued"
            state.status, state.started_at, state.finished_at = queued, time.time(), None
            state.error = ""
            self.store.save(state, durable=False)  # lost in a crash: the step runs again
            self.executed[step.kind] = self.executed.get(step.kind, 0) + 1
            if step.kind == "record":
                self._start_record(step)
                continue
            self.launches[step.step_id] = uuid.uuid4().hex
            self.starts_seen[step.step_id] = 0
            payload = self._payload(step, state)
            self.handles[step.step_id] = ray_adapter.submit(
                step.step_id, run_step, payload, num_cpus=step.resources.num_cpus,
                num_gpus=step.resources.num_gpus, memory_gb=step.resources.memory_gb)

    def _run_ready(self, step: Step, state: StepState) -> bool:
        """A train step needs its cell's run (the worker logs metrics into it) before launch,
        a record step before it takes a record thread (which would otherwise wait, idle, for a
        base cell's run queued behind other run creations); a run that could not be made fails
        the step before its state changes."""
        future = self.runs.future(step.cells[0])
        if not future.done():
            self.runs.wait_for(step.cells[0], step.step_id)
            return False
        if future.exception() is not None:
            self._finish(state, "failed", error=self.runs.failure(future))
            return False
        return True

    def _payload(self, step: Step, state: StepState) -> dict[str, Any]:
        step_dir = self.output_dir / "steps" / step.step_id
        payload = {**step.payload, "step_id": step.step_id, "kind": step.kind,
                   "step_dir": str(step_dir), "attempt": state.attempts,
                   "launch": self.launches[step.step_id], "stop_file": str(self.stop_file),
                   "functions": self.functions, "faults": self.faults}
        if step.kind == "prepare":
            payload["cache_dir"] = str(step_dir / "caches")
        elif step.kind == "train":
            prepared = self.states[step.deps[0]].result
            payload.update(records_path=prepared["records_path"], cache_dir=prepared["cache_dir"],
                           tracking_uri=self.tracker.tracking_uri,
                           run_id=self.runs.future(step.cells[0]).result())
            payload["train"] = {**payload["train"], **state.adjustments.get("train", {})}
        elif step.kind == "evaluate":
            payload["model_dir"] = self.states[step.deps[0]].result["model_dir"]
        elif step.kind == "base_eval":
            payload["model_dir"] = None
        return payload

    # ---- starts: queued -> running, Ray's own restarts ----------------------------------------
    def _observe_starts(self, every_s: float = 2.0) -> None:
        """Read the ``starts.jsonl`` of active steps (at most every ``every_s`` seconds)."""
        now = time.time()
        if now - self.starts_checked_at < every_s:
            return
        self.starts_checked_at = now
        for step_id in list(self.handles):
            self._note_starts(self.states[step_id])

    def _note_starts(self, state: StepState) -> None:
        starts = read_starts(self.output_dir / "steps" / state.step_id / STARTS_FILE,
                             self.launches.get(state.step_id))
        if note_starts(state, starts, self.starts_seen.get(state.step_id, 0)):
            self.starts_seen[state.step_id] = len(starts)
            self.store.save(state, durable=False)

    # ---- outcomes ----------------------------------------------------------------------------
    def _complete(self, handle: ray_adapter.TaskHandle) -> None:
        del self.handles[handle.step_id]
        state = self.states[handle.step_id]
        self._note_starts(state)
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
            for note in value.get("repaired") or []:
                self.repairs.append(f"{state.label}: {note}")
            self._finish(state, "interrupted" if stopped else "done")
        elif value.get("error_type") == "stopped":
            self._finish(state, "interrupted", error="not started: the study was stopping")
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
        elif failure["error_type"] == "permanent":
            self._finish(state, "failed",
                         error=f"{message} (not retried: the same input fails the same way)")
        elif state.attempts - state.ray_retries <= self.max_retries and not self.interrupted:
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
        self.frontier.again(state.step_id)

    def _finish(self, state: StepState, status: str, error: str = "") -> None:
        state.status, state.error, state.finished_at = status, error, time.time()
        self.store.save(state)
        self.frontier.finished(state.step_id)

    # ---- records (driver side, written on a tracking thread) --------------------------------
    def _start_record(self, step: Step) -> None:
        """Hand a cell's record to the tracking pool; a failure fails this record step only
        (a rerun retries it)."""
        try:
            inputs = record_inputs(self.graph, self.states, self.output_dir, step.step_id)
        except Exception as error:  # noqa: BLE001 - e.g. an evaluation result without its path
            self._finish(self.states[step.step_id], "failed",
                         error=f"recording failed: {type(error).__name__}: {error}"[:2000])
            return
        run_id = self.runs.future(step.cells[0]).result()  # made already (_run_ready)
        self.recording.add(step.step_id)
        self.tracking.submit(lambda: write_record(self.tracker, run_id, inputs),
                             on_done=lambda future: self._recorded(step.step_id, future))

    def _recorded(self, step_id: str, future: Future) -> None:
        self.recording.discard(step_id)
        state = self.states[step_id]
        if future.cancelled():
            self._finish(state, "interrupted", error="cancelled by Ctrl-C")
        elif future.exception() is not None:
            message = self.runs.failure(future, "recording the cell")
            self._finish(state, "failed", error=f"recording failed: {message}"[:2000])
        else:
            state.result = future.result()
            self._finish(state, "done")

    def _record_failure(self, step: Step, reason: str) -> None:
        run = self.runs.future(step.cells[0])
        self.tracking.submit(lambda: self.tracker.finish(run.result(), "failed", reason))

    # ---- stopping ----------------------------------------------------------------------------
    def _stop(self, view: ProgressView) -> None:
        """Stop at a step boundary: training polls the stop file; the rest is cancelled."""
        self.interrupted = True
        self.stop_file.write_text(str(time.time()))
        deadline = time.time() + self.stop_grace_s
        try:
            while (self.handles or self.recording) and time.time() < deadline:
                self._wait()
                view.update(self.states.values())
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: cancel now
        ray_adapter.cancel(list(self.handles.values()))
        for step_id in list(self.handles):
            del self.handles[step_id]
            self._finish(self.states[step_id], "interrupted", error="cancelled by Ctrl-C")
        self.tracking.close(wait=False)  # run creations and records not started: dropped
        self.tracking.collect()
        for step_id in sorted(self.recording):  # still writing: recorded again by the rerun
            self._finish(self.states[step_id], "interrupted", error="cancelled by Ctrl-C")
        self._kill_unfinished_runs()

    def _kill_unfinished_runs(self) -> None:
        """The MLflow runs of cells left unfinished by the interruption: status KILLED."""
        for name, run_id in self.runs.run_ids.items():
            if self.states[self.graph.record_step_of[name]].status not in ("done", "failed",
                                                                           "skipped"):
                try:
                    self.tracker.finish(run_id, "interrupted", "interrupted, re-run to resume")
                except Exception:  # noqa: BLE001 - the store is down: the rerun records the cell
                    pass

    def outcome(self) -> StudyOutcome:
        return study_outcome(self.graph, self.states, output_dir=self.output_dir,
                             study_name=self.study_name, tracking_uri=self.tracker.tracking_uri,
                             run_ids=self.runs.run_ids, executed=self.executed,
                             interrupted=self.interrupted, repairs=self.repairs)
