"""End to end on tiny-qwen2: real Ray, real training, real lm-eval, real MLflow (server and SQLite).

Faults are injected through the documented, inert-by-default ``UNISD_FAULTS`` hook of
``pipelines.job`` (a worker killing itself, an OOM, a NaN loss, a slow cell) and by killing a
driver process group from the test.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from waiting import wait_for
import torch

from pipelines import ray_adapter
from pipelines.cells import CellSpec, DataSettings, EvalSettings, Resources, save_cells
from pipelines.mlflow_adapter import StudyTracker, load_study_records
from pipelines.runner import run_study
from pipelines.state import StateStore, study_status
from unisd_core.config import ComponentsConfig, EmaConfig, LoraSettings, TrainConfig

pytestmark = pytest.mark.integration
torch.set_num_threads(1)
BENCHMARKS = ("scienceqa", "gpqa")
EVAL = EvalSettings(limit=2, max_new_tokens=8, batch_size=2)


def trained_cell(name, *, seed=0, components=ComponentsConfig(), max_steps=3, batch=2, accum=1):
    train = TrainConfig(model="tiny-qwen2", seed=seed, max_steps=max_steps, per_device_batch=batch,
                        grad_accum=accum, max_new_tokens=8, learning_rate=1e-3,
                        lora=LoraSettings(rank=4, alpha=8), checkpoint_every=1,
                        components=components)
    return CellSpec(name=name, method="unisd" if components.enabled() else "sdft",
                    subset=components.subset_label(), train=train, model="tiny-qwen2",
                    training_set="scienceqa", seed=seed, benchmarks=BENCHMARKS, eval=EVAL,
                    data=DataSettings(limit=4), resources=Resources(num_cpus=1))


def base_cell(name, seed=0):
    return CellSpec(name=name, method="base", model="tiny-qwen2", training_set="scienceqa",
                    seed=seed, benchmarks=BENCHMARKS, eval=EVAL, data=DataSettings(limit=4))


# Deadlines below guard against hangs; they are not speed claims. Each is several times what the
# step takes with both cores busy (the suite once ran 15 min under load against 4.5 min idle).
STARTUP_DEADLINE_S = 600


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports: all sockets stay bound until every port is chosen,
    so the kernel cannot hand the same ephemeral port out twice."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def stop_group(process: subprocess.Popen, grace_s: float = 10) -> None:
    """Stop a process group the test started (never ``ray stop``)."""
    for sig, grace in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def mlflow_server(tmp_path):
    (port,) = free_ports(1)
    store = tmp_path / "server"
    store.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{store / 'mlflow.db'}", "--default-artifact-root", str(store / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=(store / "server.log").open("w"),
        start_new_session=True)
    uri = f"http://127.0.0.1:{port}"

    def healthy():
        import urllib.request
        try:
            return urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200
        except OSError:
            return False

    try:
        wait_for(healthy, STARTUP_DEADLINE_S, "the MLflow server")
        yield uri
    finally:
        stop_group(process, grace_s=3)


@pytest.mark.timeout(1800)
def test_study_on_mlflow_server_with_worker_kill_oom_and_nan(tmp_path, monkeypatch,
                                                              mlflow_server):
    cells = [trained_cell("sdft"), trained_cell("ema", seed=1, batch=2, accum=1,
                                                components=ComponentsConfig(ema=EmaConfig(
                                                    every_steps=1))),
             trained_cell("nan", seed=2), base_cell("base-s0"), base_cell("base-s1", seed=1)]
    monkeypatch.setenv("UNISD_FAULTS", "kill@sdft:2,oom@ema:1,nan@nan:2")
    # A slot per step that can run at once (3 trainings + the base evaluation), so the trainings
    # overlap whatever order the driver launches them in (on 2 slots the base evaluation can
    # take one first and the trainings run one after another). Started after the faults are
    # set (a local cluster's workers inherit the environment), stopped after the study.
    ray_adapter.shutdown()
    ray_adapter.connect(None, num_cpus=4)
    try:
        outcome = run_study(cells, study_name="e2e-server", output_dir=tmp_path / "study",
                            tracking_uri=mlflow_server, progress=False)
    finally:
        ray_adapter.shutdown()

    assert {n: c.status for n, c in outcome.cells.items()} == {
        "sdft": "done", "ema": "done", "nan": "failed", "base-s0": "done", "base-s1": "done"}
    assert "non-finite" in outcome.cells["nan"].reason and "step 2" in outcome.cells["nan"].reason
    # shared steps once per (model, dataset) whatever the number of cells and seeds
    assert outcome.executed["prepare"] == 1 and outcome.executed["base_eval"] == 1
    assert outcome.executed["train"] == 3 + 1  # three cells + the OOM retry of "ema"

    tracker = StudyTracker("e2e-server", mlflow_server)
    runs = tracker.run_ids_by_key()
    assert len(runs) == len(cells) and all(len(ids) == 1 for ids in runs.values())
    client = tracker.client
    killed = client.get_run(outcome.cells["sdft"].run_id)
    # Ray restarted the dead worker's task by itself: the state counts that start and says why
    restarted = StateStore(tmp_path / "study").load(f"train-{cells[0].train_key()[:10]}")
    assert (restarted.attempts, restarted.ray_retries) == (2, 1)
    assert [entry.get("retried_by") for entry in restarted.history] == ["ray"]
    assert killed.data.tags["unisd.resumed_from"] == "step-00000001"  # the worker died at step 2
    # step 2 was logged before the kill and replayed after the resume: one point per step
    assert sorted(m.step for m in client.get_metric_history(killed.info.run_id, "train/loss")) == [
        1, 2, 3]
    assert all(math.isfinite(m.value)
               for m in client.get_metric_history(killed.info.run_id, "train/kl"))
    oom = client.get_run(outcome.cells["ema"].run_id).data
    assert (oom.tags["unisd.effective_per_device_batch"], oom.tags["unisd.effective_grad_accum"]
            ) == ("1", "2")
    assert oom.params["train.per_device_batch"] == "2"  # the config as resolved, not as retried
    assert oom.tags["unisd.component.ema"] == "true" and oom.tags["unisd.model_family"] == "qwen2"

    # several workers logged at once: two training steps overlapped in time (started_at is when
    # a worker started the step, not when it was queued; the failed "nan" training counts too)
    store = StateStore(tmp_path / "study")
    spans = sorted((s.started_at, s.finished_at) for s in map(store.load, [
        f.stem for f in store.folder.glob("train-*.json")]) if s.status in ("done", "failed"))
    assert len(spans) == 3, spans
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:])), spans

    scores, items = load_study_records("e2e-server", mlflow_server)
    done = scores[scores["status"] == "done"]
    assert len(scores) == 2 * len(cells) and len(done) == 2 * 4
    assert done["score"].between(0, 1).all()
    assert scores.loc[scores["cell"] == "nan", "score"].isna().all()
    assert len(items) == 4 * 2 * EVAL.limit

    # rerun: finished steps are skipped, only the failed cell runs again (its one-shot fault has
    # fired, so it now trains through), in the same MLflow run
    again = run_study(cells, study_name="e2e-server", output_dir=tmp_path / "study",
                      tracking_uri=mlflow_server, progress=False)
    assert again.executed == {"train": 1, "evaluate": 1, "record": 1}
    assert again.ok and again.cells["nan"].run_id == outcome.cells["nan"].run_id
    assert all(len(ids) == 1 for ids in tracker.run_ids_by_key().values())
    summary = study_status(tmp_path / "study").summary
    assert summary["done"] == sum(summary.values()) == len(list(store.folder.glob("*.json")))


def _default_sigint() -> None:
    # A test run started in the background by a shell without job control inherits SIGINT
    # ignored, and so would the driver (Python then installs no KeyboardInterrupt handler): give
    # the driver the disposition an interactive Ctrl-C meets.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


SLOW_STEPS, SLOW_STEP_S = 24, 5


def start_driver(tmp_path, output, log_name):
    """``python -m pipelines run`` in its own session, the slow cell sleeping 5 s per step: its
    training lasts >= 2 min however fast the machine, so the fast cell (2 steps, evaluation,
    record) is done long before it even on two busy cores."""
    environment = {**os.environ, "UNISD_FAULTS": f"slow@slow:{SLOW_STEP_S}"}
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines", "run", str(tmp_path / "cells.json"),
         "--study-name", "killed", "--output-dir", str(output)],
        env=environment, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=(tmp_path / log_name).open("w"), preexec_fn=_default_sigint)


def latest_step(checkpoints: Path) -> int:
    done = [int(p.parent.name[5:]) for p in checkpoints.glob("step-*/meta.json")]
    return max(done, default=0)


@pytest.mark.timeout(1800)
def test_ctrl_c_then_driver_killed_then_rerun(tmp_path):
    """A 2-cell study on SQLite: Ctrl-C, resume, SIGKILL the driver's group, resume again."""
    output = tmp_path / "study"
    cells = [trained_cell("fast", max_steps=2), trained_cell("slow", seed=1, max_steps=SLOW_STEPS)]
    save_cells(cells, tmp_path / "cells.json")
    slow_train = f"train-{cells[1].train_key()[:10]}"
    checkpoints = output / "steps" / slow_train / "train" / "checkpoints"

    def step_status(step_id):
        return {row["step_id"]: row["status"] for row in study_status(output).steps}[step_id]

    driver = start_driver(tmp_path, output, "driver1.log")
    try:
        def fast_recorded_and_slow_training():
            if not (output / "study.json").exists():
                return False
            status = {row["cell"]: row["status"] for row in study_status(output).cells}
            return status["fast"] == "done" and latest_step(checkpoints) > 0
        wait_for(fast_recorded_and_slow_training, STARTUP_DEADLINE_S, "the fast cell and a slow checkpoint")
        assert step_status(slow_train) == "running"  # read from another process
        os.killpg(driver.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
        assert driver.wait(timeout=300) == 130
    finally:
        stop_group(driver)
    assert step_status(slow_train) == "interrupted" and (output / "STOP").exists()
    stopped_at = latest_step(checkpoints)
    assert 0 < stopped_at < SLOW_STEPS

    driver = start_driver(tmp_path, output, "driver2.log")
    try:
        wait_for(lambda: latest_step(checkpoints) > stopped_at, STARTUP_DEADLINE_S, "training to resume")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver dies with no chance to clean up
        stop_group(driver)
    # the state file still says running; the free driver lock says nobody runs it
    assert step_status(slow_train) == "interrupted"
    assert "no driver is running" in study_status(output).driver["note"]
    killed_at = latest_step(checkpoints)

    again = run_study(cells, study_name="killed", output_dir=output, progress=False)
    assert again.ok
    assert again.executed == {"train": 1, "evaluate": 1, "record": 1}  # nothing else redone
    tracker = StudyTracker("killed", again.tracking_uri)
    assert all(len(ids) == 1 for ids in tracker.run_ids_by_key().values())
    assert len(tracker.run_ids_by_key()) == 2
    slow = tracker.client.get_run(again.cells["slow"].run_id)
    assert int(slow.data.tags["unisd.resumed_from"][5:]) >= killed_at > stopped_at
    assert slow.info.status == "FINISHED" and slow.data.tags["unisd.status"] == "done"
    for name, spec in zip(("fast", "slow"), cells):
        run = tracker.client.get_run(again.cells[name].run_id)
        assert run.data.params["train.max_steps"] == str(spec.train.max_steps)
        assert run.data.tags["unisd.subset"] == "none" and run.data.tags["unisd.seed"]
        steps = {m.step for m in tracker.client.get_metric_history(run.info.run_id,
                                                                   "train/loss")}
        assert steps == set(range(1, spec.train.max_steps + 1))
        assert tracker.client.get_metric_history(run.info.run_id, "train/kl")
        assert 0.0 <= run.data.metrics["score/scienceqa"] <= 1.0
    scores, items = load_study_records("killed", again.tracking_uri)
    assert sorted(scores["cell"]) == ["fast", "fast", "slow", "slow"]
    assert set(items["benchmark"]) == set(BENCHMARKS)


@pytest.mark.timeout(1800)
def test_ray_job_submit_to_loopback_head(tmp_path):
    names = ("port", "dashboard-port", "ray-client-server-port", "node-manager-port",
             "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
             "runtime-env-agent-port", "metrics-export-port")
    ports = dict(zip(names, free_ports(len(names))))
    ray_bin = str(Path(sys.executable).parent / "ray")
    ray_temp = tempfile.mkdtemp(prefix="rayh", dir="/tmp")  # AF_UNIX paths: 107 bytes at most
    environment = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--dashboard-host", "127.0.0.1", "--include-dashboard", "true", "--num-cpus", "2",
         "--object-store-memory", str(200 * 1024**2), "--temp-dir", ray_temp,
         *[f"--{name}={port}" for name, port in ports.items()]],
        env=environment, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "head.log").open("w"))
    dashboard = f"http://127.0.0.1:{ports['dashboard-port']}"
    def job_server_up():
        assert head.poll() is None, (tmp_path / "head.log").read_text()[-3000:]
        return subprocess.run([ray_bin, "job", "list", "--address", dashboard],
                              env=environment, capture_output=True).returncode == 0

    try:
        wait_for(job_server_up, STARTUP_DEADLINE_S, "the Ray head's job server")
        save_cells([base_cell("base")], tmp_path / "cells.json")
        output = tmp_path / "study"
        submitted = subprocess.run(
            [ray_bin, "job", "submit", "--address", dashboard, "--", sys.executable, "-m",
             "pipelines", "run", str(tmp_path / "cells.json"), "--study-name", "submitted",
             "--output-dir", str(output), "--address", "auto", "--no-progress"],
            env=environment, capture_output=True, text=True, timeout=900)
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        assert "base: done" in submitted.stdout
    finally:
        stop_group(head)
        shutil.rmtree(ray_temp, ignore_errors=True)
    status = study_status(output)
    assert [row["status"] for row in status.cells] == ["done"]
    scores, _ = load_study_records("submitted", f"sqlite:///{output / 'mlflow.db'}")
    assert list(scores["benchmark"]) == list(BENCHMARKS)
