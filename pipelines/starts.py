"""Each start of a step, as the worker saw it: tells queued from running, and counts Ray's restarts.

A worker appends one line to ``<step folder>/starts.jsonl`` when it starts a step: its pid, host,
time, and the driver's *launch id* (a fresh id per submission to Ray). The driver reads the lines
of the current launch: none means the task still waits in Ray's queue (``queued``); the first
makes the step ``running`` (from the worker's start time); every further one is a restart by Ray
after the worker died (``max_retries`` of the task), which the driver counts in ``attempts`` and
``ray_retries`` and writes into the step's history. A line cut short by a crash is skipped.

Departures from the paper: none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.state import StepState

STARTS_FILE = "starts.jsonl"


def append_start(step_dir: Path, start: dict[str, Any]) -> None:
    """Worker side: one line per start (``start`` carries the payload's ``launch``)."""
    with (step_dir / STARTS_FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(start) + "\n")


def read_starts(path: Path, launch: str | None) -> list[dict[str, Any]]:
    """The starts of one launch of a step, oldest first."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    starts = []
    for line in lines:
        try:
            start = json.loads(line)
        except ValueError:
            continue
        if isinstance(start, dict) and start.get("launch") == launch:
            starts.append(start)
    return starts


def note_starts(state: StepState, starts: list[dict[str, Any]], seen: int) -> bool:
    """Apply the starts beyond the ``seen`` first ones to ``state``; True when it changed."""
    if len(starts) <= seen:
        return False
    if seen == 0 and state.status == "queued":
        state.status, state.started_at = "running", float(starts[0]["started"])
    for start in starts[max(seen, 1):]:  # every start after the first: Ray restarted the task
        state.attempts += 1
        state.ray_retries += 1
        state.history.append({"attempt": state.attempts - 1, "retried_by": "ray",
                              "error": "the worker died; Ray restarted the step "
                                       f"(now pid {start.get('pid')} on {start.get('host')})"})
    return True
