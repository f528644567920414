"""The evaluate step's retention part (pipelines.retention_step) on a real tiny model.

Measured on tiny-qwen2 built on first use; predictions include an empty one (zero tokens), which
must not crash and must stay out of the item means.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch

from tolerances import assert_close_scaled
from evaluation.retention import completion_logprobs, pplret
from pipelines.job import JobFunctions, skip_retention
from pipelines.retention_step import measure_retention, merge_retention
from unisd_core.data.datasets import load_records
from unisd_core.models.zoo import load_model_and_tokenizer, resolve_model

torch.set_num_threads(1)
LOGGER = logging.getLogger("test")


def plain_results(records, predictions):
    items = [{"item_id": r.id, "prediction": p, "extracted": None, "score": 0.0, "reason": "x",
              "metrics": {"acc": 0.0}} for r, p in zip(records, predictions)]
    return {"scienceqa": {"benchmark": "scienceqa", "score": 0.0, "metrics": {"acc": 0.0},
                          "items": items, "task_version": "1.0"}}


@pytest.fixture(scope="module")
def setting():
    records = load_records("scienceqa", "test", None, seed=0)[:3]
    predictions = ["Reasoning: it is.\nAnswer: A", "", "Answer: B"]
    return records, predictions, resolve_model("tiny-qwen2")


def payload(model_dir):
    return {"model": "tiny-qwen2", "model_dir": model_dir, "eval": {"batch_size": 2},
            "sources": {}}


def test_trained_step_against_identical_weights(setting):
    records, predictions, folder = setting
    results = plain_results(records, predictions)
    merge_retention(results, measure_retention(payload(folder), results, LOGGER))
    result = results["scienceqa"]
    items = [item["metrics"] for item in result["items"]]
    # the empty prediction: no retention entry, but its gold fit is measured
    assert "base_logprob" not in items[1] and "jsd_to_base" not in items[1]
    assert all(math.isfinite(item["gold_logprob"]) for item in items)
    # same weights for "base" and "fine-tuned": JSD is zero up to rounding
    assert all(abs(items[i]["jsd_to_base"]) < 1e-5 for i in (0, 2))
    # the step measures in bfloat16 on a GPU, float32 on CPU: compare like with like
    cuda = torch.cuda.is_available()
    model, tokenizer = load_model_and_tokenizer(folder, dtype="bfloat16" if cuda else "float32",
                                                device="cuda" if cuda else "cpu")
    expected = completion_logprobs(model, tokenizer, [records[0].prompt, records[2].prompt],
                                   [predictions[0], predictions[2]])
    for got, want in zip((items[0], items[2]), expected):  # terms: 2048-way head + decoder matmuls
        assert_close_scaled(got["base_logprob"], float(want.mean()), terms=2048 + 3 * 64,
                            dtype=torch.bfloat16 if cuda else torch.float32, msg="base log-prob")
    assert result["metrics"]["pplret"] == pytest.approx(
        pplret([items[0]["base_logprob"], items[2]["base_logprob"]]), rel=1e-6)
    assert result["metrics"]["gold_perplexity"] == pytest.approx(
        math.exp(-result["metrics"]["gold_logprob"]), rel=1e-6)
    assert result["metrics"]["acc"] == 0.0  # lm-eval's metrics are kept


def test_base_step_has_zero_jsd_and_gold_fit(setting):
    records, predictions, _ = setting
    results = plain_results(records, predictions)
    merge_retention(results, measure_retention(payload(None), results, LOGGER))
    metrics = results["scienceqa"]["metrics"]
    assert metrics["jsd_to_base"] == 0.0 and math.isfinite(metrics["gold_logprob"])
    assert metrics["pplret"] > 1.0  # exp(-mean log-prob) of a random-init model's outputs


def test_retention_follows_the_real_evaluation_only():
    def stand_in_evaluate(*args, **kwargs):
        return {}

    assert JobFunctions().resolved().retention is measure_retention
    assert JobFunctions(evaluate=stand_in_evaluate).resolved().retention is skip_retention


def stand_in_evaluate(model, benchmarks, **kwargs):
    from evaluation.results import BenchmarkResult, ItemResult

    item = ItemResult("scienceqa-x", "Answer: A", "A", 1.0, "ok", {"acc": 1.0})
    return {"scienceqa": BenchmarkResult("scienceqa", 1.0, {"acc": 1.0}, (item,), "1.0")}


@pytest.mark.parametrize("enabled", [True, False])
def test_evaluate_step_merges_retention_unless_switched_off(tmp_path, enabled):
    import json

    from pipelines.job import evaluate_step

    calls = []

    def stand_in_retention(payload, results, logger):
        from evaluation.retention import RetentionReport

        calls.append(sorted(results))
        return {"scienceqa": RetentionReport(
            {"scienceqa-x": {"base_logprob": -2.0, "jsd_to_base": 0.25, "gold_logprob": math.nan}},
            {"pplret": math.exp(2.0), "base_logprob": -2.0, "jsd_to_base": 0.25,
             "gold_logprob": math.nan, "gold_perplexity": math.nan})}

    functions = JobFunctions(evaluate=stand_in_evaluate, retention=stand_in_retention).resolved()
    step = {"model_dir": "unused", "model": "tiny-qwen2", "benchmarks": ["scienceqa"],
            "eval": {"limit": 1, "max_new_tokens": 8, "batch_size": 1, "retention": enabled},
            "step_dir": str(tmp_path)}
    done = evaluate_step(step, functions, LOGGER)
    saved = json.loads((tmp_path / "results.json").read_text())["scienceqa"]
    assert calls == ([["scienceqa"]] if enabled else [])
    assert done["scores"] == {"scienceqa": 1.0}
    if enabled:  # finite values merged, NaN ones left out
        assert saved["metrics"] == {"acc": 1.0, "pplret": math.exp(2.0), "base_logprob": -2.0,
                                    "jsd_to_base": 0.25}
        assert saved["items"][0]["metrics"] == {"acc": 1.0, "base_logprob": -2.0,
                                                "jsd_to_base": 0.25}
    else:
        assert saved["metrics"] == {"acc": 1.0} and saved["items"][0]["metrics"] == {"acc": 1.0}
