"""Test modules need unique basenames: tests/ has no __init__.py files, so pytest imports each
module by its basename and a second file with the same name aborts collection for everyone."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_basenames_are_unique() -> None:
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert not [name for name, count in names.items() if count > 1]
