"""The MLflow adapter across a tracking server's restart (issue 17, item 3), on loopback.

A real ``mlflow server`` is SIGKILLed and started again on the same port and store: calls made
while it is down (the worker's metric sink, the driver's record of a cell) wait for it and
succeed, leaving exactly what a call without the outage leaves. With the server gone for good
and a small retry budget, the call fails with a message naming the server and the variables
that set the budget.
"""

from __future__ import annotations

import logging
import signal
import threading
import urllib.request

import pytest

from benchmarks import cluster_services
from pipelines.cells import CellSpec, EvalSettings
from pipelines.graph import cell_tags
from pipelines.mlflow_adapter import MlflowMetricsSink, StudyTracker
from unisd_core.config import ComponentsConfig, EmaConfig, TrainConfig

pytestmark = pytest.mark.integration


def down(uri: str) -> bool:
    try:
        urllib.request.urlopen(f"{uri}/health", timeout=2)
        return False
    except OSError:
        return True


def test_calls_wait_for_a_restarted_server_then_fail_clearly_when_it_stays_down(
        tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    backend = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts, log = tmp_path / "artifacts", tmp_path / "mlflow.log"
    first, uri = cluster_services.start_mlflow(backend, artifacts, log, workers=1)
    servers = [first]
    try:
        cell = CellSpec(name="c", method="unisd", subset="ema", model="tiny-qwen2",
                        train=TrainConfig(model="tiny-qwen2",
                                          components=ComponentsConfig(ema=EmaConfig())),
                        training_set="scienceqa",
                        benchmarks=("scienceqa",), eval=EvalSettings(limit=2))
        tracker = StudyTracker("restart", uri)
        run_id = tracker.ensure_cell_run(cell.model_dump(mode="json"), cell_tags(cell))

        servers[0].stop(first=signal.SIGKILL)
        assert down(uri)
        restarted = threading.Event()

        def restart() -> None:
            restarted.wait(60)  # the first call below is under way (and failing) by then
            port = int(uri.rsplit(":", 1)[1])
            servers.append(cluster_services.start_mlflow(backend, artifacts, log, workers=1,
                                                         port=port)[0])
        thread = threading.Thread(target=restart, daemon=True)
        thread.start()
        sink = MlflowMetricsSink(uri, run_id)
        restarted.set()
        sink.log(1, {"loss": 0.5})  # reads the run's history first: waits out the outage
        sink.close()
        results = {"scienceqa": {"score": 0.5, "items": [{"item_id": "a", "score": 0.5}],
                                 "task_version": "1"}}
        tracker.record_cell(run_id, results, [], {"unisd.model_family": "qwen2"})
        thread.join(timeout=300)

        run = tracker.client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.tags["unisd.status"] == "done"
        assert run.data.metrics["score/scienceqa"] == 0.5
        assert [(m.step, m.value) for m in tracker.client.get_metric_history(
            run_id, "train/loss")] == [(1, 0.5)]
        assert tracker.run_ids_by_key() == {cell.run_key(): [run_id]}
        # the first calls met the outage: urllib3 (under MLflow's client) said it retried them
        assert any(record.getMessage().startswith("Retrying") for record in caplog.records)

        servers[-1].stop(first=signal.SIGKILL)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        gone = MlflowMetricsSink(uri, run_id)
        with pytest.raises(RuntimeError) as failure:
            gone.log(2, {"loss": 0.25})
        message = str(failure.value)
        assert uri in message and "after 2 retries" in message
        assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" in message
    finally:
        for server in servers:
            server.stop()
