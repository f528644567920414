"""Fault handling inside a step: deterministic failures are final, a step that starts while the
study stops does nothing, damaged checkpoints are set aside, Ray's restarts are counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipelines.job import JobFunctions, classify_failure, run_step
from pipelines.repair import (damaged_checkpoint, damaged_model, damaged_output,
                              set_aside_damaged_training)
from pipelines.starts import note_starts, read_starts
from pipelines.state import StepState


def _raised(call) -> BaseException:
    try:
        call()
    except BaseException as error:  # noqa: BLE001
        return error
    raise AssertionError("expected an error")


def test_missing_model_folder_and_data_file_are_not_retryable(tmp_path: Path) -> None:
    from unisd_core.data.datasets import load_records
    from unisd_core.models.zoo import resolve_model

    missing_model = _raised(lambda: resolve_model(str(tmp_path / "no-such-model")))
    missing_data = _raised(lambda: load_records("scienceqa", "train",
                                                str(tmp_path / "no-such.jsonl")))
    for error in (missing_model, missing_data):
        failure = classify_failure(error)
        assert failure["error_type"] == "permanent", failure["message"]
        assert str(tmp_path) in failure["message"]
    assert classify_failure(RuntimeError("flaky network"))["error_type"] == "error"


def _never_called(*args, **kwargs):
    raise AssertionError("a step started during the stop grace period did work")


def test_a_step_started_after_the_stop_file_does_nothing(tmp_path: Path) -> None:
    stop = tmp_path / "STOP"
    stop.write_text("1")
    payload = {"step_id": "prepare-1", "kind": "prepare", "step_dir": str(tmp_path / "step"),
               "launch": "L1", "stop_file": str(stop),
               "functions": JobFunctions(load_records=_never_called), "faults": "",
               "training_set": "scienceqa", "data": {"source": None, "limit": 1, "seed": 0},
               "cache_configs": []}
    assert run_step(payload)["error_type"] == "stopped"
    assert [s["launch"] for s in read_starts(tmp_path / "step" / "starts.jsonl", "L1")] == ["L1"]


def test_ray_restarts_become_attempts_and_history() -> None:
    state = StepState("train-1", "train", "k", "train c", status="queued", attempts=1)
    first = [{"launch": "L", "pid": 10, "host": "h", "started": 100.0}]
    assert note_starts(state, first, 0)
    assert (state.status, state.started_at, state.attempts) == ("running", 100.0, 1)
    again = [*first, {"launch": "L", "pid": 11, "host": "h", "started": 130.0}]
    assert not note_starts(state, first, 1)
    assert note_starts(state, again, 1)
    assert (state.attempts, state.ray_retries) == (2, 1)
    assert state.history == [{"attempt": 1, "retried_by": "ray",
                               "error": "the worker died; Ray restarted the step "
                                        "(now pid 11 on h)"}]


def _checkpoint(root: Path, step: int) -> Path:
    folder = root / "checkpoints" / f"step-{step:08d}"
    folder.mkdir(parents=True)
    torch.save({"step": step, "model": {"w": torch.ones(3)}}, folder / "state.pt")
    (folder / "meta.json").write_text(json.dumps({"step": step, "fingerprint": "f"}))
    return folder


def test_an_emptied_checkpoint_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    from unisd_core.training.checkpoint import latest_checkpoint

    older, newer = _checkpoint(tmp_path, 2), _checkpoint(tmp_path, 4)
    assert damaged_checkpoint(newer) is None
    (newer / "state.pt").write_bytes(b"")
    assert "state.pt" in damaged_checkpoint(newer)
    moved = set_aside_damaged_training(tmp_path)
    assert len(moved) == 1 and str(newer / "state.pt") in moved[0]
    assert latest_checkpoint(tmp_path) == older  # the library now resumes from step 2
    assert torch.load(older / "state.pt")["step"] == 2


def test_a_truncated_checkpoint_with_no_previous_one_restarts(tmp_path: Path) -> None:
    from unisd_core.training.checkpoint import latest_checkpoint

    only = _checkpoint(tmp_path, 3)
    data = (only / "state.pt").read_bytes()
    (only / "state.pt").write_bytes(data[: len(data) // 2])
    assert len(set_aside_damaged_training(tmp_path)) == 1
    assert latest_checkpoint(tmp_path) is None


def test_damaged_outputs_of_finished_steps_are_named(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"scienceqa": {"score": 0.5}}))
    assert damaged_output("evaluate", {"results_path": str(results)}) is None
    results.write_bytes(b"")
    assert damaged_output("evaluate", {"results_path": str(results)}) == \
        f"{results} is empty (0 bytes)"
    records = tmp_path / "records.jsonl"
    records.write_text('{"id": 1}\n{"id"')
    assert "line 2" in damaged_output("prepare", {"records_path": str(records)})
    assert "missing" in damaged_output("train", {"model_dir": str(tmp_path / "nope")})


def test_a_truncated_safetensors_file_is_found(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    save_file({"w": torch.arange(64, dtype=torch.float32)}, str(model / "model.safetensors"))
    assert damaged_model(model) is None
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[:-10])
    assert "truncated" in damaged_model(model)


@pytest.mark.parametrize("line", ['{"launch": "L", "started": 1', ""])
def test_a_cut_starts_line_is_skipped(tmp_path: Path, line: str) -> None:
    path = tmp_path / "starts.jsonl"
    path.write_text('{"launch": "L", "started": 1}\n' + line)
    assert len(read_starts(path, "L")) == 1
