"""On-disk state of a study run, one small JSON file per step, written atomically by the driver.

``<output>/study.json`` lists the steps (written at the start of every run);
``<output>/state/<step_id>.json`` holds each step's status, attempts, timings, error and log tail,
and its result. A driver killed at any moment leaves files that are either the old or the new
version (write to a temporary file, fsync, then ``os.replace``), so a rerun loses nothing: ``done``
steps with the same key are skipped, anything else runs again (training resumes from its
checkpoint). A state file damaged anyway (a full disk, a copy cut short) is named in a
:class:`DamagedStateError`; the driver runs its step again, ``study status`` shows it as
``damaged``.

Step statuses: ``pending`` (waiting for its inputs), ``queued`` (handed to Ray, not started by a
worker yet), ``running``, ``done``, ``failed``, ``skipped`` (an input failed),
``interrupted`` (stopped by Ctrl-C or a dead driver; a rerun resumes it). A cell's status
(:func:`cell_status`) is the same word for ``study run`` and ``study status``.

:func:`study_status` reads those files and needs no driver, so another shell can watch a study;
when no driver holds the folder's lock (:mod:`pipelines.driver_lock`), steps marked ``queued`` or
``running`` were left by a driver that stopped, and are shown as ``interrupted``.

Departures from the paper: none.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

STATUSES: tuple[str, ...] = ("pending", "queued", "running", "done", "failed", "skipped",
                              "interrupted")
TERMINAL: frozenset[str] = frozenset({"done", "failed", "skipped"})
ACTIVE: frozenset[str] = frozenset({"queued", "running"})
RESUME_HINT = "interrupted, re-run to resume"


class DamagedStateError(ValueError):
    """A state file that exists but cannot be read; the message names it."""

    def __init__(self, path: Path, reason: str):
        self.path = path
        super().__init__(f"step state file {path} is damaged ({reason}); "
                         "`unisd study run` runs the step again")


@dataclasses.dataclass
class StepState:
    step_id: str
    kind: str
    key: str
    label: str
    status: str = "pending"
    attempts: int = 0
    oom_retries: int = 0
    ray_retries: int = 0  # starts of a step by Ray itself after its worker died
    started_at: float | None = None
    finished_at: float | None = None
    error: str = ""
    log_tail: str = ""
    result: dict[str, Any] = dataclasses.field(default_factory=dict)
    adjustments: dict[str, Any] = dataclasses.field(default_factory=dict)
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def elapsed_s(self, now: float | None = None) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else (now or time.time())
        return max(0.0, end - self.started_at)


def write_json_atomic(path: Path, payload: Any, *, durable: bool = True) -> None:
    """``payload`` as JSON into ``path``: the old or the new file survives any crash."""
    write_text_atomic(path, json.dumps(payload, indent=1, sort_keys=True), durable=durable)


def write_text_atomic(path: Path, text: str, *, durable: bool = True) -> None:
    """Write a temporary sibling, fsync it, rename it over ``path``, fsync the folder.

    Without the fsyncs a power loss after the rename can leave a 0-byte file under the new name.
    ``durable=False`` skips both fsyncs (a process crash still leaves the old or the new file):
    for states a loss would only make run again (pending, queued, running), since an fsync
    costs milliseconds and the driver writes several per step.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        if durable:
            os.fsync(handle.fileno())
    os.replace(temporary, path)
    if not durable:
        return
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def load_state_file(path: Path) -> StepState | None:
    """The state in ``path``; None when absent; :class:`DamagedStateError` when unreadable."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    if not text.strip():
        raise DamagedStateError(path, f"{len(text)} bytes")
    try:
        return StepState(**json.loads(text.decode("utf-8")))
    except (ValueError, TypeError) as error:  # bad JSON / UTF-8, or not a step's fields
        raise DamagedStateError(path, f"{type(error).__name__}: {error}"[:300]) from None


class StateStore:
    """The ``state/`` folder of one study output."""

    def __init__(self, output_dir: Path, *, create: bool = True):
        self.output_dir = Path(output_dir)
        self.folder = self.output_dir / "state"
        if create:
            self.folder.mkdir(parents=True, exist_ok=True)

    @classmethod
    def reader(cls, output_dir: Path) -> "StateStore":
        """A store that only reads (creates nothing: ``study status`` on a read-only folder)."""
        return cls(output_dir, create=False)

    def path(self, step_id: str) -> Path:
        return self.folder / f"{step_id}.json"

    def load(self, step_id: str) -> StepState | None:
        return load_state_file(self.path(step_id))

    def save(self, state: StepState, *, durable: bool = True) -> None:
        """``durable=False`` for a state whose loss only makes its step run again."""
        write_json_atomic(self.path(state.step_id), dataclasses.asdict(state), durable=durable)

    def write_study(self, payload: dict[str, Any]) -> None:
        write_json_atomic(self.output_dir / "study.json", payload)


def cell_status(record: StepState, chain: list[StepState], live: bool) -> tuple[str, str]:
    """``(status, reason)`` of a cell from its record step and the steps it waits for.

    ``done``; ``failed`` (a step of the cell failed, or one it needs: the reason names it);
    with no live driver any unfinished cell is ``interrupted`` (a rerun resumes it), else
    ``running`` / ``queued`` / ``interrupted`` after the most advanced of its steps, or
    ``pending``. ``damaged`` only in ``study status``, when a state file cannot be read.
    """
    if record.status == "done":
        return "done", ""
    if record.status in ("failed", "skipped"):
        return "failed", record.error
    damaged = next((state for state in chain if state.status == "damaged"), None)
    if damaged is not None:
        return "damaged", damaged.error
    if not live:
        return "interrupted", RESUME_HINT
    for status in ("running", "queued", "interrupted"):
        active = next((state for state in chain if state.status == status), None)
        if active is not None:
            return status, active.label
    return "pending", ""


def cell_chain(record_id: str, deps_of: dict[str, list[str]]) -> list[str]:
    """The record step of a cell and every step it waits for, record first."""
    chain, todo = [], [record_id]
    while todo:
        step_id = todo.pop()
        if step_id not in chain:
            chain.append(step_id)
            todo.extend(deps_of.get(step_id, []))
    return chain


@dataclasses.dataclass(frozen=True)
class StudyStatus:
    """What :func:`study_status` returns: counts, one row per step and per cell, the driver."""

    study_name: str
    summary: dict[str, int]
    steps: list[dict[str, Any]]
    cells: list[dict[str, Any]]
    driver: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _load_for_status(store: StateStore, step: dict[str, Any]) -> StepState:
    fresh = StepState(step["step_id"], step["kind"], step["key"], step["label"])
    try:
        state = store.load(step["step_id"])
    except DamagedStateError as error:
        fresh.status, fresh.error = "damaged", str(error)
        return fresh
    if state is None or state.key != step["key"]:
        return fresh
    return state


def _read_study(output_dir: Path) -> dict[str, Any]:
    study_file = output_dir / "study.json"
    if not study_file.exists():
        raise FileNotFoundError(f"{output_dir} holds no study (no study.json)")
    try:
        return json.loads(study_file.read_text(encoding="utf-8"))
    except ValueError as error:
        raise DamagedStateError(study_file, f"{type(error).__name__}: {error}"[:300]) from None


def study_status(output_dir: Path | str) -> StudyStatus:
    """Read a study's state from disk (safe while a driver runs in another process)."""
    from pipelines.driver_lock import driver_alive, read_driver_record

    output_dir = Path(output_dir)
    study = _read_study(output_dir)
    store = StateStore.reader(output_dir)
    live = driver_alive(output_dir)
    now = time.time()
    states = {step["step_id"]: _load_for_status(store, step) for step in study["steps"]}
    if not live:  # nobody runs what the files call queued or running
        for state in states.values():
            if state.status in ACTIVE:
                state.status, state.error = "interrupted", f"the driver stopped; {RESUME_HINT}"
    rows = [_step_row(output_dir, step, states[step["step_id"]], now) for step in study["steps"]]
    summary = {status: sum(row["status"] == status for row in rows)
               for status in (*STATUSES, "damaged")}
    deps_of = {step["step_id"]: step.get("deps", []) for step in study["steps"]}
    cells = []
    for name, record_id in study["record_step_of"].items():
        record = states[record_id]
        chain = [states[step_id] for step_id in cell_chain(record_id, deps_of)]
        status, reason = cell_status(record, chain, live)
        cells.append({"cell": name, "status": status, "reason": reason,
                      "run_id": record.result.get("run_id"),
                      "scores": record.result.get("scores", {})})
    driver = {**(read_driver_record(output_dir) or {}), "alive": live}
    driver["note"] = _driver_note(driver, summary)
    return StudyStatus(study_name=study["study_name"], summary=summary, steps=rows, cells=cells,
                       driver=driver)


def _step_row(output_dir: Path, step: dict[str, Any], state: StepState,
              now: float) -> dict[str, Any]:
    log = output_dir / "steps" / step["step_id"] / "log.txt"
    return {"step_id": state.step_id, "kind": state.kind, "label": state.label,
            "status": state.status, "attempts": state.attempts,
            "ray_retries": state.ray_retries, "elapsed_s": state.elapsed_s(now),
            "error": state.error, "cells": step.get("cells", []),
            "log": str(log) if log.exists() else None, "history": state.history}


def _driver_note(driver: dict[str, Any], summary: dict[str, int]) -> str:
    unfinished = sum(summary[status] for status in ("pending", "interrupted", "damaged"))
    if driver["alive"]:
        return f"a driver (pid {driver.get('pid')} on {driver.get('host')}) is running the study"
    if not unfinished:
        return "no driver is running; no step is left to run"
    if driver.get("outcome") == "interrupted":
        how = "was interrupted"
    elif driver.get("pid") and not driver.get("ended_at"):
        how = f"(pid {driver['pid']} on {driver.get('host')}) stopped without finishing (killed?)"
    else:
        how = f"ended ({driver.get('outcome', 'unknown')})"
    return f"no driver is running: the last one {how}; `unisd study run` resumes the study"
