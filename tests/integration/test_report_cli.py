"""``unisd report`` end to end on a real MLflow store: records logged through pipelines' tracker,
read back by ``load_study_records``, tables written and attached to the study's parent run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from ablations.cli import app
from ablations.grid import expand_grid
from ablations.report.plots import slug
from ablations.study import validate_study
from pipelines.graph import cell_tags
from pipelines.mlflow_adapter import StudyTracker, prepare_store

pytestmark = pytest.mark.integration


def _study(tmp_path: Path) -> dict:
    return {"name": "report-it", "output_dir": str(tmp_path / "run"),
            "models": ["tiny-qwen2"], "training_sets": ["scienceqa"],
            "components": [[], ["ema"], ["agreement"], ["agreement", "ema"]],
            "presets": ["base", "sft"], "seeds": [0],
            "evaluation": {"limit": 8, "max_new_tokens": 16}}


def _log_records(spec, uri: str, output_dir: Path) -> None:
    tracker = StudyTracker(spec.name, uri, artifact_root=prepare_store(uri, output_dir))
    rng = np.random.default_rng(0)
    for cell in expand_grid(spec):
        run_id = tracker.ensure_cell_run(cell.model_dump(mode="json"), cell_tags(cell))
        level = 0.3 + 0.1 * ("ema" in cell.subset) + 0.05 * ("agreement" in cell.subset)
        results = {}
        for benchmark in cell.benchmarks:
            scores = (rng.random(8) < level).astype(float)
            jsd = rng.random(8) * 0.1
            results[benchmark] = {
                "score": float(scores.mean()), "task_version": "1",
                "metrics": {"jsd_to_base": float(jsd.mean()), "pplret": 3.0},
                "items": [{"item_id": f"{benchmark}-{i}", "score": float(s),
                           "jsd_to_base": float(j), "base_logprob": float(-j)}
                          for i, (s, j) in enumerate(zip(scores, jsd))]}
        tracker.log_evaluation(run_id, results)
        tracker.finish(run_id, "done")


def test_report_reads_mlflow_and_attaches_files(tmp_path: Path) -> None:
    raw = _study(tmp_path)
    spec = validate_study(raw)
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(raw))
    uri = spec.resolved_tracking_uri()
    _log_records(spec, uri, spec.resolved_output_dir())
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", str(study_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "| tiny-qwen2 | SFT |" in result.output and "SD+AGR+EMA" in result.output
    assert "exact Shapley refused" in result.output  # 4 of 32 subsets: no Shapley
    assert "Gains over the base model" in result.output
    for stem in ("main_table", "gains", "components", "synergy", "retention"):
        for suffix in (".md", ".tex", ".csv"):
            assert (out / f"{stem}{suffix}").stat().st_size > 0
    client = MlflowClient(tracking_uri=uri)
    parent = StudyTracker(spec.name, uri).parent_run_id
    attached = {entry.path for entry in client.list_artifacts(parent, "report")}
    assert {"report/main_table.md", "report/gains.md"} <= attached
    # each estimated contribution on its component's run, equal to the written table's value
    table = pd.read_csv(out / "components.csv")
    runs = {run.data.tags["unisd.component"]: run for run in client.search_runs(
        [client.get_experiment_by_name(spec.name).experiment_id],
        filter_string="tags.`unisd.run_kind` = 'contribution'")}
    estimated = table.dropna(subset=["main_estimate"])
    assert len(estimated) > 0 and set(estimated["component"]) == set(runs)
    for row in estimated.itertuples(index=False):
        name = f"main_effect/{slug(row.model)}/{row.training_set}/{row.benchmark}"
        assert runs[row.component].data.metrics[name] == pytest.approx(
            100 * row.main_estimate, abs=1e-4)  # the CSV's 6 decimals, in points
