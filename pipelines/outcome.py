"""What :func:`pipelines.runner.run_study` returns: one outcome per cell and per study.

A cell's ``status`` is :func:`pipelines.state.cell_status`, the same word ``study status`` shows.

Departures from the paper: none.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path


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
