"""Off a terminal (a log file, ``ray job logs``) the progress view prints plain summary lines:
when the counts change, and not again while they stay the same."""

from __future__ import annotations

import io

import pytest
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


def test_queued_steps_are_not_counted_as_running() -> None:
    from pipelines.progress import summary_line

    states = ([StepState(f"q{i}", "train", "k", f"train q{i}", status="queued")
               for i in range(15)]
              + [StepState("r", "train", "k", "train r", status="running", started_at=0.0)])
    line = summary_line("demo", states, started_at=0.0)
    assert "running 1, queued 15," in line


def test_an_estimate_appears_once_a_step_has_finished() -> None:
    """Finished: one base evaluation (20 s). Left: a training running for 5 s (no training has
    finished: the mean of the finished kinds, 20 s, so 15 s left) and two model evaluations (the
    base evaluation's 20 s each), with one step running: 15 + 2 * 20 = 55 s."""
    from pipelines.progress import estimate_remaining_s

    now = 1000.0
    states = [StepState("b", "base_eval", "k", "base", status="done", started_at=900.0,
                        finished_at=920.0),
              StepState("t", "train", "k", "train", status="running", started_at=now - 5),
              StepState("e1", "evaluate", "k", "evaluate 1"),
              StepState("e2", "evaluate", "k", "evaluate 2", status="queued"),
              StepState("r", "record", "k", "record")]
    assert estimate_remaining_s(states, now) == pytest.approx(55.0, rel=1e-12)
    assert estimate_remaining_s(states[1:], now) is None  # nothing finished yet
