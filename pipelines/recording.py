"""The driver's MLflow writes (cell runs, record steps) on a few threads, off its scheduling loop.

At thousands of cells the driver's serial MLflow work (a cell's run created when its training is
launched; the record step's items, logs, scores, tags and close) cost 0.4 to 2.5 s a cell on the
cluster simulation (benchmarks/RESULTS.md 6): 20 minutes to 2 hours of a 2,688-cell grid during
which no other step was launched or collected. Here that work runs on a bounded pool of threads
(``UNISD_TRACKING_THREADS`` record threads and half as many making runs; default 4 for a
tracking server, 1 shared for SQLite, whose writers serialise). The scheduling loop submits work
and collects what finished; every change of the driver's state (the step states, their files)
stays on the loop's thread.

Exactly once: a cell's run is created by one task per run key (cells of the same key share its
future; a train or record step is launched once it is there, a failure mark waits on it); a
record step is ``running`` while its task is in flight, so it is never taken up twice; a driver
killed mid-record leaves it ``running`` on disk, so the next driver records it again into the
same run (found by run key: tags and artifacts are overwritten, a score gets a second point at
the same step).

Departures from the paper: none.
"""

from __future__ import annotations

import collections
import json
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipelines import ownership
from pipelines.environment import cell_dtype, environment_tags
from pipelines.graph import cell_tags
from pipelines.mlflow_calls import is_server, tracking_failure
from pipelines.repair import damaged_json
from pipelines.state import StepState

THREADS_VARIABLE = "UNISD_TRACKING_THREADS"
# errors raised by the tracking client and its transport (others are the record's own)
TRACKING_MODULES = frozenset({"mlflow", "requests", "urllib3", "sqlalchemy", "http", "socket"})
SERVER_THREADS = 4


def default_threads(tracking_uri: str) -> int:
    value = os.environ.get(THREADS_VARIABLE)
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{THREADS_VARIABLE}={value!r}: give a whole number >= 1")
        return int(value)
    return SERVER_THREADS if is_server(tracking_uri) else 1


class TrackingPool:
    """A bounded thread pool whose finished tasks are handed back to the loop's thread.

    ``submit(function, *args, on_done=callback)``: ``callback(future)`` runs inside
    :meth:`collect`, on the caller's thread, never on a pool thread. Two lanes: ``records``
    (writes into runs) with ``threads`` threads and ``runs`` (cell runs made) with half as many,
    so records do not queue behind the hundreds of run creations a finished prepare step makes
    ready (a 168-cell simulation: no record done 100 s in) and keep the throughput of a shared
    pool (split 2 + 2, records waited 5x longer at 672 cells: benchmarks/RESULTS.md 6b); with
    one thread (SQLite) both share it. Within a lane tasks start in submission order; a records
    task may wait on a run's future (runs never wait), so no lane can deadlock.
    """

    def __init__(self, threads: int):
        self.threads = threads
        if threads == 1:
            shared = ThreadPoolExecutor(1, thread_name_prefix="unisd-tracking")
            self.lanes = {"runs": shared, "records": shared}
        else:
            self.lanes = {
                "runs": ThreadPoolExecutor(max(1, threads // 2), thread_name_prefix="unisd-runs"),
                "records": ThreadPoolExecutor(threads, thread_name_prefix="unisd-records")}
        self.pending: dict[Future, Callable[[Future], None]] = {}
        self._finished: collections.deque[Future] = collections.deque()
        self._signal = threading.Event()

    @property
    def busy(self) -> bool:
        return bool(self.pending)

    def submit(self, function: Callable[..., Any], *args: Any,
               on_done: Callable[[Future], None] | None = None, lane: str = "records") -> Future:
        future = self.lanes[lane].submit(function, *args)
        self.pending[future] = on_done or _ignore
        future.add_done_callback(self._arrived)
        return future

    def _arrived(self, future: Future) -> None:  # on a pool thread (or at cancellation)
        self._finished.append(future)  # deque.append is atomic
        self._signal.set()

    def collect(self, timeout_s: float = 0.0) -> int:
        """Run the callbacks of finished tasks here; wait up to ``timeout_s`` for a first one."""
        if timeout_s > 0 and self.pending and not self._finished:
            self._signal.wait(timeout_s)
        self._signal.clear()
        count = 0
        while self._finished:
            future = self._finished.popleft()
            callback = self.pending.pop(future, None)
            if callback is not None:
                callback(future)
                count += 1
        return count

    def close(self, *, wait: bool = True) -> None:
        """Stop taking work; ``wait=False`` cancels what has not started (running tasks end on
        their own: a thread cannot be stopped)."""
        for executor in {id(e): e for e in self.lanes.values()}.values():
            executor.shutdown(wait=wait, cancel_futures=not wait)


def _ignore(future: Future) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so no "exception never retrieved" noise


def done_future(value: Any) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


# ---- cell runs ---------------------------------------------------------------------------------

class CellRuns:
    """Each cell's MLflow run id: found by run key or created, on the pool, once per run key."""

    def __init__(self, graph: Any, tracker: Any, folder: ownership.StudyFolder,
                 pool: TrackingPool, known: dict[str, str]):
        self.graph, self.tracker, self.folder, self.pool = graph, tracker, folder, pool
        self.run_ids = dict(known)  # cell name -> run id, once known
        self.key_of = {name: cell.run_key() for name, cell in graph.cells.items()}
        self.cells_of: dict[str, list[str]] = {}
        for name, key in self.key_of.items():
            self.cells_of.setdefault(key, []).append(name)
        self.futures: dict[str, Future] = {}  # run key -> future of the run's id
        self.waiting: dict[str, list[str]] = {}  # run key -> steps to look at once it exists
        self.arrived: list[str] = []  # such steps, collected by the driver's loop

    def future(self, cell_name: str) -> Future:
        key = self.key_of[cell_name]
        if key not in self.futures:
            if cell_name in self.run_ids:
                self.futures[key] = done_future(self.run_ids[cell_name])
            else:
                self.futures[key] = self.pool.submit(self._create, cell_name, lane="runs",
                                                     on_done=lambda f: self._known(key, f))
        return self.futures[key]

    def wait_for(self, cell_name: str, step_id: str) -> None:
        """Hand ``step_id`` back (:attr:`arrived`) once the cell's run is known or failed."""
        self.waiting.setdefault(self.key_of[cell_name], []).append(step_id)

    def _create(self, cell_name: str) -> str:  # on a pool thread
        cell = self.graph.cells[cell_name]
        tags = {**cell_tags(cell), **self.folder.tags()}
        run_id = self.tracker.ensure_cell_run(cell.model_dump(mode="json"), tags)
        ownership.claim_run(self.tracker, self.folder, run_id, cell_name,
                            self.tracker.tags_seen.pop(run_id, None))
        return run_id

    def _known(self, key: str, future: Future) -> None:  # on the loop's thread
        if not future.cancelled() and future.exception() is None:
            for name in self.cells_of[key]:
                self.run_ids[name] = future.result()
        self.arrived += self.waiting.pop(key, [])

    def failure(self, future: Future, what: str = "creating the cell's run") -> str:
        """Why a run (or a task that needed it) failed, in one line."""
        error = future.exception()
        if isinstance(error, ownership.ForeignRunError):
            return str(error)
        if (type(error).__module__.split(".")[0] not in TRACKING_MODULES
                and not isinstance(error, ConnectionError)):  # e.g. damaged results
            return f"{type(error).__name__}: {error}"
        return tracking_failure(error, self.tracker.tracking_uri, what)


# ---- the record step ---------------------------------------------------------------------------

@dataclass(frozen=True)
class RecordInputs:
    """What a record task needs, read from the driver's state on the loop's thread."""

    results_path: Path
    step_folders: tuple[tuple[Path, str], ...]  # (steps/<id> folder, step id): train, evaluate
    tags: dict[str, str]
    scores: dict[str, Any]


def record_inputs(graph: Any, states: dict[str, StepState], output_dir: Path,
                  record_step_id: str) -> RecordInputs:
    """The record of a cell from its evaluation (and training) steps' states."""
    step = graph.steps[record_step_id]
    evaluated = states[step.deps[0]]
    trained_id = next(iter(graph.steps[evaluated.step_id].deps), None)
    folders = tuple((output_dir / "steps" / step_id, step_id)
                    for step_id in filter(None, [trained_id, evaluated.step_id]))
    trained = states[trained_id] if trained_id is not None else None
    tags = environment_tags(trained.result.get("environment") if trained else None,
                            evaluated.result.get("environment"),
                            cell_dtype(graph.cells[step.cells[0]].model_dump(mode="json")))
    if trained is not None:
        tags.update(training_tags(trained))
    else:
        tags["unisd.model_family"] = str(evaluated.result.get("model_family", "unknown"))
    return RecordInputs(Path(evaluated.result["results_path"]), folders, tags,
                        dict(evaluated.result.get("scores", {})))


def training_tags(trained: StepState) -> dict[str, str]:
    tags = {"unisd.model_family": str(trained.result.get("model_family", "unknown")),
            "unisd.train_steps": str(trained.result.get("steps")),
            "unisd.resumed_from": str(trained.result.get("resumed_from") or "none"),
            "unisd.oom_retries": str(trained.oom_retries)}
    adjusted = trained.adjustments.get("train")
    if adjusted:
        tags.update({"unisd.effective_per_device_batch": str(adjusted["per_device_batch"]),
                     "unisd.effective_grad_accum": str(adjusted["grad_accum"])})
    return tags


def write_record(tracker: Any, run_id: str, inputs: RecordInputs) -> dict[str, Any]:
    """The record's MLflow writes (a pool thread); returns the record step's result."""
    problem = damaged_json(inputs.results_path, want=dict)
    if problem:  # named; the next run recomputes the evaluation (repair.reset_damaged_inputs)
        raise RuntimeError(f"evaluation results damaged: {problem}; "
                           "`unisd study run` recomputes the evaluation")
    results = json.loads(inputs.results_path.read_text(encoding="utf-8"))
    files: list[tuple[Path, str]] = []
    for folder, step_id in inputs.step_folders:
        files.append((folder / "log.txt", f"logs/{step_id}"))
        files += [(path, f"logs/{step_id}/{path.parent.name}")
                  for path in sorted(folder.glob("train*/metrics.jsonl"))]
    tracker.record_cell(run_id, results, [(p, d) for p, d in files if p.exists()], inputs.tags)
    return {"run_id": run_id, "scores": inputs.scores}
