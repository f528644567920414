"""``--output-dir`` overrides the study's output folder for run, status and report alike."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from ablations.cli import app

ROOT = Path(__file__).resolve().parents[2]


def test_status_reads_the_given_output_dir(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    result = CliRunner().invoke(
        app, ["study", "status", str(ROOT / "studies" / "smoke.yaml"), "--output-dir", str(target)]
    )
    output = " ".join(result.output.split())
    assert result.exit_code == 1
    assert "has not been run yet" in output
    assert str(target) in output.replace(" ", "")


def test_report_uses_the_output_dirs_store(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["report", str(ROOT / "studies" / "smoke.yaml"), "--output-dir", str(tmp_path),
              "--no-plots", "--no-attach"]
    )
    assert result.exit_code == 1, result.output
    output = "".join(result.output.split())
    assert "norecords" in output
    # The store it looked for is the one under --output-dir, and looking did not create it.
    assert str(tmp_path / "mlflow.db").replace(" ", "") in output
    assert not (tmp_path / "mlflow.db").exists()
