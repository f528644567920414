"""Retention metrics (method.md 6) through the real pipeline: Ray, training, lm-eval, MLflow.

A 2-cell study on tiny-qwen2 (the empty subset trained for 2 steps, and the base model): the
trained cell's MLflow run must carry finite pplret / jsd_to_base / gold_logprob per benchmark,
the items frame the per-item columns, and the report a non-empty retention table.
"""

from __future__ import annotations

import math

import pytest
import torch

from ablations.report import build_report
from pipelines.cells import CellSpec, DataSettings, EvalSettings, Resources
from pipelines.mlflow_adapter import StudyTracker, load_study_records
from pipelines.runner import run_study
from unisd_core.config import LoraSettings, TrainConfig

pytestmark = pytest.mark.integration
torch.set_num_threads(1)
EVAL = EvalSettings(limit=4, max_new_tokens=8, batch_size=4)
BENCHMARKS = ("scienceqa",)


def cells():
    # A high learning rate so that two LoRA steps move the model measurably away from the base.
    train = TrainConfig(model="tiny-qwen2", seed=0, max_steps=2, per_device_batch=2, grad_accum=1,
                        max_new_tokens=8, learning_rate=5e-2, warmup_ratio=0.0,
                        lora=LoraSettings(rank=4, alpha=8, dropout=0.0))
    common = dict(model="tiny-qwen2", training_set="scienceqa", seed=0, benchmarks=BENCHMARKS,
                  eval=EVAL, data=DataSettings(limit=4))
    return [CellSpec(name="sdft", method="sdft", subset="none", train=train,
                     resources=Resources(num_cpus=1), **common),
            CellSpec(name="base", method="base", **common)]


def test_retention_metrics_reach_mlflow_records_and_report(tmp_path):
    outcome = run_study(cells(), study_name="retention", output_dir=tmp_path / "study",
                        progress=False)
    assert outcome.ok, {name: cell.reason for name, cell in outcome.cells.items()}

    run = StudyTracker("retention", outcome.tracking_uri).client.get_run(
        outcome.cells["sdft"].run_id)
    for name in ("pplret", "jsd_to_base", "gold_logprob", "gold_perplexity"):
        assert math.isfinite(run.data.metrics[f"scienceqa/{name}"]), name
    assert 0.0 < run.data.metrics["scienceqa/jsd_to_base"] <= math.log(2)
    assert run.data.metrics["scienceqa/pplret"] >= 1.0 and run.data.metrics[
        "scienceqa/gold_logprob"] < 0.0

    scores, items = load_study_records("retention", outcome.tracking_uri)
    trained = scores[scores["cell"] == "sdft"].iloc[0]
    assert trained["pplret"] == pytest.approx(run.data.metrics["scienceqa/pplret"])
    base = scores[scores["cell"] == "base"].iloc[0]
    assert base["jsd_to_base"] == 0.0 and math.isfinite(base["gold_logprob"])
    trained_items = items[items["run_key"] == trained["run_key"]]
    assert len(trained_items) == EVAL.limit
    jsd = trained_items["jsd_to_base"].dropna()
    assert len(jsd) > 0 and jsd.between(0.0, math.log(2)).all()
    assert trained_items["base_logprob"].dropna().lt(0.0).all()
    # the run's mean equals the mean of its items (NaN items, i.e. empty outputs, skipped)
    assert jsd.mean() == pytest.approx(trained["jsd_to_base"], rel=1e-5)

    report = build_report(scores, items, tmp_path / "report", with_plots=False)
    table = (tmp_path / "report" / "retention.csv").read_text()
    assert any(path.name == "retention.csv" for path in report.files)
    rows = [line for line in table.splitlines()[1:] if line.strip()]
    assert len(rows) == 1 and "tiny-qwen2" in rows[0]
