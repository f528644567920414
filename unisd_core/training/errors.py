"""Errors the training loop raises on purpose (callers catch them by type).

Departures from the paper: none.
"""

from __future__ import annotations


class NonFiniteLossError(RuntimeError):
    """The loss (or gradient norm) of optimizer step ``step`` is NaN or infinite.

    Raised before the optimizer step, so the weights and the last checkpoint stay clean;
    ``values`` holds the step's metrics so far (what went non-finite is visible there).
    """

    def __init__(self, step: int, values: dict[str, float]) -> None:
        self.step = int(step)
        self.values = dict(values)
        bad = sorted(name for name, value in self.values.items() if value != value or value in (float("inf"), float("-inf")))
        super().__init__(f"non-finite loss at optimizer step {self.step} (non-finite: {bad or 'loss'})")
