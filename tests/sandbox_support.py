"""Shared by the sandbox tests: which isolation this machine offers, and the skip marker.

Tests that need real OS isolation skip (with the refusal message, which names what is missing)
where bubblewrap cannot isolate, or when the weak mode was forced with UNISD_SANDBOX=processes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from evaluation.sandbox_isolation import SandboxUnavailable, isolation_mode


def _mode() -> tuple[str | None, str]:
    try:
        return isolation_mode(), ""
    except SandboxUnavailable as error:
        return None, str(error)


MODE, WHY_NOT = _mode()
ISOLATED = MODE in ("bwrap-root", "bwrap-user")
requires_isolation = pytest.mark.skipif(
    not ISOLATED,
    reason=f"needs bubblewrap isolation (see README, 'Sandbox'): {WHY_NOT or f'mode is {MODE}'}",
)


def skip_code_without_sandbox(benchmark: str) -> None:
    """Skip a test that scores code items (MBPP, HumanEval) where the sandbox refuses to run."""
    if benchmark in ("mbpp", "humaneval") and MODE is None:
        pytest.skip(f"scoring {benchmark} needs the code sandbox: {WHY_NOT}")


def processes_with(marker: str) -> list[int]:
    """Pids of live processes whose command line contains ``marker`` (zombies count as gone)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found
