"""The task plumbing without a model: the gold answers of every benchmark score 1.0 through the
scorers and through the lm-eval hooks; sources resolve; result records and the cross-evaluation
map; adapter argument errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from sandbox_support import skip_code_without_sandbox

from evaluation.lm_eval_adapter import TASKS_DIR, build_lm, evaluate
from evaluation.results import (
    CROSS_EVAL,
    PRIMARY_METRIC,
    BenchmarkResult,
    ItemResult,
    benchmarks_for,
)
from evaluation.scorers import score_output
from unisd_core.data.datasets import load_records, sample_path
from unisd_core.data.records import BENCHMARKS


def task_utils():
    """The tasks' utils.py loaded by path, the way lm-eval's ``!function`` loads it."""
    spec = importlib.util.spec_from_file_location("unisd_task_utils", TASKS_DIR / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_gold_answers_score_one(benchmark: str) -> None:
    skip_code_without_sandbox(benchmark)
    records = load_records(benchmark, "test")
    assert records, f"no shipped sample for {benchmark}"
    for index, record in enumerate(records):
        # The demonstration is what a perfect model writes; the answer is the bare gold (for
        # code, a few suffice: each is one more sandbox process).
        outputs = [record.demonstration]
        if index < 3 or benchmark not in {"mbpp", "humaneval"}:
            outputs.append(record.answer)
        for output in outputs:
            outcome = score_output(benchmark, record.answer, record.metadata, output)
            assert outcome.metrics[PRIMARY_METRIC[benchmark]] == 1.0, (record.id, outcome)
            assert all(value == 1.0 for value in outcome.metrics.values())
    # And a wrong output scores 0 (the scorer can fail).
    wrong = score_output(benchmark, records[0].answer, records[0].metadata, "I do not know.")
    assert wrong.metrics[PRIMARY_METRIC[benchmark]] == 0.0 and wrong.reason


@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_task_hooks_load_docs_and_score_gold(benchmark: str) -> None:
    skip_code_without_sandbox(benchmark)
    utils = task_utils()
    dataset = utils.load_unisd_dataset(benchmark=benchmark, pretrained="ignored", version=1.0,
                                       allow_sample=True)
    docs = dataset["test"]
    records = load_records(benchmark, "test")
    assert [doc["id"] for doc in docs] == [record.id for record in records]
    doc = docs[0]
    assert utils.doc_to_text(doc) == records[0].prompt
    result = utils.process_results(doc, [records[0].demonstration])
    assert result[PRIMARY_METRIC[benchmark]] == 1.0
    assert set(result) == set(score_output(benchmark, records[0].answer, records[0].metadata,
                                           records[0].demonstration).metrics)  # metrics only
    assert doc["unisd_item"]["item_id"] == records[0].id and doc["unisd_item"]["reason"]


@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_no_source_refuses_the_sample_unless_allowed_and_then_warns(benchmark, caplog):
    utils = task_utils()
    count = len(load_records(benchmark, "test"))
    with pytest.raises(ValueError, match=f"{count}-item sample.*allow_sample"):
        utils.load_unisd_dataset(benchmark=benchmark)
    with caplog.at_level("WARNING", logger="unisd.tasks"):
        utils.load_unisd_dataset(benchmark=benchmark, allow_sample="true")
    assert f"{count}-item SHIPPED SAMPLE" in caplog.text


def test_generated_synthetic_benchmark_needs_no_source():
    docs = task_utils().load_unisd_dataset(benchmark="synthetic")["test"]
    assert len(docs) == len(load_records("synthetic", "test"))


def test_unisd_group_lists_the_six_tasks():
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    assert "unisd" in manager.all_groups
    assert set(manager.task_index["unisd"].cfg["task"]) == {f"unisd_{b}" for b in BENCHMARKS}


def test_task_yamls_declare_every_benchmark() -> None:
    from evaluation.lm_eval_adapter import available_benchmarks

    assert set(BENCHMARKS) <= set(available_benchmarks())
    assert set(available_benchmarks()) <= set(PRIMARY_METRIC)  # every task has a score
    for benchmark in BENCHMARKS:
        text = (Path(TASKS_DIR) / f"unisd_{benchmark}.yaml").read_text()
        assert f"benchmark: {benchmark}" in text and "version:" in text
        assert f"metric: {PRIMARY_METRIC[benchmark]}" in text
        assert ("unsafe_code: true" in text) == (benchmark in {"mbpp", "humaneval"})


def test_sources_resolve_to_local_file_hub_or_sample(tmp_path: Path) -> None:
    utils = task_utils()
    assert utils.resolve_source("gpqa", {}) is None
    assert utils.resolve_source("gpqa", {"sources": {"gpqa": "hub"}}) == "Idavidrein/gpqa"
    assert utils.resolve_source("cose", {"sources": json.dumps({"cose": "/x.jsonl"})}) == "/x.jsonl"
    assert utils.resolve_source("cose", {"source": "/y.jsonl"}) == "/y.jsonl"
    # A local JSONL in the hub schema is read instead of the sample.
    lines = sample_path("cose", "test").read_text().splitlines()[:3]
    local = tmp_path / "cose_subset.jsonl"
    local.write_text("\n".join(lines) + "\n")
    docs = utils.load_unisd_dataset(benchmark="cose", sources={"cose": str(local)})["test"]
    assert len(docs) == 3


def test_cross_eval_map_and_result_round_trip() -> None:
    assert benchmarks_for("scienceqa") == ("scienceqa", "gpqa")
    assert benchmarks_for("mbpp") == ("mbpp", "humaneval")
    assert set(CROSS_EVAL) == {"scienceqa", "mbpp", "cose", "toolalpaca"}
    with pytest.raises(ValueError, match="allowed"):
        benchmarks_for("gpqa")
    result = BenchmarkResult(
        "cose", 0.5, {"acc": 0.5},
        (ItemResult("a", "Answer: B", "B", 1.0, "correct"), ItemResult("b", "", None, 0.0, "no")),
        "1.0",
    )
    assert BenchmarkResult.from_json(json.loads(json.dumps(result.to_json()))) == result
    assert result.item_scores() == {"a": 1.0, "b": 0.0}


def test_adapter_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown benchmarks"):
        evaluate(str(tmp_path), ["sciqa"])
    with pytest.raises(ValueError, match="unknown backend"):
        build_lm(str(tmp_path), backend="tpu")
    with pytest.raises(FileNotFoundError):
        build_lm(str(tmp_path / "missing"))
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ImportError, match="GPU extra"):
            build_lm(str(tmp_path), backend="vllm")
