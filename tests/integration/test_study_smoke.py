"""The shipped CPU demo end to end through the real console script: ``unisd study run``
(real Ray, real training of tiny-qwen2, real lm-eval, real MLflow), ``status`` and ``report``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
UNISD = [sys.executable, "-c", "from ablations.cli import app; app()"]


def _unisd(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*UNISD, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.timeout(1200)
def test_smoke_study_runs_and_reports(tmp_path: Path) -> None:
    env = {**os.environ, "UNISD_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200",
           "PYTHONPATH": str(ROOT)}
    study = str(ROOT / "studies" / "smoke.yaml")
    run = _unisd("study", "run", study, "--no-progress", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    status = _unisd("study", "status", study, cwd=tmp_path, env=env)
    assert status.returncode == 0 and status.stdout.count(" done ") >= 3, status.stdout
    report = _unisd("report", study, cwd=tmp_path, env=env)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    for row in ("| tiny-qwen2 | Base |", "| tiny-qwen2 | SDFT |", "| tiny-qwen2 | SD+EMA |"):
        assert row in report.stdout
    folder = tmp_path / "runs" / "smoke" / "report"
    assert (folder / "main_table.tex").exists() and (folder / "components.csv").exists()
