"""The live progress view of a running study (rich): counts, running steps, elapsed, estimate.

``running`` counts steps a worker has started; ``queued`` those handed to Ray that wait for a
free slot (on 2 cores most of a study is queued). The estimate is crude on purpose: the mean
duration of finished steps of each kind (a kind with none yet borrows from its sibling, a model
evaluation from the base evaluation and back, else from the mean of every finished step), summed
over the steps still to run minus the time running ones have spent, divided by the number
running now. It appears once any step has finished; good enough to tell minutes from hours, it
knows nothing of the cluster's shape.

Departures from the paper: none.
"""

from __future__ import annotations

import time
from typing import Iterable

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pipelines.state import STATUSES, StepState


SIBLING_KIND = {"evaluate": "base_eval", "base_eval": "evaluate"}
TO_RUN = ("pending", "queued", "running", "interrupted")


def mean_durations(states: list[StepState]) -> dict[str, float]:
    """Mean seconds of the finished steps of each kind (records, run by the driver, excluded)."""
    durations: dict[str, list[float]] = {}
    for state in states:
        if (state.status == "done" and state.kind != "record"
                and None not in (state.started_at, state.finished_at)):
            durations.setdefault(state.kind, []).append(state.finished_at - state.started_at)
    return {kind: sum(values) / len(values) for kind, values in durations.items()}


def estimate_remaining_s(states: Iterable[StepState], now: float) -> float | None:
    """Seconds left (see the module docstring); None before any step has finished."""
    states = list(states)
    means = mean_durations(states)
    if not means:
        return None
    overall = sum(means.values()) / len(means)
    left = 0.0
    for state in states:
        if state.status not in TO_RUN or state.kind == "record":
            continue
        mean = means.get(state.kind, means.get(SIBLING_KIND.get(state.kind, ""), overall))
        spent = state.elapsed_s(now) if state.status == "running" else 0.0
        left += max(0.0, mean - (spent or 0.0))
    running = sum(state.status == "running" for state in states)
    return left / max(1, running)


def summary_line(study_name: str, states: Iterable[StepState], started_at: float) -> str:
    """``<study>: done N, running N, queued N, ... | elapsed h:mm:ss | estimate h:mm:ss``."""
    states = list(states)
    now = time.time()
    counts = {status: sum(state.status == status for state in states) for status in STATUSES}
    estimate = estimate_remaining_s(states, now)
    return (
        f"{study_name}: done {counts['done']}, running {counts['running']}, "
        f"queued {counts['queued']}, failed {counts['failed']}, skipped {counts['skipped']}, "
        f"pending {counts['pending']}"
        f"  | elapsed {_clock(now - started_at)}"
        f"  | estimate {_clock(estimate) if estimate is not None else '? (after a first step)'}")


def render(study_name: str, states: Iterable[StepState], started_at: float) -> Group:
    """One renderable: a summary line and a table of the running and failed steps."""
    states = list(states)
    now = time.time()
    summary = Text(summary_line(study_name, states, started_at))
    shown = [state for state in states if state.status in ("running", "failed")]
    if not shown:
        return Group(summary)
    table = Table("step", "status", "attempt", "elapsed", "note", box=None)
    for state in shown:
        table.add_row(state.label, state.status, str(state.attempts),
                      _clock(state.elapsed_s(now) or 0.0), state.error[:60])
    return Group(summary, table)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressView:
    """A ``rich.live.Live`` view on a terminal; elsewhere (a log file, ``ray job logs``) a plain
    summary line whenever the counts change, and at least every ``log_every_s`` seconds.
    Does nothing when disabled."""

    def __init__(self, study_name: str, enabled: bool, *, console: Console | None = None,
                 log_every_s: float = 30.0):
        self.study_name = study_name
        self.enabled = enabled
        self.started_at = time.time()
        self.console = console or Console(stderr=True)
        self.log_every_s = log_every_s
        self.live: Live | None = None
        self._last_line: tuple[str, float] | None = None

    def __enter__(self) -> "ProgressView":
        if self.enabled and self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def update(self, states: Iterable[StepState]) -> None:
        if self.live is not None:
            self.live.update(render(self.study_name, states, self.started_at))
        elif self.enabled:
            self._log_line(list(states))

    def _log_line(self, states: list[StepState]) -> None:
        line = summary_line(self.study_name, states, self.started_at)
        counts = line.split("  | ")[0]
        now = time.time()
        if self._last_line is not None:
            last_counts, last_time = self._last_line
            if counts == last_counts and now - last_time < self.log_every_s:
                return
        self._last_line = (counts, now)
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
