"""Interruptions, refusals and damaged state, through the real ``unisd`` console script on a tiny
study (tiny-qwen2, one trained cell + the base model, real Ray, real lm-eval, SQLite MLflow).

One study serves the whole module (2 cores are shared): the fixture runs it with Ctrl-C in the
middle of training, looks at ``study status`` with no driver, and resumes it to the end. The
damage tests then truncate or delete real files of that finished study, one after the other, each
re-running the study (which must repair it and finish again) before the next one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from waiting import wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
UNISD = [sys.executable, "-c", "from ablations.cli import app; app()"]
STUDY = {
    "name": "faults", "models": ["tiny-qwen2"], "training_sets": ["scienceqa"],
    "benchmarks": ["scienceqa"], "components": [[]], "presets": ["base"], "seeds": [0],
    "training": {"max_steps": 3, "per_device_batch": 2, "grad_accum": 1, "max_new_tokens": 8,
                 "learning_rate": 1.0e-3, "lora": {"rank": 4, "alpha": 8.0, "dropout": 0.0},
                 "checkpoint_every": 1},
    "data": {"limit": 4},
    "evaluation": {"limit": 2, "max_new_tokens": 8, "batch_size": 2, "retention": False},
    "resources": {"num_gpus": 0, "num_cpus": 1},
}


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as an interactive Ctrl-C meets it


def _env(root: Path, faults: str = "") -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT), "UNISD_FAULTS": faults}


def unisd(*args: str, root: Path, timeout: float = 900, faults: str = ""
          ) -> subprocess.CompletedProcess:
    return subprocess.run([*UNISD, *args], cwd=root, env=_env(root, faults), capture_output=True,
                          text=True, timeout=timeout)


class Study:
    """The module's study: its file, output folder and the outputs of the first commands."""

    def __init__(self, root: Path):
        self.root, self.file, self.output = root, root / "faults.yaml", root / "study"
        self.file.write_text(yaml.safe_dump(STUDY), encoding="utf-8")
        self.args = (str(self.file), "--output-dir", str(self.output))
        from ablations.grid import expand_grid
        from ablations.study import load_study

        cells = expand_grid(load_study(self.file))
        self.trained = next(cell for cell in cells if cell.train is not None)
        self.train_id = f"train-{self.trained.train_key()[:10]}"
        self.evaluate_id = f"evaluate-{self.trained.eval_key()[:10]}"
        self.record_id = f"record-{self.trained.run_key()[:10]}-{self.trained.name}"

    def step_dir(self, step_id: str) -> Path:
        return self.output / "steps" / step_id

    def state(self, step_id: str) -> dict:
        return json.loads((self.output / "state" / f"{step_id}.json").read_text())

    def run(self, timeout: float = 900) -> subprocess.CompletedProcess:
        return unisd("study", "run", *self.args, "--no-progress", root=self.root,
                     timeout=timeout)

    def status(self, *extra: str) -> subprocess.CompletedProcess:
        return unisd("study", "status", *self.args, *extra, root=self.root, timeout=300)


def _cell_run_status(study: Study) -> tuple[str, str] | None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{study.output / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(STUDY["name"])
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`unisd.cell` = '{study.trained.name}'")
    if len(runs) != 1:
        return None
    return runs[0].info.status, runs[0].data.tags.get("unisd.status")


def _checkpointed(study: Study) -> bool:
    return any((study.step_dir(study.train_id) / "train" / "checkpoints").glob("step-*/meta.json"))


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    """Run with Ctrl-C during training (slow cell: 3 s per step), look, then run to the end."""
    found = Study(tmp_path_factory.mktemp("faults"))
    driver = subprocess.Popen(
        [*UNISD, "study", "run", *found.args, "--no-progress"], cwd=found.root,
        env=_env(found.root, f"slow@{found.trained.name}:3"), start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    try:
        wait_for(lambda: _checkpointed(found) or driver.poll() is not None, 600,
                 "a first training checkpoint")
        os.killpg(driver.pid, signal.SIGINT)
        found.interrupted = subprocess.CompletedProcess(driver.args, driver.wait(timeout=300),
                                                        *driver.communicate())
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    found.mlflow_after_interrupt = _cell_run_status(found)
    found.status_after_interrupt = found.status()
    found.json_after_interrupt = found.status("--json")
    found.finished = found.run()
    assert found.finished.returncode == 0, found.finished.stdout[-3000:] + \
        found.finished.stderr[-3000:]
    return found


def test_ctrl_c_says_interrupted_and_exits_130(study: Study) -> None:
    out = study.interrupted.stdout
    assert study.interrupted.returncode == 130, out[-2000:] + study.interrupted.stderr[-2000:]
    assert "interrupted, re-run to resume" in study.interrupted.stderr  # a note: stderr
    rows = {line.split()[1]: line for line in out.splitlines()
            if study.trained.name in line}
    assert rows and all(" interrupted " in line for line in rows.values()), out
    assert "Traceback" not in out + study.interrupted.stderr


def test_interrupted_cell_run_is_killed_in_mlflow_then_finished(study: Study) -> None:
    assert study.mlflow_after_interrupt == ("KILLED", "interrupted")
    assert _cell_run_status(study) == ("FINISHED", "done")  # the same run, resumed


def test_status_after_the_driver_stopped_says_so(study: Study) -> None:
    out = study.status_after_interrupt.stdout
    assert study.status_after_interrupt.returncode == 0, out
    assert "no driver is running" in out and "unisd study run" in out
    row = next(line for line in out.splitlines() if study.trained.name in line)
    assert " interrupted " in row and " pending " not in row and " running " not in row
    state = json.loads(study.json_after_interrupt.stdout)
    assert state["driver"]["alive"] is False and state["driver"]["outcome"] == "interrupted"
    cells = {cell["cell"]: cell["status"] for cell in state["cells"]}
    assert cells[study.trained.name] == "interrupted"
    train = next(row for row in state["steps"] if row["step_id"] == study.train_id)
    assert train["status"] == "interrupted" and train["attempts"] == 1


def test_finished_study_status_has_a_step_view_and_json(study: Study) -> None:
    steps = study.status("--steps")
    assert steps.returncode == 0
    assert f"train {study.trained.name}" in steps.stdout and "no step is left to run" in \
        steps.stdout
    state = json.loads(study.status("--json").stdout)
    assert {cell["status"] for cell in state["cells"]} == {"done"}
    assert {row["status"] for row in state["steps"]} == {"done"}


def test_second_driver_is_refused_with_a_message(study: Study) -> None:
    from pipelines.driver_lock import driver_lock

    with driver_lock(study.output, watch_hint="held by the test"):
        refused = study.run(timeout=300)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "another driver" in refused.stderr and "unisd study status" in refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr


def test_read_only_output_folder_is_refused(study: Study, tmp_path: Path) -> None:
    folder = tmp_path / "readonly"
    folder.mkdir()
    probe = subprocess.run(["unshare", "-m", "sh", "-c",
                            f"mount --bind -o ro {folder} {folder} && touch {folder}/x"],
                           capture_output=True, text=True)
    if "Read-only" not in probe.stderr:
        pytest.skip(f"no read-only bind mount here (needs root and unshare): {probe.stderr}")
    command = " ".join([f"mount --bind -o ro {folder} {folder} &&", "exec", *[
        f"'{part}'" for part in UNISD], "study", "run", str(study.file), "--output-dir",
        str(folder), "--no-progress"])
    refused = subprocess.run(["unshare", "-m", "sh", "-c", command], cwd=study.root,
                             env=_env(study.root), capture_output=True, text=True, timeout=300)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "cannot write" in refused.stderr and str(folder) in refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr


def test_second_folder_on_the_same_store_is_refused(study: Study, tmp_path: Path) -> None:
    other = tmp_path / "other"
    refused = unisd("study", "run", str(study.file), "--output-dir", str(other),
                    "--tracking-uri", f"sqlite:///{study.output / 'mlflow.db'}", "--no-progress",
                    root=study.root, timeout=600)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert str(study.output) in refused.stderr and "--tracking-uri" in refused.stderr  # stderr
    assert not (other / "steps").exists()  # nothing trained twice


# ---- damage: each test damages the finished study, re-runs it, and leaves it finished -------

def _repaired(study: Study, run: subprocess.CompletedProcess, *names: str) -> None:
    text = run.stdout + run.stderr
    assert run.returncode == 0, text[-4000:]
    assert "Traceback" not in text
    for name in names:
        assert name in text.replace("\n", ""), text[-3000:]
    state = json.loads(study.status("--json").stdout)
    assert {cell["status"] for cell in state["cells"]} == {"done"}


def test_empty_step_state_file_is_named_and_repaired(study: Study) -> None:
    path = study.output / "state" / f"{study.train_id}.json"
    path.write_bytes(b"")
    status = study.status()
    assert status.returncode == 0 and "damaged" in status.stdout
    assert "JSONDecodeError" not in status.stdout + status.stderr
    assert study.train_id in status.stdout.replace("\n", "")
    _repaired(study, study.run(), "repaired", f"{study.train_id}.json")
    assert study.state(study.train_id)["status"] == "done"


def test_empty_results_of_a_done_evaluation_is_recomputed(study: Study) -> None:
    results = study.step_dir(study.evaluate_id) / "results.json"
    scores = json.loads(results.read_text())["scienceqa"]["score"]
    results.write_bytes(b"")
    (study.output / "state" / f"{study.record_id}.json").unlink()  # the record must run again
    _repaired(study, study.run(), "repaired", "results.json")
    assert json.loads(results.read_text())["scienceqa"]["score"] == scores
    history = study.state(study.evaluate_id)["history"]
    assert history[-1]["status"] == "damaged" and str(results) in history[-1]["error"]


def test_emptied_checkpoint_is_set_aside_and_training_recomputed(study: Study) -> None:
    train = study.step_dir(study.train_id) / "train"
    checkpoint = max((train / "checkpoints").glob("step-*"))
    (checkpoint / "state.pt").write_bytes(b"")
    (train / "train_result.json").unlink()  # training is not finished: it must resume
    (study.output / "state" / f"{study.train_id}.json").unlink()
    run = study.run()
    _repaired(study, run, "repaired", "state.pt")
    assert list((train / "checkpoints").glob(f"damaged-*-{checkpoint.name}"))
    assert study.state(study.train_id)["attempts"] == 1  # not a retry loop: one clean attempt
    log = (study.step_dir(study.train_id) / "log.txt").read_text()
    assert "damaged training state set aside" in log and "state.pt" in log


@pytest.fixture(scope="module")
def unrun_study(tmp_path_factory) -> Study:
    return Study(tmp_path_factory.mktemp("unrun"))


def test_missing_inputs_are_caught_by_validate(unrun_study: Study, tmp_path: Path) -> None:
    study = unrun_study
    bad = {**STUDY, "models": [str(tmp_path / "Qwen2.5-0.5B-Instruct")],
           "data": {"limit": 4, "sources": {"scienceqa": str(tmp_path / "no.jsonl")}}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    checked = unisd("study", "validate", str(path), root=study.root, timeout=300)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    text = checked.stderr.replace("\n", "")  # errors go to stderr
    assert "local model folder does not exist" in text and "Qwen2.5-0.5B-Instruct" in text
    assert "local data file does not exist" in text and "no.jsonl" in text


def test_missing_data_file_fails_once_and_the_reason_is_whole(unrun_study: Study,
                                                              tmp_path: Path) -> None:
    """A deterministic failure past validation (the file vanished after it): no retries, and
    the CLI shows the path whole."""
    from pipelines.runner import run_study
    from pipelines.cells import DataSettings

    missing = tmp_path / ("a-rather-long-folder-name-" * 3) / "train.jsonl"
    cell = unrun_study.trained.model_copy(update={"data": DataSettings(source=str(missing),
                                                                 limit=4)})
    outcome = run_study([cell], study_name="faults-missing", output_dir=tmp_path / "out",
                        progress=False)
    assert outcome.cells[cell.name].status == "failed"
    reason = outcome.cells[cell.name].reason
    assert str(missing) in reason and "not retried" in reason
    prepare = next((tmp_path / "out" / "state").glob("prepare-*.json"))
    assert json.loads(prepare.read_text())["attempts"] == 1
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
