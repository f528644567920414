"""Where the training loop sends its per-step metrics: the ``MetricsSink`` protocol and two sinks.

The loop knows nothing about MLflow (design.md: ``unisd_core`` imports no mlflow); ``pipelines``
wraps its MLflow adapter in a class with the same ``log`` method. The in-memory sink serves tests
and the final metrics; the JSONL sink is the durable local record of a run (one object per line,
``{"step": int, ...values}``), appended so that a resumed run continues the same file.

Departures from the paper: none (the paper does not specify logging).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class MetricsSink(Protocol):
    """Anything that accepts one dict of float metrics per optimizer step."""

    def log(self, step: int, values: dict[str, float]) -> None: ...


class InMemorySink:
    """Keeps every logged row in ``rows`` as ``(step, values)``."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float]]] = []

    def log(self, step: int, values: dict[str, float]) -> None:
        self.rows.append((step, dict(values)))

    def series(self, name: str) -> list[float]:
        """The values of one metric in logging order (rows without it are skipped)."""
        return [values[name] for _, values in self.rows if name in values]


class JsonlSink:
    """Appends one JSON object per step to ``path`` (non-finite floats written as strings)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, step: int, values: dict[str, float]) -> None:
        row: dict[str, object] = {"step": int(step)}
        for name, value in values.items():
            number = float(value)
            # JSON has no inf/nan; strings keep the line parseable and the value visible.
            row[name] = number if math.isfinite(number) else str(number)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row, sort_keys=True) + "\n")

    def read(self) -> list[dict[str, object]]:
        """Every row written so far (for tests and resumption checks)."""
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]


class FanOutSink:
    """Sends each row to several sinks (e.g. JSONL on disk plus the caller's sink)."""

    def __init__(self, *sinks: MetricsSink | None) -> None:
        self.sinks = [sink for sink in sinks if sink is not None]

    def log(self, step: int, values: dict[str, float]) -> None:
        for sink in self.sinks:
            sink.log(step, values)
