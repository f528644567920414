"""CLI conventions (issue 16.7): --version, exit codes, no hard wrap when piped, errors on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from ablations.study import load_study
from ablations.study_errors import StudyValidationError

ROOT = Path(__file__).resolve().parents[2]
UNISD = [sys.executable, "-c", "from ablations.cli import app; app()"]


def _unisd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The console script with stdout and stderr piped (not a terminal), as in a shell pipe."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("COLUMNS", None)
    return subprocess.run([*UNISD, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_version_prints_the_installed_version(tmp_path):
    done = _unisd("--version", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.startswith(f"unisd {metadata.version('unisd')} ")


def test_missing_file_and_invalid_study_exit_differently(tmp_path):
    missing = _unisd("study", "validate", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert missing.returncode == 66 and "does not exist" in missing.stderr
    assert missing.stdout == ""
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nmodels: [tiny-qwen2]\n")
    invalid = _unisd("study", "validate", str(broken), cwd=tmp_path)
    assert invalid.returncode == 2 and "invalid study" in invalid.stderr
    assert invalid.stdout == ""


def test_piped_errors_are_not_wrapped(tmp_path):
    raw = yaml.safe_load((ROOT / "studies" / "smoke.yaml").read_text())
    long_name = "an_unknown_section_with_a_deliberately_long_name_" * 3
    raw[long_name] = {"x": 1}
    raw["training"]["learning_rate_with_a_long_misspelling_that_needs_a_suggestion"] = 1.0
    study = tmp_path / "long.yaml"
    study.write_text(yaml.safe_dump(raw))
    with pytest.raises(StudyValidationError) as caught:
        load_study(study)
    expected = ["  - " + error.render() for error in caught.value.errors]
    assert max(map(len, expected)) > 120  # longer than the old fixed console width
    done = _unisd("study", "validate", str(study), cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    for line in expected:  # each error on one line, whole
        assert line in lines, (line, lines)
