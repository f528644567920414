"""Dataset adapters: one module per benchmark, each exposing
``to_record(row: dict, index: int, seed: int, *, split: str = "test") -> Record`` for the hub
schema of that benchmark, plus ``REQUIRED_FIELDS``. ``ADAPTERS`` maps benchmark name -> module.

``split`` is keyword-only and optional (an extension of the interface in docs/architecture.md):
it only enters the record id, so callers that score the eval split may omit it.
"""

from __future__ import annotations

from types import ModuleType

from unisd_core.data.adapters import cose, gpqa, humaneval, mbpp, scienceqa, toolalpaca
from unisd_core.data.adapters.common import MalformedRowError

ADAPTERS: dict[str, ModuleType] = {
    "scienceqa": scienceqa,
    "cose": cose,
    "mbpp": mbpp,
    "toolalpaca": toolalpaca,
    "gpqa": gpqa,
    "humaneval": humaneval,
}

__all__ = ["ADAPTERS", "MalformedRowError"]
