"""The shipped CPU demo end to end through the real console script: ``unisd study run``
(real Ray, real training of tiny-qwen2, real lm-eval, real MLflow), ``status`` and ``report``;
then what a user sees of it: the cell runs' environment, arm and score tags through the MLflow
client, and the MLflow UI itself in headless Chromium (skipped where chromium is missing)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
UNISD = [sys.executable, "-c", "from ablations.cli import app; app()"]


def _unisd(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*UNISD, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory) -> tuple[Path, dict[str, str], str]:
    """The smoke study run once through ``unisd study run``: (working dir, env, study path)."""
    tmp_path = tmp_path_factory.mktemp("smoke")
    env = {**os.environ, "UNISD_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200",
           "PYTHONPATH": str(ROOT)}
    study = str(ROOT / "studies" / "smoke.yaml")
    run = _unisd("study", "run", study, "--no-progress", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "arms side by side:" in run.stderr and "viewStateShareKey=" in run.stderr
    return tmp_path, env, study


@pytest.mark.timeout(1200)
def test_smoke_study_runs_and_reports(smoke_study) -> None:
    tmp_path, env, study = smoke_study
    status = _unisd("study", "status", study, cwd=tmp_path, env=env)
    assert status.returncode == 0 and status.stdout.count(" done ") >= 3, status.stdout
    report = _unisd("report", study, cwd=tmp_path, env=env)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    for row in ("| tiny-qwen2 | Base |", "| tiny-qwen2 | SDFT |", "| tiny-qwen2 | SD+EMA |"):
        assert row in report.stdout
    folder = tmp_path / "runs" / "smoke" / "report"
    assert (folder / "main_table.tex").exists() and (folder / "components.csv").exists()


@pytest.mark.timeout(1200)
def test_cell_runs_carry_environment_arm_and_scores(smoke_study) -> None:
    """13.3 and 16.1 on real cell runs: the machine, the arm, a readable name, the scores."""
    import torch
    from mlflow.tracking import MlflowClient

    from pipelines.environment import collect_environment
    from pipelines.mlflow_adapter import default_tracking_uri

    tmp_path, _, _ = smoke_study
    client = MlflowClient(tracking_uri=default_tracking_uri(tmp_path / "runs" / "smoke"))
    experiment = client.get_experiment_by_name("smoke")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    children = client.search_runs([experiment.experiment_id],
                                  filter_string="tags.`unisd.study_parent` != 'true'")
    assert len(children) == 3
    here = collect_environment()  # the workers ran on this machine, with this install
    for run in children:
        tags, metrics = run.data.tags, run.data.metrics
        for fact in ("cpu_model", "cpu_flags", "torch", "transformers", "peft", "lm_eval"):
            assert tags[f"unisd.env.{fact}"] == here[fact], fact
        assert tags["unisd.env.gpu"] == ("none" if not torch.cuda.is_available()
                                         else tags["unisd.env.gpu"])
        assert tags["unisd.env.threads"].startswith("intra=1,")  # the study asks num_cpus: 1
        assert tags["unisd.env.dtype"] in ("float32", "auto (evaluation only)")
        assert len(tags["unisd.env.fingerprint"]) == 12
        assert run.info.run_name.startswith(tags["unisd.arm"] + " · tiny-qwen2 · scienceqa")
        mean = (metrics["score/scienceqa"] + metrics["score/gpqa"]) / 2
        assert metrics["score/mean"] == pytest.approx(mean, rel=1e-12, abs=1e-15)
    assert {run.data.tags["unisd.arm"] for run in children} == {"Base", "SDFT", "SD+EMA"}


def _chromium() -> str | None:
    return next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)


def _render(browser: str, url: str, screenshot: Path | None = None) -> str:
    """The DOM of ``url`` after the MLflow UI (a JS app) rendered, from headless Chromium."""
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--hide-scrollbars", "--window-size=1600,800", "--virtual-time-budget=30000"]
    if screenshot is not None:
        subprocess.run([*flags, f"--screenshot={screenshot}", url], capture_output=True,
                       timeout=180)
    done = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True,
                          timeout=180)
    return done.stdout


@pytest.mark.timeout(1200)
def test_mlflow_ui_in_a_browser_shows_the_arms_with_their_scores(smoke_study) -> None:
    """16.2: ``mlflow ui`` on loopback, headless Chromium: the runs view, not the GenAI overview,
    lists every cell run with its score columns (the view ``unisd study run`` prints)."""
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium; make setup does it "
                    "as root)")
    from mlflow.tracking import MlflowClient

    from pipelines.mlflow_adapter import default_tracking_uri
    from pipelines.mlflow_layout import comparison_view_path, components_view_path

    tmp_path, env, study = smoke_study
    report = _unisd("report", study, cwd=tmp_path, env=env)  # attaches the contribution runs
    assert "components side by side:" in report.stderr, report.stderr[-2000:]
    uri = default_tracking_uri(tmp_path / "runs" / "smoke")
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("smoke")
    names = [run.info.run_name for run in client.search_runs(
        [experiment.experiment_id], filter_string="tags.`unisd.study_parent` = 'false'")]
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"], stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "ui.log").open("w"), start_new_session=True)
    address = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(address, server)
        view = _render(browser, address + comparison_view_path(experiment.experiment_id),
                       screenshot=tmp_path / "arms.png")
        charts = _render(browser, address + components_view_path(experiment.experiment_id),
                         screenshot=tmp_path / "components.png")
        landing = _render(browser, f"{address}/#/experiments/{experiment.experiment_id}"
                                   "?workflowType=machine_learning")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert "Detect Issues" not in view and "Group by: unisd.arm" in view, view[-2000:]
    for column in ("score/mean", "score/scienceqa", "score/gpqa"):
        assert f">{column}<" in view, column
    for name in names:
        assert name in view, name
    for arm in ("Base", "SDFT", "SD+EMA"):
        assert f"Group: {arm}" in view, arm
    # the components view: the contribution run, and a chart per estimate x benchmark
    assert "EMA · contribution" in charts, charts[-2000:]
    for benchmark in ("scienceqa", "gpqa"):
        assert f"main_effect/tiny-qwen2/scienceqa/{benchmark}" in charts, benchmark
    # the experiment itself opens on its runs (the parent listed), not on the GenAI overview
    assert "Detect Issues" not in landing and ">Runs<" in landing and ">smoke<" in landing


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(address: str, server: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        assert server.poll() is None, "mlflow ui exited"
        try:
            if urllib.request.urlopen(f"{address}/health", timeout=2).status == 200:
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"mlflow ui did not answer on {address} within {timeout_s}s")
