"""What :func:`pipelines.runner.run_study` returns: one outcome per cell and per study.

A cell's ``status`` is :func:`pipelines.state.cell_status`, the same word ``study status`` shows.

Departures from the paper: none.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pipelines.state import StepState, cell_chain, cell_status


@dataclasses.dataclass(frozen=True)
class CellOutcome:
    name: str
    status: str  # pipelines.state.cell_status: done / failed / interrupted
    run_key: str
    run_id: str | None
    reason: str
    scores: dict[str, float]
    log: str | None = None  # the log of the step that failed, for a failed cell


@dataclasses.dataclass(frozen=True)
class StudyOutcome:
    study_name: str
    output_dir: Path
    tracking_uri: str
    cells: dict[str, CellOutcome]
    summary: dict[str, int]
    executed: dict[str, int]  # steps actually run by this call, per kind
    interrupted: bool
    repairs: tuple[str, ...] = ()  # damaged files found, and what was done about each

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(c.status == "done" for c in self.cells.values())


def study_outcome(graph: Any, states: dict[str, StepState], *, output_dir: Path, study_name: str,
                  tracking_uri: str, run_ids: dict[str, str], executed: dict[str, int],
                  interrupted: bool, repairs: list[str]) -> StudyOutcome:
    """The outcome of a driver's run from its graph (``pipelines.graph.Graph``) and states."""
    deps_of = {step_id: step.deps for step_id, step in graph.steps.items()}
    cells = {}
    for name, cell in graph.cells.items():
        record = states[graph.record_step_of[name]]
        chain = [states[step_id] for step_id in cell_chain(record.step_id, deps_of)]
        status, reason = cell_status(record, chain, live=not interrupted)
        failed = next((state for state in chain if state.status == "failed"), None)
        log = output_dir / "steps" / failed.step_id / "log.txt" if failed else None
        cells[name] = CellOutcome(name=name, status=status, run_key=cell.run_key(),
                                  run_id=run_ids.get(name), reason=reason,
                                  scores=dict(record.result.get("scores", {})),
                                  log=str(log) if log is not None and log.exists() else None)
    summary: dict[str, int] = {}
    for state in states.values():
        summary[state.status] = summary.get(state.status, 0) + 1
    return StudyOutcome(study_name=study_name, output_dir=output_dir, tracking_uri=tracking_uri,
                        cells=cells, summary=summary, executed=dict(executed),
                        interrupted=interrupted, repairs=tuple(repairs))
