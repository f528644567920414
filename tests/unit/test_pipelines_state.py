"""Study state on disk: damaged files are named, a dead driver is told from a live one, cells get
the same status word in ``study run`` and ``study status``, and writes are durable."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from pipelines.driver_lock import StudyRefusal, driver_alive, driver_lock, start_driver_record
from pipelines.state import (DamagedStateError, StateStore, StepState, cell_status,
                             study_status, write_json_atomic)


def _study(output: Path, states: list[StepState], deps: dict[str, list[str]]) -> None:
    """A two-step study (train -> record of cell ``c``) with the given states on disk."""
    store = StateStore(output)
    store.write_study({"study_name": "s", "tracking_uri": "sqlite:///x",
                       "steps": [{"step_id": s.step_id, "kind": s.kind, "key": s.key,
                                  "label": s.label, "deps": deps.get(s.step_id, []),
                                  "cells": ["c"]} for s in states],
                       "record_step_of": {"c": "record-1"}})
    for state in states:
        store.save(state)


def _train(status: str, **fields) -> StepState:
    return StepState("train-1", "train", "k1", "train c", status=status, **fields)


def _record(status: str = "pending", **fields) -> StepState:
    return StepState("record-1", "record", "k2", "record c", status=status, **fields)


DEPS = {"record-1": ["train-1"]}


def test_an_empty_state_file_is_named_not_a_json_traceback(tmp_path: Path) -> None:
    _study(tmp_path, [_train("done"), _record("done")], DEPS)
    path = StateStore(tmp_path).path("train-1")
    path.write_bytes(b"")
    with pytest.raises(DamagedStateError, match="train-1.json.*0 bytes"):
        StateStore(tmp_path).load("train-1")
    status = study_status(tmp_path)
    row = next(row for row in status.steps if row["step_id"] == "train-1")
    assert row["status"] == "damaged" and str(path) in row["error"]
    assert "unisd study run" in row["error"]
    assert status.summary["damaged"] == 1


def test_a_state_file_of_other_fields_is_damaged_too(tmp_path: Path) -> None:
    _study(tmp_path, [_train("done"), _record("done")], DEPS)
    StateStore(tmp_path).path("record-1").write_text(json.dumps({"surprise": 1}))
    with pytest.raises(DamagedStateError, match="record-1.json"):
        StateStore(tmp_path).load("record-1")


def test_running_steps_without_a_driver_are_shown_interrupted(tmp_path: Path) -> None:
    """A driver killed with SIGKILL leaves ``running``; its lock is free, so nobody runs it."""
    _study(tmp_path, [_train("running", attempts=1, started_at=1.0), _record()], DEPS)
    start_driver_record(tmp_path)  # a driver started, and never wrote how it ended
    with driver_lock(tmp_path, watch_hint="w"):
        assert driver_alive(tmp_path)
        live = study_status(tmp_path)
    assert [row["status"] for row in live.steps] == ["running", "pending"]
    assert live.cells[0]["status"] == "running" and live.driver["alive"]
    assert not driver_alive(tmp_path)
    dead = study_status(tmp_path)
    assert [row["status"] for row in dead.steps] == ["interrupted", "pending"]
    assert dead.cells[0]["status"] == "interrupted"
    assert "no driver is running" in dead.driver["note"]
    assert "killed" in dead.driver["note"] and "unisd study run" in dead.driver["note"]


def test_a_second_driver_is_refused_with_the_status_command(tmp_path: Path) -> None:
    with driver_lock(tmp_path, watch_hint="unisd study status s.yaml"):
        with pytest.raises(StudyRefusal, match="unisd study status s.yaml"):
            with driver_lock(tmp_path, watch_hint="unisd study status s.yaml"):
                pass


@pytest.mark.parametrize("record,train,live,expected", [
    ("done", "done", True, "done"),
    ("skipped", "failed", True, "failed"),  # `study run` always said failed here
    ("skipped", "failed", False, "failed"),
    ("pending", "queued", True, "queued"),
    ("pending", "running", True, "running"),
    ("pending", "running", False, "interrupted"),
    ("pending", "pending", False, "interrupted"),
    ("pending", "pending", True, "pending"),
])
def test_cell_status_words(record, train, live, expected) -> None:
    train_state, record_state = _train(train), _record(record)
    assert cell_status(record_state, [record_state, train_state], live)[0] == expected


def test_run_and_status_use_one_vocabulary(tmp_path: Path) -> None:
    """A skipped record (its training failed) reads ``failed`` in both, with the same reason."""
    reason = "train c failed: FileNotFoundError: /data/x.jsonl"
    _study(tmp_path, [_train("failed", error="FileNotFoundError: /data/x.jsonl"),
                      _record("skipped", error=reason)], DEPS)
    cell = study_status(tmp_path).cells[0]
    assert (cell["status"], cell["reason"]) == ("failed", reason)


@pytest.fixture
def synced(monkeypatch) -> list[str]:
    """Paths of every descriptor ``os.fsync`` is called on (the real fsync still runs)."""
    paths: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return paths


def test_state_writes_fsync_the_file_and_its_folder(tmp_path: Path, synced: list[str]) -> None:
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    assert str(tmp_path) in synced  # the folder: the rename itself survives a power loss
    assert any(path.startswith(str(tmp_path / ".a.json")) for path in synced)


def test_worker_result_files_are_durable(tmp_path: Path, synced: list[str]) -> None:
    from pipelines import job

    job._write_json(tmp_path / "results.json", {"scienceqa": {"score": 0.5}})
    job._write_jsonl(tmp_path / "records.jsonl", [{"id": 1}])
    assert json.loads((tmp_path / "results.json").read_text())["scienceqa"]["score"] == 0.5
    assert sum(path.startswith(str(tmp_path / ".results.json")) for path in synced) == 1
    assert sum(path.startswith(str(tmp_path / ".records.jsonl")) for path in synced) == 1


def test_state_round_trips_new_fields(tmp_path: Path) -> None:
    state = _train("done", attempts=2, ray_retries=1,
                   history=[{"attempt": 1, "retried_by": "ray", "error": "worker died"}])
    StateStore(tmp_path).save(state)
    assert dataclasses.asdict(StateStore(tmp_path).load("train-1")) == dataclasses.asdict(state)


def test_status_cli_shows_a_long_failure_reason_whole(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ablations.cli import app

    study_file = Path(__file__).resolve().parents[2] / "studies" / "smoke.yaml"
    missing = "/data/" + "a-long-folder-name/" * 6 + "train.jsonl"
    reason = f"train c failed: FileNotFoundError: scienceqa train source {missing!r} does not exist"
    _study(tmp_path, [_train("failed", error=reason[15:]), _record("skipped", error=reason)],
           DEPS)
    shown = CliRunner().invoke(app, ["study", "status", str(study_file), "--output-dir",
                                     str(tmp_path), "--steps"])
    assert shown.exit_code == 0, shown.output
    cells_table = shown.output.split("study s")[-1]  # cell | status | reason
    rows = [line.split("│") for line in cells_table.splitlines() if line.count("│") == 4]
    reason_column = "".join(row[3] for row in rows)
    assert "".join(reason.split()) in "".join(reason_column.split())
    assert len(reason) > 80
