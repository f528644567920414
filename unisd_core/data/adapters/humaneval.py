"""HumanEval (openai/openai_humaneval) rows -> Records.

Hub schema: task_id, prompt (imports, signature and docstring), canonical_solution (the body),
test (defines ``check(candidate)``), entry_point. The student prompt asks to complete the function
and return it whole in one fenced python block; the answer and ``reference`` are the complete
function (prompt + canonical solution), so the reference runs on its own.

Metadata ``tests`` is a one-element list: the hub test code followed by ``check(<entry_point>)``,
the same shape as MBPP's list of asserts so that one sandbox call scores both; ``test_code`` keeps
the raw hub test. HumanEval is evaluation only (no train split).

Departure: the instruction line asks for the whole function (not a continuation), because the
models are chat models scored on the first fenced block.
"""

from __future__ import annotations

from typing import Any

from unisd_core.data.adapters.common import python_block, record_id, require_fields
from unisd_core.data.records import Record

BENCHMARK = "humaneval"
REQUIRED_FIELDS: tuple[str, ...] = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


def to_record(row: dict[str, Any], index: int, seed: int, *, split: str = "test") -> Record:
    """One HumanEval row; ``seed`` is unused. The id keeps the hub task_id (``HumanEval/0``)."""
    require_fields(row, REQUIRED_FIELDS)
    function_prompt = str(row["prompt"])
    reference = (function_prompt + str(row["canonical_solution"])).strip()
    entry_point = str(row["entry_point"])
    test_code = str(row["test"])
    prompt = (
        "Complete the following Python function. Return the whole function, with any imports it "
        "needs, in a single ```python code block.\n\n"
        f"```python\n{function_prompt.rstrip()}\n```"
    )
    return Record(
        id=record_id(BENCHMARK, split, row["task_id"]),
        benchmark=BENCHMARK,
        prompt=prompt,
        demonstration=python_block(reference),
        answer=reference,
        metadata={
            "tests": [f"{test_code.rstrip()}\n\ncheck({entry_point})\n"],
            "test_code": test_code,
            "entry_point": entry_point,
            "test_setup_code": "",
            "test_imports": [],
            "reference": reference,
            "task_id": row["task_id"],
        },
    )
