"""The shipped samples, the dataset adapters and ``load_records`` (issue 2, item 4).

Every sample file is read through the real loader; hub-schema field names and types are checked
per file; every code reference is executed against its tests in a separate Python process (and a
stub that returns None must fail them, so the tests are not vacuous).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from unisd_core.data.adapters import ADAPTERS, cose, gpqa, scienceqa
from unisd_core.data.datasets import (
    HUB_SPLITS,
    DatasetFormatError,
    load_records,
    sample_path,
)
from unisd_core.data.records import BENCHMARKS, Record
from unisd_core.data.samples.generate import all_files, render
from unisd_core.prompts import MC_INSTRUCTION

MINIMUM_COUNTS: dict[tuple[str, str], int] = {
    ("scienceqa", "train"): 32, ("scienceqa", "test"): 16,
    ("cose", "train"): 32, ("cose", "test"): 16,
    ("mbpp", "train"): 32, ("mbpp", "test"): 16,
    ("toolalpaca", "train"): 32, ("toolalpaca", "test"): 16,
    ("gpqa", "test"): 16, ("humaneval", "test"): 16,
}
# Field name -> type (a tuple allows several), as on the hub.
SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("scienceqa", "train"): {
        "question": str, "choices": list, "answer": int, "hint": str, "image": type(None),
        "task": str, "grade": str, "subject": str, "topic": str, "category": str, "skill": str,
        "lecture": str, "solution": str,
    },
    ("cose", "train"): {
        "id": str, "question": str, "choices": list, "answer": str,
        "abstractive_explanation": str, "extractive_explanation": str,
    },
    ("mbpp", "train"): {
        "task_id": int, "text": str, "code": str, "test_list": list, "test_setup_code": str,
        "challenge_test_list": list,
    },
    ("mbpp", "test"): {
        "source_file": str, "task_id": int, "prompt": str, "code": str, "test_imports": list,
        "test_list": list,
    },
    ("humaneval", "test"): {
        "task_id": str, "prompt": str, "canonical_solution": str, "test": str, "entry_point": str,
    },
    ("gpqa", "test"): {
        "Question": str, "Correct Answer": str, "Incorrect Answer 1": str,
        "Incorrect Answer 2": str, "Incorrect Answer 3": str, "Explanation": str,
        "Record ID": str, "High-level domain": str, "Subdomain": str,
    },
    ("toolalpaca", "train"): {
        "id": str, "tool_name": str, "tool_description": str, "instruction": str,
        "golden_steps": list, "final_answer": str,
    },
}
SCHEMAS[("scienceqa", "test")] = SCHEMAS[("scienceqa", "train")]
SCHEMAS[("cose", "test")] = SCHEMAS[("cose", "train")]
SCHEMAS[("toolalpaca", "test")] = SCHEMAS[("toolalpaca", "train")]
SAMPLE_SPLITS = sorted(MINIMUM_COUNTS)
MC_BENCHMARKS = ("scienceqa", "cose", "gpqa")


def raw_rows(benchmark: str, split: str) -> list[dict[str, Any]]:
    lines = sample_path(benchmark, split).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def gold_option_text(benchmark: str, row: dict[str, Any]) -> str:
    if benchmark == "scienceqa":
        return row["choices"][row["answer"]]
    if benchmark == "cose":
        return row["answer"]
    return row["Correct Answer"].strip()


@pytest.mark.parametrize(("benchmark", "split"), SAMPLE_SPLITS)
def test_sample_loads_into_records(benchmark: str, split: str) -> None:
    records = load_records(benchmark, split)
    assert len(records) >= MINIMUM_COUNTS[(benchmark, split)]
    assert len({record.id for record in records}) == len(records)
    for record in records:
        assert isinstance(record, Record) and record.benchmark == benchmark
        assert record.id.startswith(f"{benchmark}-{split}-")
        assert record.prompt.strip() and record.demonstration.strip() and record.answer.strip()
        assert Record.from_json(json.loads(json.dumps(record.to_json()))) == record


@pytest.mark.parametrize(("benchmark", "split"), SAMPLE_SPLITS)
def test_sample_follows_hub_schema(benchmark: str, split: str) -> None:
    schema = SCHEMAS[(benchmark, split)]
    for number, row in enumerate(raw_rows(benchmark, split), start=1):
        assert set(row) == set(schema), f"{benchmark}_{split} line {number}: {sorted(row)}"
        for name, kind in schema.items():
            value = row[name]
            assert isinstance(value, kind) and not isinstance(value, bool), (
                f"{benchmark}_{split} line {number}: {name} is {type(value).__name__}"
            )
        if benchmark == "scienceqa":
            assert 2 <= len(row["choices"]) <= 5 and 0 <= row["answer"] < len(row["choices"])
        if benchmark == "cose":
            assert len(row["choices"]) == 5 and row["answer"] in row["choices"]
            assert re.fullmatch(r"[0-9a-f]{32}", row["id"])
        if benchmark == "gpqa":
            options = [row["Correct Answer"]] + [row[f"Incorrect Answer {i}"] for i in (1, 2, 3)]
            assert len(set(options)) == 4 and re.fullmatch(r"rec[A-Za-z0-9]{14}", row["Record ID"])
        if benchmark == "mbpp":
            assert all(isinstance(test, str) and test.startswith("assert ") for test in row["test_list"])
        if benchmark == "humaneval":
            assert "def check(candidate)" in row["test"]
            assert f"def {row['entry_point']}(" in row["prompt"]


def test_sample_files_match_their_generator() -> None:
    for name, rows in all_files().items():
        path = sample_path(*name.removesuffix(".jsonl").split("_"))
        assert path.read_text(encoding="utf-8") == render(rows), f"{name} is stale: regenerate"


@pytest.mark.parametrize("benchmark", MC_BENCHMARKS)
def test_option_shuffle_is_seeded_and_gold_letter_follows(benchmark: str) -> None:
    split = "test"
    rows = raw_rows(benchmark, split)
    first = load_records(benchmark, split, seed=0)
    again = load_records(benchmark, split, seed=0)
    other = load_records(benchmark, split, seed=1)
    assert [r.metadata["choices"] for r in first] == [r.metadata["choices"] for r in again]
    assert [r.metadata["choices"] for r in first] != [r.metadata["choices"] for r in other]
    letters_seen = set()
    for records in (first, other):
        for row, record in zip(rows, records, strict=True):
            shown = record.metadata["choices"]
            letter = record.metadata["answer_letter"]
            letters_seen.add(letter)
            assert record.answer == letter and letter in record.metadata["valid_letters"]
            assert shown[ord(letter) - ord("A")] == gold_option_text(benchmark, row)
            assert record.demonstration.endswith(f"Answer: {letter}")
            assert record.prompt.endswith(MC_INSTRUCTION)
            for index, option in enumerate(shown):
                assert f"{chr(ord('A') + index)}. {option}" in record.prompt
    assert len(letters_seen) > 1, "the gold answer must not always sit at the same letter"


def test_shuffle_does_not_depend_on_load_order_or_limit() -> None:
    full = load_records("cose", "test", seed=3)
    limited = load_records("cose", "test", seed=3, limit=4)
    assert limited == full[:4]
    row = raw_rows("cose", "test")[5]
    alone = cose.to_record(row, 0, 3, split="test")
    assert alone == full[5]


def test_scienceqa_prompt_carries_hint_and_lecture() -> None:
    row = next(r for r in raw_rows("scienceqa", "train") if r["hint"] and r["lecture"])
    record = scienceqa.to_record(row, 7, 0, split="train")
    assert f"Context: {row['hint']}" in record.prompt and f"Lecture: {row['lecture']}" in record.prompt
    assert record.demonstration.startswith(f"Reasoning: {row['solution']}")
    assert record.id == "scienceqa-train-7"


def run_python(program: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-c", program], capture_output=True, text=True, timeout=timeout_s
    )


def code_records() -> list[Record]:
    return [*load_records("mbpp", "train"), *load_records("mbpp", "test"), *load_records("humaneval", "test")]


STUB_CHECK = """
import json, sys
failing = 0
for program in json.loads(sys.stdin.read()):
    try:
        exec(program, {})
    except AssertionError:
        failing += 1
print(failing)
"""


def test_code_references_pass_their_tests_and_stubs_fail() -> None:
    failures, stub_programs = [], []
    for record in code_records():
        metadata = record.metadata
        tests = "\n".join([metadata["test_setup_code"], *metadata["tests"]])
        # Each reference in its own process, as the sandbox will run model code.
        passed = run_python(f"{metadata['reference']}\n\n{tests}\n")
        if passed.returncode != 0:
            failures.append(f"{record.id}: reference fails: {passed.stderr[-300:]}")
        stub = f"def {metadata['entry_point']}(*args, **kwargs):\n    return None\n"
        stub_programs.append(f"{stub}\n{tests}\n")
        assert f"```python\n{metadata['reference']}\n```" == record.demonstration
        assert record.answer == metadata["reference"]
    assert not failures, "\n".join(failures)
    # Stubs cannot loop or touch anything, so one process runs them all.
    stubs = subprocess.run([sys.executable, "-I", "-c", STUB_CHECK], input=json.dumps(stub_programs),
                           capture_output=True, text=True, timeout=600)
    assert stubs.stdout.strip() == str(len(stub_programs)), "some tests accept a stub returning None"


@pytest.mark.parametrize("split", ["train", "test"])
def test_toolalpaca_gold_steps_parse(split: str) -> None:
    for record, row in zip(load_records("toolalpaca", split), raw_rows("toolalpaca", split), strict=True):
        steps = record.metadata["golden_steps"]
        assert steps and record.metadata["tool_name"] == row["tool_name"]
        assert [s["action"] for s in steps] == [s["action"] for s in row["golden_steps"]]
        parsed_from_text = re.findall(r"Action: (\w+)\nAction Input: (\{.*\})", record.answer)
        assert [(a, json.loads(i)) for a, i in parsed_from_text] == [
            (s["action"], s["action_input"]) for s in steps
        ]
        for step, raw in zip(steps, row["golden_steps"], strict=True):
            assert step["action_input"] == json.loads(raw["action_input"]) and step["action_input"]
            assert f"- {step['action']}:" in row["tool_description"]
            for key in step["action_input"]:
                assert f'"{key}"' in row["tool_description"], f"{key} undocumented"
        assert row["instruction"] in record.prompt and "Action Input:" in record.prompt
        assert record.demonstration.startswith(record.answer)


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_local_jsonl_source_and_scienceqa_image_filter(tmp_path: Path) -> None:
    rows = raw_rows("scienceqa", "test")[:3]
    with_image = {**rows[1], "image": {"bytes": None, "path": "figure.png"}}
    path = write_jsonl(tmp_path / "sqa.jsonl", [rows[0], with_image, rows[2]])
    records = load_records("scienceqa", "test", str(path))
    assert [r.id for r in records] == ["scienceqa-test-0", "scienceqa-test-2"]


def test_local_dataset_folder_is_read_with_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    # keep the Arrow cache that load_dataset writes inside the test's folder
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    folder = tmp_path / "humaneval_copy"
    folder.mkdir()
    write_jsonl(folder / "test.jsonl", raw_rows("humaneval", "test")[:2])
    records = load_records("humaneval", "test", str(folder))
    assert records == load_records("humaneval", "test", limit=2)


def test_unknown_benchmark_or_split_lists_allowed_values() -> None:
    with pytest.raises(ValueError, match="unknown benchmark 'sciq'.*scienceqa, cose"):
        load_records("sciq", "test")
    with pytest.raises(ValueError, match="unknown split 'validation'.*train, test"):
        load_records("cose", "validation")
    with pytest.raises(ValueError, match="'gpqa' has no 'train' split.*allowed: test"):
        load_records("gpqa", "train")
    with pytest.raises(ValueError, match="limit"):
        load_records("cose", "test", limit=-1)
    assert set(ADAPTERS) == set(BENCHMARKS)
    assert {benchmark for benchmark, _ in HUB_SPLITS} == set(BENCHMARKS)


def test_malformed_rows_name_file_line_and_field(tmp_path: Path) -> None:
    good = raw_rows("gpqa", "test")[0]
    broken = {key: value for key, value in good.items() if key != "Correct Answer"}
    path = write_jsonl(tmp_path / "gpqa.jsonl", [good, broken])
    with pytest.raises(DatasetFormatError, match=r"gpqa\.jsonl:2: .*'Correct Answer'"):
        load_records("gpqa", "test", path)

    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text(json.dumps(good) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DatasetFormatError, match=r"bad\.jsonl:2: invalid JSON"):
        load_records("gpqa", "test", bad_json)

    cose_row = {**raw_rows("cose", "test")[0], "answer": "nowhere"}
    with pytest.raises(DatasetFormatError, match=r":1: .*'nowhere' is not one of the choices"):
        load_records("cose", "test", write_jsonl(tmp_path / "cose.jsonl", [cose_row]))

    sqa_row = {**raw_rows("scienceqa", "test")[0], "answer": "1"}
    with pytest.raises(DatasetFormatError, match="'answer' must be int"):
        load_records("scienceqa", "test", write_jsonl(tmp_path / "sqa.jsonl", [sqa_row]))

    duplicate = write_jsonl(tmp_path / "dup.jsonl", [good, good])
    with pytest.raises(DatasetFormatError, match="duplicate id"):
        load_records("gpqa", "test", duplicate)

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_records("cose", "test", str(tmp_path / "missing.jsonl"))


def test_adapter_rejects_row_without_required_field_directly() -> None:
    row = {key: value for key, value in raw_rows("gpqa", "test")[0].items() if key != "Question"}
    with pytest.raises(ValueError, match="Question"):
        gpqa.to_record(row, 0, 0)


def test_unreachable_hub_id_gives_a_clear_error() -> None:
    # conftest sets HF_DATASETS_OFFLINE, so this fails fast instead of reaching the network.
    with pytest.raises(ValueError, match=r"cannot load cose test from 'Salesforce/cos_e' \(config 'v1.11', split 'validation'\)"):
        load_records("cose", "test", "Salesforce/cos_e")
