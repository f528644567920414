"""Cells, keys, the job graph, state files, progress and fault parsing (no Ray, no MLflow)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from rich.console import Console

from pipelines import cells as cells_module
from pipelines.cells import CellSpec, DataSettings, EvalSettings, Resources, load_cells, save_cells
from pipelines.graph import build_graph, cell_tags
from pipelines.job import classify_failure, parse_faults, to_plain
from pipelines.progress import estimate_remaining_s, render
from pipelines.state import StateStore, StepState, study_status
from unisd_core.config import (
    AgreementConfig,
    ComponentsConfig,
    ContrastiveConfig,
    EmaConfig,
    TrainConfig,
)


def cell(name="c", *, seed=0, components=ComponentsConfig(), gamma=None, limit=2, **train_kw):
    if gamma is not None:
        components = ComponentsConfig(agreement=AgreementConfig(gamma=gamma))
    train = TrainConfig(model="tiny-qwen2", seed=seed, components=components, **train_kw)
    method = "unisd" if components.enabled() else "sdft"
    return CellSpec(name=name, method=method, subset=components.subset_label(), train=train,
                    model="tiny-qwen2", training_set="scienceqa", seed=seed,
                    benchmarks=("scienceqa", "gpqa"), eval=EvalSettings(limit=limit))


def base(name="base", seed=0, limit=2):
    return CellSpec(name=name, method="base", model="tiny-qwen2", training_set="scienceqa",
                    seed=seed, benchmarks=("scienceqa", "gpqa"), eval=EvalSettings(limit=limit))


def test_run_key_ignores_names_and_resources_but_not_results():
    reference = cell("a")
    renamed = reference.model_copy(update={"name": "b", "resources": Resources(num_gpus=1)})
    assert renamed.run_key() == reference.run_key()
    assert cell(seed=1).run_key() != reference.run_key()
    assert cell(learning_rate=3e-5).run_key() != reference.run_key()
    assert cell(limit=3).run_key() != reference.run_key()
    # an eval-only change keeps the trained checkpoint
    assert cell(limit=3).train_key() == reference.train_key()
    assert len(reference.run_key()) == 64


def test_run_key_includes_library_version(monkeypatch):
    before = cell().run_key()
    monkeypatch.setattr(cells_module, "LIBRARY_VERSION", "999.0.0")
    assert cell().run_key() != before


def test_cell_validation_reports_every_inconsistency():
    train = TrainConfig(model="other", seed=3)
    with pytest.raises(ValidationError) as error:
        CellSpec(name="x", method="unisd", subset="ema", train=train, model="tiny-qwen2",
                 training_set="scienceqa", seed=0, benchmarks=("scienceqa",))
    text = str(error.value)
    assert "train.model" in text and "train.seed" in text and "'unisd'" in text
    with pytest.raises(ValidationError, match="method 'base'"):
        CellSpec(name="x", method="base", train=train, model="other", training_set="scienceqa",
                 seed=3, benchmarks=("scienceqa",))
    with pytest.raises(ValidationError, match="extra"):
        CellSpec(name="x", method="base", model="m", training_set="scienceqa",
                 benchmarks=("scienceqa",), color="red")


def test_graph_shares_prepare_and_base_eval_across_cells_and_seeds():
    agreement = ComponentsConfig(agreement=AgreementConfig())
    contrastive = ComponentsConfig(contrastive=ContrastiveConfig())
    cells = [cell(f"s{seed}-{i}", seed=seed, components=components)
             for seed in range(3)
             for i, components in enumerate([ComponentsConfig(), agreement, contrastive,
                                             ComponentsConfig(ema=EmaConfig())])]
    cells += [base(f"base-{seed}", seed=seed) for seed in range(3)]
    graph = build_graph(cells)
    assert graph.count("prepare") == 1 and graph.count("base_eval") == 1
    assert graph.count("train") == 12 and graph.count("evaluate") == 12
    assert graph.count("record") == 15
    prepare = next(s for s in graph.steps.values() if s.kind == "prepare")
    # the prepare step builds caches for each distinct cache setting, once
    assert len(prepare.payload["cache_configs"]) == 2
    # a different gamma changes training, not the shared caches
    assert build_graph([cell("g1", gamma=0.5), cell("g2", gamma=0.1)]).count("prepare") == 1
    other_data = cell("d").model_copy(update={"data": DataSettings(limit=7)})
    assert build_graph([cell("a"), other_data]).count("prepare") == 2


def test_graph_rejects_duplicate_names():
    with pytest.raises(ValueError, match="unique"):
        build_graph([cell("a"), cell("a", seed=1)])


def test_cell_tags_flag_components():
    tags = cell(components=ComponentsConfig(ema=EmaConfig())).model_copy()
    flags = cell_tags(tags)
    assert flags["unisd.component.ema"] == "true"
    assert flags["unisd.component.agreement"] == "false"
    assert flags["unisd.benchmarks"] == "scienceqa,gpqa"


def test_cells_round_trip_through_json(tmp_path):
    cells = [cell("a", components=ComponentsConfig(ema=EmaConfig())), base()]
    save_cells(cells, tmp_path / "cells.json")
    loaded = load_cells(tmp_path / "cells.json")
    assert [c.run_key() for c in loaded] == [c.run_key() for c in cells]


def test_parse_faults_selects_the_cell_and_rejects_typos():
    assert parse_faults("kill@a:2,oom@b:1,nan@a:3", "a") == {"kill": 2, "nan": 3}
    assert parse_faults("", "a") == {}
    with pytest.raises(ValueError, match="kind@cell:step"):
        parse_faults("explode@a:1", "a")


def test_classify_failure():
    import torch

    from unisd_core.training.errors import NonFiniteLossError

    assert classify_failure(torch.OutOfMemoryError("x"))["error_type"] == "oom"
    assert classify_failure(MemoryError())["error_type"] == "oom"
    nonfinite = classify_failure(NonFiniteLossError(4, {"loss": float("nan")}))
    assert nonfinite["error_type"] == "nonfinite" and nonfinite["step"] == 4
    assert classify_failure(ValueError("bad"))["error_type"] == "error"


def test_to_plain_handles_dataclasses_and_tuples():
    from evaluation.results import BenchmarkResult, ItemResult

    result = BenchmarkResult("scienceqa", 0.5, {"acc": 0.5},
                             (ItemResult("i1", "Answer: A", "A", 1.0, "ok"),), "1")
    plain = to_plain(result)
    assert json.loads(json.dumps(plain))["items"][0]["item_id"] == "i1"


def test_state_files_and_status_table(tmp_path):
    graph = build_graph([cell("a"), base()])
    store = StateStore(tmp_path)
    store.write_study({"study_name": "s", "steps": [s.describe() for s in graph.steps.values()],
                       "record_step_of": graph.record_step_of})
    train_id = next(i for i, s in graph.steps.items() if s.kind == "train")
    store.save(StepState(train_id, "train", graph.steps[train_id].key, "train a",
                         status="running", attempts=1, started_at=1.0))
    from pipelines.driver_lock import driver_lock

    with driver_lock(tmp_path, watch_hint="w"):  # a live driver runs the training step
        status = study_status(tmp_path)
    assert status.summary["running"] == 1
    assert status.summary["pending"] == len(graph.steps) - 1
    assert study_status(tmp_path).summary["interrupted"] == 1  # its driver is gone
    assert {row["cell"] for row in status.cells} == {"a", "base"}
    assert not list(store.folder.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_progress_render_and_estimate():
    states = [StepState("t1", "train", "k", "train a", status="done", started_at=0.0,
                        finished_at=10.0),
              StepState("t2", "train", "k", "train b", status="pending"),
              StepState("t3", "train", "k", "train c", status="failed", error="boom")]
    assert estimate_remaining_s(states, now=20.0) == pytest.approx(10.0)
    console = Console(record=True, width=120)
    console.print(render("study", states, started_at=0.0))
    text = console.export_text()
    assert "done 1" in text and "failed 1" in text and "boom" in text


def test_a_second_driver_on_the_same_study_is_refused(tmp_path):
    import fcntl

    from pipelines.runner import run_study

    with (tmp_path / "driver.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match="another driver"):
            run_study([cell("a")], study_name="s", output_dir=tmp_path, progress=False)
