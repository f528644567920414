"""MBPP (google-research-datasets/mbpp) rows -> Records, for both hub configs.

- ``full`` (our train split): task_id, text, code, test_list, test_setup_code, challenge_test_list.
- ``sanitized`` (our eval split, 257 test items): source_file, task_id, prompt, code,
  test_imports, test_list.

The prompt is the task text plus the asserts the code must pass (the usual MBPP protocol) and a
request for one fenced python block. The answer is the reference code; the demonstration is that
code in a fenced block (MBPP has no rationale). Metadata: ``tests`` (list of assert strings),
``entry_point`` (the function the first assert calls), ``test_setup_code`` (str) and
``test_imports`` (list[str]) -- both keys always present, filled from whichever the config has --
and ``reference``. ``challenge_test_list`` is not scored (the paper scores ``test_list``).

Departure: the closing request for a fenced block is ours; it matches how the scorer extracts code.
"""

from __future__ import annotations

import ast
from typing import Any

from unisd_core.data.adapters.common import (
    MalformedRowError,
    python_block,
    record_id,
    require_fields,
    require_type,
)
from unisd_core.data.records import Record

BENCHMARK = "mbpp"
REQUIRED_FIELDS: tuple[str, ...] = ("task_id", "code", "test_list")
TEXT_FIELDS: tuple[str, ...] = ("text", "prompt")  # full config / sanitized config


def called_function(assert_line: str) -> str:
    """Name of the first function called in an assert (``assert f(1) == 2`` -> ``f``)."""
    try:
        tree = ast.parse(assert_line.strip())
    except SyntaxError as error:
        raise MalformedRowError(f"test is not valid Python: {assert_line!r:.80}") from error
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id not in {"set", "sorted", "list", "tuple", "abs", "round", "math"}:
                return node.func.id
    raise MalformedRowError(f"no function call found in test {assert_line!r:.80}")


def task_text(row: dict[str, Any]) -> str:
    for name in TEXT_FIELDS:
        if name in row:
            return str(row[name])
    raise MalformedRowError(f"missing field: one of {list(TEXT_FIELDS)}; present: {sorted(row)}")


def to_record(row: dict[str, Any], index: int, seed: int, *, split: str = "test") -> Record:
    """One MBPP row of either config; ``seed`` is unused (nothing to shuffle)."""
    require_fields(row, REQUIRED_FIELDS)
    text = task_text(row)
    tests = [str(test) for test in require_type(row, "test_list", list)]
    if not tests:
        raise MalformedRowError("test_list is empty")
    code = str(row["code"]).replace("\r\n", "\n").strip()
    setup_code = str(row.get("test_setup_code") or "")
    imports = [str(line) for line in row.get("test_imports") or []]
    if not imports and setup_code.strip():
        imports = [line for line in setup_code.splitlines() if line.strip()]
    if not setup_code.strip() and imports:
        setup_code = "\n".join(imports)
    prompt = (
        f"{text.strip()}\nYour code should pass these tests:\n\n"
        + "\n".join(tests)
        + "\n\nWrite the function in a single ```python code block."
    )
    key = row["task_id"]
    return Record(
        id=record_id(BENCHMARK, split, key),
        benchmark=BENCHMARK,
        prompt=prompt,
        demonstration=python_block(code),
        answer=code,
        metadata={
            "tests": tests,
            "entry_point": called_function(tests[0]),
            "test_setup_code": setup_code,
            "test_imports": imports,
            "reference": code,
            "task_id": key,
        },
    )
