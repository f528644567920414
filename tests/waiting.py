"""Shared by the integration tests: poll until a condition holds, on a monotonic clock.

The deadline guards a hang, not speed: callers pass generous limits, since the suite must pass on
a loaded 2-core machine.
"""

from __future__ import annotations

import time
from typing import Callable


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
