"""Off a terminal (a log file, ``ray job logs``) the progress view prints plain summary lines:
when the counts change, and not again while they stay the same."""

from __future__ import annotations

import io

from rich.console import Console

from pipelines.progress import ProgressView
from pipelines.state import StepState


def _states(done: int, pending: int) -> list[StepState]:
    return ([StepState(f"d{i}", "train", "k", f"train {i}", status="done", started_at=0.0,
                       finished_at=1.0) for i in range(done)]
            + [StepState(f"p{i}", "train", "k", f"train p{i}") for i in range(pending)])


def test_non_terminal_view_logs_a_line_per_change() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200)
    with ProgressView("demo", True, console=console, log_every_s=3600) as view:
        view.update(_states(0, 2))
        view.update(_states(0, 2))
        view.update(_states(1, 1))
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("demo: done 0,") and "pending 2" in lines[0]
    assert lines[1].startswith("demo: done 1,") and "pending 1" in lines[1]


def test_disabled_view_prints_nothing() -> None:
    buffer = io.StringIO()
    with ProgressView("demo", False, console=Console(file=buffer, force_terminal=False)) as view:
        view.update(_states(1, 1))
    assert buffer.getvalue() == ""
