"""The six unisd_* tasks run end to end on the tiny families, through our adapter and through
lm-eval's own command line (offline), on the shipped samples.

Chosen to stay fast: the adapter runs all six benchmarks on every family (limit 2, 8 new tokens;
tiny-qwen2 as a loaded model object, the others from their folders, as the command line loads
them); the command line runs once, on tiny-qwen2 (the family whose saved tokenizer is the
delicate one), with one task per kind of scorer (scienceqa, mbpp, toolalpaca), and checks that
the logged prompt is exactly the training chat prompt.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evaluation.lm_eval_adapter import TASKS_DIR, evaluate
from evaluation.results import PRIMARY_METRIC
from sandbox_support import skip_code_without_sandbox
from unisd_core.data.datasets import load_records, sample_path
from unisd_core.data.records import BENCHMARKS
from unisd_core.models.zoo import TINY_MODELS, load_model_and_tokenizer, resolve_model
from unisd_core.prompts import chat_prompt

pytestmark = pytest.mark.integration
LIMIT = 2
NEW_TOKENS = 8


def check_results(results: dict, benchmarks) -> None:
    assert list(results) == list(benchmarks)
    for benchmark, result in results.items():
        expected_ids = [record.id for record in load_records(benchmark, "test")[:LIMIT]]
        assert [item.item_id for item in result.items] == expected_ids
        assert result.task_version == "1.0"
        primary = PRIMARY_METRIC[benchmark]
        scores = [item.score for item in result.items]
        assert result.score == pytest.approx(sum(scores) / len(scores))
        assert result.metrics[primary] == result.score
        for item in result.items:
            assert item.score in (0.0, 1.0) and item.reason
            assert isinstance(item.prediction, str)
            # The recorded score is what our scorer gives the recorded prediction.
            if benchmark not in {"mbpp", "humaneval"}:
                from evaluation.scorers import score_output

                record = next(r for r in load_records(benchmark, "test") if r.id == item.item_id)
                again = score_output(benchmark, record.answer, record.metadata, item.prediction)
                assert again.metrics[primary] == item.score and again.reason == item.reason


@pytest.mark.parametrize("name", TINY_MODELS)
def test_adapter_runs_all_six_benchmarks(name: str) -> None:
    skip_code_without_sandbox("mbpp")  # scores code: needs the sandbox (README, "Sandbox")
    torch.set_num_threads(1)
    if name == "tiny-qwen2":
        model, tokenizer = load_model_and_tokenizer(name)
        model.train()  # a training job's live model: evaluation must hand it back in train mode
        results = evaluate(
            model, BENCHMARKS, tokenizer=tokenizer, limit=LIMIT, max_new_tokens=NEW_TOKENS,
            batch_size=2,
        )
        assert model.training
    else:
        results = evaluate(
            resolve_model(name), BENCHMARKS, limit=LIMIT, max_new_tokens=NEW_TOKENS, batch_size=2
        )
    check_results(results, BENCHMARKS)


# One command-line run (lm-eval's start-up indexes its thousands of built-in tasks: tens of
# seconds on a loaded 2-core machine), three tasks covering the three kinds of scorer. The other
# families load from their folders through HFLM in the adapter test, which is what the command
# line does with --model hf.
CLI_MODEL, CLI_BENCHMARKS = "tiny-qwen2", ("scienceqa", "mbpp", "toolalpaca")


def test_lm_eval_command_line(tmp_path: Path) -> None:
    skip_code_without_sandbox("mbpp")  # scores code: needs the sandbox (README, "Sandbox")
    folder = resolve_model(CLI_MODEL)
    # ScienceQA reads a local JSONL (other items than the sample's first) named by --metadata.
    local = tmp_path / "scienceqa_subset.jsonl"
    local.write_text("\n".join(sample_path("scienceqa", "test").read_text().splitlines()[5:9]))
    sources = {"scienceqa": str(local)}
    default_first = load_records("scienceqa", "test")[0]
    assert load_records("scienceqa", "test", local)[0].prompt != default_first.prompt
    environment = {
        **os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
    }
    command = [
        str(Path(sys.executable).with_name("lm_eval")),
        "--include_path", str(TASKS_DIR),
        "--tasks", ",".join(f"unisd_{benchmark}" for benchmark in CLI_BENCHMARKS),
        "--model", "hf", "--model_args", f"pretrained={folder}",
        "--apply_chat_template", "--device", "cpu", "--batch_size", "2",
        "--limit", str(LIMIT), "--gen_kwargs", f"max_gen_toks={NEW_TOKENS}",
        "--output_path", str(tmp_path / "out"), "--log_samples",
        "--confirm_run_unsafe_code", "--metadata",
        json.dumps({"sources": sources, "allow_sample": True}),
    ]
    # Run from an unrelated directory: nothing may depend on lm-eval's working directory.
    done = subprocess.run(
        command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    output = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    _, tokenizer = load_model_and_tokenizer(CLI_MODEL)
    for benchmark in CLI_BENCHMARKS:
        task = f"unisd_{benchmark}"
        assert str(output["versions"][task]) == "1.0"
        assert output["results"][task][f"{PRIMARY_METRIC[benchmark]},none"] in (0.0, 0.5, 1.0)
        samples_file = next((tmp_path / "out").rglob(f"samples_{task}_*.jsonl"))
        samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
        records = load_records(benchmark, "test", sources.get(benchmark))[:LIMIT]
        assert not [key for key in output["results"][task] if key.startswith("item")]
        assert [s["doc"]["unisd_item"]["item_id"] for s in samples] == [r.id for r in records]
        for sample, record in zip(samples, records):
            arguments = sample["arguments"]["gen_args_0"]
            assert arguments["arg_0"] == chat_prompt(tokenizer, record.prompt)
            assert arguments["arg_1"]["do_sample"] is False
            assert arguments["arg_1"]["max_gen_toks"] == NEW_TOKENS


def test_lm_eval_refuses_the_shipped_sample_without_a_source(tmp_path: Path) -> None:
    """``--tasks unisd`` (the group) with no ``--metadata``: a clear refusal, not sample scores."""
    command = [
        str(Path(sys.executable).with_name("lm_eval")), "--include_path", str(TASKS_DIR),
        "--tasks", "unisd", "--model", "hf", "--model_args",
        f"pretrained={resolve_model(CLI_MODEL)}", "--device", "cpu", "--limit", "1",
        "--confirm_run_unsafe_code", "--output_path", str(tmp_path / "out"),
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert done.returncode != 0
    assert "sample shipped with unisd, not the benchmark" in done.stderr + done.stdout
    assert not list((tmp_path / "out").rglob("results_*.json"))
