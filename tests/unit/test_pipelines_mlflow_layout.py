"""How a study looks in MLflow (issue 16.1), against a real SQLite store and the real grid."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import mlflow
import pytest

from ablations.grid import cell_label, expand_grid
from ablations.study import load_study
from pipelines.graph import cell_tags
from pipelines.mlflow_adapter import StudyTracker, default_tracking_uri, describe_study, prepare_store
from pipelines.mlflow_layout import (
    ARM_TAG,
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    NOTE_TAG,
    SHARED_VIEW_PREFIX,
    VIEW_KEY,
    arm_label,
    comparison_view_path,
)
from unisd_core.config import COMPONENT_NAMES

ROOT = Path(__file__).resolve().parents[2]


def test_arm_label_names_every_method_and_subset_distinctly_and_reads_the_grids_cell_names():
    subsets = ["+".join(c) for r in range(1, 6) for c in itertools.combinations(COMPONENT_NAMES, r)]
    cases = [(m, "none", f"tiny__scienceqa__{m}__seed0")
             for m in ("base", "sft", "sdft", "gkd", "ssd", "opsd")]
    cases += [("unisd", s, f"tiny__scienceqa__{s}__seed{k}") for k, s in enumerate(subsets)]
    cases += [("unisd", "+".join(COMPONENT_NAMES), "tiny__scienceqa__unisd_star__seed1")]
    labels = set()
    for method, subset, cell in cases:
        label = arm_label(method, subset, cell)  # also the report's row label (one definition)
        assert (label == "UniSD*") == (cell_label(cell) == "unisd_star"), cell
        labels.add(label)
    assert len(labels) == 6 + 31 + 1  # distinct per configuration, and seed-independent
    assert arm_label("unisd", "ema", "a__b__ema__seed0") == arm_label("unisd", "ema",
                                                                      "a__b__ema__seed7")


@pytest.fixture
def smoke_cells():
    spec = load_study(ROOT / "studies" / "smoke.yaml")
    spec = spec.model_copy(update={"seeds": [0, 1]})
    return spec, expand_grid(spec)


def test_study_experiment_runs_names_arms_and_the_search_recipe(tmp_path, smoke_cells,
                                                                 monkeypatch):
    spec, cells = smoke_cells
    uri = default_tracking_uri(tmp_path)
    tracker = StudyTracker(spec.name, uri, prepare_store(uri, tmp_path))
    run_ids = {cell.name: tracker.ensure_cell_run(cell.model_dump(mode="json"), cell_tags(cell))
               for cell in cells}
    path = describe_study(spec.name, uri, description=spec.description,
                          study_file=ROOT / "studies" / "smoke.yaml",
                          cells=[{**c.model_dump(mode="json"), "run_key": c.run_key()}
                                 for c in cells])
    client = tracker.client
    experiment = client.get_experiment(tracker.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    assert experiment.tags[NOTE_TAG] == spec.description
    assert path == comparison_view_path(tracker.experiment_id)
    view = json.loads(experiment.tags[SHARED_VIEW_PREFIX + VIEW_KEY])
    assert "metrics.`score/scienceqa`" in view["selectedColumns"]
    assert "metrics.`score/mean`" in view["selectedColumns"]
    assert view["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": ARM_TAG}]

    runs = {name: client.get_run(run_id) for name, run_id in run_ids.items()}
    names = [run.info.run_name for run in runs.values()]
    assert len(set(names)) == len(cells) == 5  # base once, 2 trained arms x 2 seeds
    arms = {run.data.tags[ARM_TAG] for run in runs.values()}
    assert arms == {"Base", "SDFT", "SD+EMA"}
    for cell in cells:
        run = runs[cell.name]
        assert run.info.run_name.startswith(run.data.tags[ARM_TAG] + " · ")
        assert f"seed {cell.seed}" in run.info.run_name
        assert run.data.tags["mlflow.parentRunId"] == tracker.parent_run_id
        assert run.data.tags["mlflow.source.git.commit"] == run.data.tags["unisd.git_sha"]

    # the documented recipe: every child (not the parent), one row per cell, arm as a column
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    frame = mlflow.search_runs(experiment_names=[spec.name],
                               filter_string="tags.`unisd.study_parent` != 'true'")
    assert sorted(frame["run_id"]) == sorted(run_ids.values())
    assert frame.groupby("tags.unisd.arm").size().to_dict() == {"Base": 1, "SDFT": 2,
                                                                 "SD+EMA": 2}
    inputs = runs[cells[-1].name].inputs.dataset_inputs  # a trained cell: training + 2 evals
    contexts = {(i.dataset.name, i.tags[0].value) for i in inputs}
    assert contexts == {("scienceqa", "training"), ("scienceqa", "evaluation"),
                        ("gpqa", "evaluation")}
    assert tracker.benchmarks == ["scienceqa", "gpqa"]
    assert StudyTracker(spec.name, uri).benchmarks == ["scienceqa", "gpqa"]  # read back
    parent = client.get_run(tracker.parent_run_id)
    assert parent.data.tags[NOTE_TAG] == spec.description
    assert {a.path for a in client.list_artifacts(tracker.parent_run_id, "study")} == {
        "study/smoke.yaml", "study/grid.json"}


def test_mean_score_is_logged_next_to_the_scores(tmp_path, smoke_cells):
    spec, cells = smoke_cells
    uri = default_tracking_uri(tmp_path)
    tracker = StudyTracker(spec.name, uri, prepare_store(uri, tmp_path))
    cell = cells[0]
    run_id = tracker.ensure_cell_run(cell.model_dump(mode="json"), cell_tags(cell))
    results = {"scienceqa": {"score": 0.25, "items": []}, "gpqa": {"score": 0.5, "items": []}}
    tracker.log_evaluation(run_id, results)
    metrics = tracker.client.get_run(run_id).data.metrics
    assert metrics["score/mean"] == pytest.approx(0.375, rel=1e-12)
    assert (metrics["score/scienceqa"], metrics["score/gpqa"]) == (0.25, 0.5)
