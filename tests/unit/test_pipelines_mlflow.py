"""The MLflow adapter against a real SQLite store: idempotent runs, batched metrics, records."""

from __future__ import annotations

import math

from pipelines.cells import CellSpec, EvalSettings
from pipelines.graph import cell_tags
from pipelines.mlflow_adapter import (
    MlflowMetricsSink,
    StudyTracker,
    default_tracking_uri,
    flatten,
    load_study_records,
    log_study_report,
    prepare_store,
)
from unisd_core.config import ComponentsConfig, EmaConfig, TrainConfig


def test_flatten_nested_config():
    flat = flatten({"train": {"lr": 0.1, "lora": {"target_modules": ["q", "k"]}}, "x": None})
    assert flat == {"train.lr": "0.1", "train.lora.target_modules": '["q", "k"]', "x": "None"}


def test_tracker_is_idempotent_and_records_read_back(tmp_path, monkeypatch):
    uri = default_tracking_uri(tmp_path)
    artifacts = prepare_store(uri, tmp_path)
    assert (tmp_path / "mlflow.db").exists() and artifacts.endswith("/artifacts")
    components = ComponentsConfig(ema=EmaConfig())
    cell = CellSpec(name="ema", method="unisd", subset="ema", model="tiny-qwen2",
                    train=TrainConfig(model="tiny-qwen2", components=components),
                    training_set="scienceqa", benchmarks=("scienceqa", "gpqa"),
                    eval=EvalSettings(limit=2))
    tracker = StudyTracker("study", uri, artifacts)
    run_id = tracker.ensure_cell_run(cell.model_dump(mode="json"), cell_tags(cell))
    again = StudyTracker("study", uri, artifacts)
    assert again.parent_run_id == tracker.parent_run_id
    assert again.ensure_cell_run(cell.model_dump(mode="json"), cell_tags(cell)) == run_id

    sink = MlflowMetricsSink(uri, run_id, batch_size=4)
    for step in (1, 2, 3):
        sink.log(step, {"loss": 1.0 / step, "kl": 0.5 / step})
    sink.close()
    history = tracker.client.get_metric_history(run_id, "train/kl")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.25), (3, 0.5 / 3)]
    # a resumed training replays steps 2-3 from its checkpoint: they are not logged twice
    resumed = MlflowMetricsSink(uri, run_id, batch_size=4)
    for step in (2, 3, 4):
        resumed.log(step, {"loss": 1.0 / step, "kl": 0.5 / step})
    resumed.close()
    history = tracker.client.get_metric_history(run_id, "train/kl")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.25), (3, 0.5 / 3), (4, 0.125)]

    items = [{"item_id": "a", "prediction": "A", "extracted": "A", "score": 1.0, "reason": "",
              "metrics": {"jsd_to_base": 0.1}},
             {"item_id": "b", "prediction": "B", "extracted": "B", "score": 0.0, "reason": ""}]
    tracker.log_evaluation(run_id, {"scienceqa": {"score": 0.5, "metrics": {"pplret": 3.0},
                                                  "items": items, "task_version": "1"}})
    tracker.finish(run_id, "done")

    scores, item_frame = load_study_records("study", uri)
    assert list(scores["benchmark"]) == ["scienceqa", "gpqa"]
    science = scores.set_index("benchmark").loc["scienceqa"]
    assert science["score"] == 0.5 and science["pplret"] == 3.0 and bool(science["ema"])
    assert not bool(science["agreement"]) and science["status"] == "done"
    assert math.isnan(scores.set_index("benchmark").loc["gpqa", "score"])
    assert list(item_frame["item_id"]) == ["a", "b"]
    assert item_frame["jsd_to_base"].iloc[0] == 0.1
    run = tracker.client.get_run(run_id)
    assert run.data.params["train.components.ema.beta"] == "0.9"
    assert run.data.tags["unisd.version.torch"] and run.data.tags["unisd.git_sha"]
    assert len(tracker.run_ids_by_key()[cell.run_key()]) == 1

    plots = tmp_path / "report" / "plots"
    plots.mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (4, 3), (255, 0, 0)).save(plots / "effects.png")
    (tmp_path / "report" / "main.md").write_text("| a |")
    (tmp_path / "report" / "main_table.csv").write_text("model,SDFT\ntiny,38.3\n")
    files = [plots / "effects.png", tmp_path / "report" / "main.md",
             tmp_path / "report" / "main_table.csv"]
    for _ in range(2):  # a re-made report replaces its table (MLflow's log_table would append)
        parent, _ = log_study_report("study", uri, files,
                                     {"contribution/tiny/scienceqa/acc/ema/main": 1.5})
    assert parent == tracker.parent_run_id
    assert tracker.client.get_run(parent).data.metrics == {}  # on the EMA contribution run
    listed = {a.path for a in tracker.client.list_artifacts(parent, "report")}
    assert listed == {"report/main.md", "report/main_table.csv", "report/plots",
                      "report/tables"}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # load_table searches via the global URI
    table = tracker.client.load_table(tracker.experiment_id, "report/tables/main_table.json",
                                      run_ids=[parent])
    assert table.to_dict("records") == [{"model": "tiny", "SDFT": 38.3}]
    images = [a.path for a in tracker.client.list_artifacts(parent, "images")]
    assert len(images) == 4 and all("report~effects+step+" in path for path in images)
    assert {path.split("+")[2] for path in images} == {"0", "1"}  # png + webp per report


def test_a_twin_run_left_by_a_retried_create_is_deleted(tmp_path):
    """MLflow's client retries a create_run whose answer was lost (a server restart): two runs
    of one key. The cell's run keeps the oldest and deletes the twin, which holds nothing."""
    import time

    from pipelines.mlflow_adapter import RUN_KEY_TAG

    uri = default_tracking_uri(tmp_path)
    tracker = StudyTracker("study", uri, prepare_store(uri, tmp_path))
    tags = {RUN_KEY_TAG: "key-1", "unisd.cell": "c", "unisd.method": "m", "unisd.subset": "s"}
    first = tracker._create_cell_run(tags)
    time.sleep(0.05)  # distinct start times (milliseconds), so "oldest" is the first
    assert tracker._create_cell_run(tags) == first
    assert tracker.run_ids_by_key() == {"key-1": [first]}
    assert tracker.client.get_run(first).info.lifecycle_stage == "active"
