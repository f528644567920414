"""ToolAlpaca (the authors' ReAct-format copy) rows -> Records.

There is no canonical hub copy of the authors' ReAct-format files, so we fix the row schema:

    {"id": str, "tool_name": str, "tool_description": str (the API documentation text),
     "instruction": str,
     "golden_steps": [{"action": str, "action_input": str (a JSON object, serialised)}, ...],
     "final_answer": str}

``action_input`` is a JSON string, as in the ReAct transcripts (``Action Input: {...}``); a dict
is accepted too. The prompt holds the tool docs, a description of the ReAct format
(Thought / Action / Action Input / Observation, then Final Answer) and the instruction. The answer
is the gold steps text (``Action: ...`` / ``Action Input: {...}`` per step), which the scorers
parse; the demonstration is those steps followed by ``Final Answer: ...``. Observations are not
part of the gold data, so the demonstration does not invent them. Metadata: ``golden_steps``
(list of {action, action_input: dict}), ``tool_name``, ``final_answer``.
"""

from __future__ import annotations

import json
from typing import Any

from unisd_core.data.adapters.common import (
    MalformedRowError,
    record_id,
    require_fields,
    require_type,
)
from unisd_core.data.records import Record

BENCHMARK = "toolalpaca"
REQUIRED_FIELDS: tuple[str, ...] = ("id", "tool_name", "tool_description", "instruction", "golden_steps")

REACT_FORMAT = """Answer in the following format:
Thought: reason about what to do next
Action: the name of the API function to call
Action Input: the arguments of the call as a JSON object
Observation: the result returned by the call
... (Thought / Action / Action Input / Observation may repeat)
Thought: I now know the final answer
Final Answer: the answer to the instruction"""


def parse_step(step: Any) -> dict[str, Any]:
    """A gold step as {action: str, action_input: dict}; the input may be a JSON string or dict."""
    if not isinstance(step, dict) or "action" not in step or "action_input" not in step:
        raise MalformedRowError(f"golden step must have 'action' and 'action_input': {step!r:.80}")
    arguments = step["action_input"]
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as error:
            raise MalformedRowError(f"action_input is not JSON: {arguments!r:.80}") from error
    if not isinstance(arguments, dict):
        raise MalformedRowError(f"action_input must be a JSON object, got {arguments!r:.80}")
    return {"action": str(step["action"]), "action_input": arguments}


def steps_text(steps: list[dict[str, Any]]) -> str:
    """The gold ReAct steps as text, one Action / Action Input pair per step."""
    return "\n".join(
        f"Action: {step['action']}\nAction Input: {json.dumps(step['action_input'])}"
        for step in steps
    )


def to_record(row: dict[str, Any], index: int, seed: int, *, split: str = "test") -> Record:
    """One ToolAlpaca row; ``seed`` is unused."""
    require_fields(row, REQUIRED_FIELDS)
    steps = [parse_step(step) for step in require_type(row, "golden_steps", list)]
    if not steps:
        raise MalformedRowError("golden_steps is empty")
    answer = steps_text(steps)
    final_answer = str(row.get("final_answer") or "").strip()
    demonstration = f"{answer}\nFinal Answer: {final_answer}" if final_answer else answer
    prompt = (
        f"You can use the tool {row['tool_name']}.\n\n"
        f"{str(row['tool_description']).strip()}\n\n{REACT_FORMAT}\n\n"
        f"Instruction: {str(row['instruction']).strip()}"
    )
    return Record(
        id=record_id(BENCHMARK, split, row["id"]),
        benchmark=BENCHMARK,
        prompt=prompt,
        demonstration=demonstration,
        answer=answer,
        metadata={
            "golden_steps": steps,
            "tool_name": str(row["tool_name"]),
            "final_answer": final_answer,
        },
    )
