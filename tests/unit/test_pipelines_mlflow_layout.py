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
from pipelines.mlflow_adapter import (
    StudyTracker,
    default_tracking_uri,
    describe_study,
    load_study_records,
    log_study_report,
    prepare_store,
)
from pipelines.mlflow_layout import (
    ARM_TAG,
    COMPONENT_TAG,
    COMPONENTS_VIEW_KEY,
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    NOTE_TAG,
    SHARED_VIEW_PREFIX,
    VIEW_KEY,
    arm_label,
    comparison_view_path,
    components_view_path,
    contribution_series,
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


def _contribution_metrics(values: dict[tuple[str, str, str, str, str], float]) -> dict:
    """The report's flat names (ablations.report.build.contribution_metrics' documented form)."""
    return {"/".join(("contribution", *key)): value for key, value in values.items()}


def test_contribution_series_regroups_every_metric_per_component_and_nothing_else():
    planted = {(model, ts, bench, component, kind): 10.0 * i + 0.5
               for i, (model, ts, bench, component, kind) in enumerate(itertools.product(
                   ("tiny-qwen2", "qwen2.5-1.5b"), ("scienceqa",), ("scienceqa", "gpqa"),
                   COMPONENT_NAMES, ("main", "shapley")))}
    metrics = {**_contribution_metrics(planted), "score/mean": 1.0,
               "contribution/tiny/x/y/not_a_component/main": 2.0}
    series = contribution_series(metrics)
    assert set(series) == set(COMPONENT_NAMES)
    expected = {}
    for (model, ts, bench, component, kind), value in planted.items():
        estimate = {"main": "main_effect", "shapley": "shapley"}[kind]
        expected.setdefault(component, {})[f"{estimate}/{model}/{ts}/{bench}"] = value
    assert series == expected


def test_report_keeps_one_contribution_run_per_component_with_the_latest_values(
        tmp_path, smoke_cells):
    """The chart view compares runs: each contribution run carries one component's estimates,
    so a chart (one metric) shows one bar per component; re-made reports add a step, not runs,
    and neither the arms view nor the report's records see these runs."""
    spec, cells = smoke_cells
    uri = default_tracking_uri(tmp_path)
    tracker = StudyTracker(spec.name, uri, prepare_store(uri, tmp_path))
    run_ids = [tracker.ensure_cell_run(c.model_dump(mode="json"), cell_tags(c)) for c in cells]
    tracker.log_evaluation(run_ids[0], {"scienceqa": {"score": 0.25, "items": []}})
    first = {("tiny-qwen2", "scienceqa", "gpqa", "ema", "main"): 1.5,
             ("tiny-qwen2", "scienceqa", "gpqa", "clipping", "main"): -0.5}
    second = {key: value + 2.0 for key, value in first.items()}
    for values in (first, second):
        parent, view = log_study_report(spec.name, uri, [], _contribution_metrics(values))
    assert view == components_view_path(tracker.experiment_id)
    client = tracker.client
    found = client.search_runs([tracker.experiment_id],
                               filter_string="tags.`unisd.run_kind` = 'contribution'")
    assert sorted(run.data.tags[COMPONENT_TAG] for run in found) == ["clipping", "ema"]
    for run in found:
        component = run.data.tags[COMPONENT_TAG]
        key = ("tiny-qwen2", "scienceqa", "gpqa", component, "main")
        assert run.data.metrics == {"main_effect/tiny-qwen2/scienceqa/gpqa": second[key]}
        history = client.get_metric_history(run.info.run_id,
                                             "main_effect/tiny-qwen2/scienceqa/gpqa")
        assert [(m.step, m.value) for m in history] == [(0, first[key]), (1, second[key])]
        assert run.data.tags["unisd.parent_run"] == parent
        assert "mlflow.parentRunId" not in run.data.tags  # listed and charted as itself
        assert run.info.run_name.endswith(" · contribution")
    assert not any(name.startswith("contribution") for name in
                   client.get_run(parent).data.metrics)  # one bar per chart there
    experiment = client.get_experiment(tracker.experiment_id)
    stored = json.loads(experiment.tags[SHARED_VIEW_PREFIX + COMPONENTS_VIEW_KEY])
    assert stored["searchFilter"] == "tags.`unisd.run_kind` = 'contribution'"
    arms = client.search_runs([tracker.experiment_id],
                              filter_string="tags.`unisd.study_parent` = 'false'")
    assert sorted(run.info.run_id for run in arms) == sorted(run_ids)
    recipe = client.search_runs([tracker.experiment_id],
                                filter_string="tags.`unisd.study_parent` != 'true'")
    assert sorted(run.info.run_id for run in recipe) == sorted(run_ids)
    scores, _ = load_study_records(spec.name, uri)
    assert len(scores) > 0 and set(scores["run_id"]) <= set(run_ids)
