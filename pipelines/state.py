"""On-disk state of a study run, one small JSON file per step, written atomically by the driver.

``<output>/study.json`` lists the steps (written at the start of every run);
``<output>/state/<step_id>.json`` holds each step's status, attempts, timings, error and log tail,
and its result. A driver killed at any moment leaves files that are either the old or the new
version (write to a temporary file, then ``os.replace``), so a rerun loses nothing: ``done`` steps
with the same key are skipped, anything else runs again (training resumes from its checkpoint).

:func:`study_status` reads those files and needs no driver, so another shell can watch a study.

Departures from the paper: none.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

STATUSES: tuple[str, ...] = ("pending", "running", "done", "failed", "skipped", "interrupted")
TERMINAL: frozenset[str] = frozenset({"done", "failed", "skipped"})


@dataclasses.dataclass
class StepState:
    step_id: str
    kind: str
    key: str
    label: str
    status: str = "pending"
    attempts: int = 0
    oom_retries: int = 0
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


def write_json_atomic(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class StateStore:
    """The ``state/`` folder of one study output."""

    def __init__(self, output_dir: Path):
        self.output_dir = Path(output_dir)
        self.folder = self.output_dir / "state"
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, step_id: str) -> Path:
        return self.folder / f"{step_id}.json"

    def load(self, step_id: str) -> StepState | None:
        path = self.path(step_id)
        if not path.exists():
            return None
        return StepState(**json.loads(path.read_text(encoding="utf-8")))

    def save(self, state: StepState) -> None:
        write_json_atomic(self.path(state.step_id), dataclasses.asdict(state))

    def write_study(self, payload: dict[str, Any]) -> None:
        write_json_atomic(self.output_dir / "study.json", payload)


@dataclasses.dataclass(frozen=True)
class StudyStatus:
    """What :func:`study_status` returns: counts, one row per step, one row per cell."""

    study_name: str
    summary: dict[str, int]
    steps: list[dict[str, Any]]
    cells: list[dict[str, Any]]


def study_status(output_dir: Path | str) -> StudyStatus:
    """Read a study's state from disk (safe while a driver runs in another process)."""
    output_dir = Path(output_dir)
    study_file = output_dir / "study.json"
    if not study_file.exists():
        raise FileNotFoundError(f"{output_dir} holds no study (no study.json)")
    study = json.loads(study_file.read_text(encoding="utf-8"))
    store = StateStore(output_dir)
    now = time.time()
    rows: list[dict[str, Any]] = []
    states: dict[str, StepState] = {}
    for step in study["steps"]:
        state = store.load(step["step_id"]) or StepState(step["step_id"], step["kind"],
                                                         step["key"], step["label"])
        states[step["step_id"]] = state
        rows.append({"step_id": state.step_id, "kind": state.kind, "label": state.label,
                     "status": state.status, "attempts": state.attempts,
                     "elapsed_s": state.elapsed_s(now), "error": state.error})
    summary = {status: sum(row["status"] == status for row in rows) for status in STATUSES}
    cells = []
    for name, record_id in study["record_step_of"].items():
        record = states[record_id]
        cells.append({"cell": name, "status": record.status, "reason": record.error,
                      "run_id": record.result.get("run_id"),
                      "scores": record.result.get("scores", {})})
    return StudyStatus(study_name=study["study_name"], summary=summary, steps=rows, cells=cells)
