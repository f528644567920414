"""Answer extraction and scoring for the six benchmarks (method.md section 5), as pure functions.

- Multiple choice: :func:`extract_letter` runs the cascade of method.md 5 (an ``Answer:`` line,
  "the answer is X", ``ANSWER: X``, a line starting with a letter and ``.``/``)``, the last
  standalone valid letter) and :func:`score_letter` compares with the gold letter.
- Code: :func:`extract_code` takes the first fenced python block, else the raw text;
  :func:`score_code` runs it with the tests through :mod:`evaluation.sandbox` (program and tests
  in separate OS sandboxes; the reason records the isolation mode).
- ToolAlpaca: :func:`parse_tool_steps` reads ReAct ``Action:`` / ``Action Input:`` steps and
  :func:`score_tool_calls` gives action, argument and full accuracy.

Departures from the paper (its text does not fix these details; we chose and document them):
- Every rule of the letter cascade uses its *last* match (the final answer wins when a model
  revises itself), and a rule matching a letter outside ``valid_letters`` falls through to the
  next rule. Explicit rules (1-3) accept a lower-case letter; the standalone-letter fallback
  accepts only upper case, because "a" and "i" are English words.
- Code extraction also accepts an untagged fenced block (when no ``python`` block exists) and an
  unclosed fence (a generation cut at the token limit), before falling back to the raw text.
- ToolAlpaca argument values match after normalisation (JSON round trip, strip, lower case);
  when the gold calls carry no non-empty argument the argument accuracy is 1.0.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

LETTER_RULES: tuple[str, ...] = (
    "answer_line",
    "the_answer_is",
    "upper_answer",
    "letter_line",
    "last_letter",
)

_ANSWER_LINE = re.compile(
    r"^[\s>*#_-]*answer\s*[*_]*\s*[:：]\s*[*_]*\s*[(\[]?\s*([A-Za-z])\s*[)\]]?(?![A-Za-z])",
    re.IGNORECASE | re.MULTILINE,
)
_THE_ANSWER_IS = re.compile(
    r"the\s+(?:correct\s+|final\s+|best\s+)?(?:answer|option|choice)\s+is\s*[:：]?\s*"
    r"[*_]*\s*(?:option\s+|choice\s+)?[(\[]?\s*([A-Za-z])\s*[)\]]?(?![A-Za-z])",
    re.IGNORECASE,
)
_UPPER_ANSWER = re.compile(r"ANSWER\s*[:：]\s*[(\[]?\s*([A-Za-z])(?![A-Za-z])")
_LETTER_LINE = re.compile(r"^\s*[(\[]?([A-Z])\s*[.)\]]", re.MULTILINE)
_STANDALONE = re.compile(r"(?<![A-Za-z0-9'])([A-Z])(?![A-Za-z0-9'])")


def extract_letter_with_rule(text: str, valid_letters: str) -> tuple[str | None, str]:
    """The extracted upper-case letter (or None) and the name of the rule that found it.

    ``valid_letters`` is e.g. ``"ABCD"``; the rule name is one of :data:`LETTER_RULES` or
    ``"no_answer"``.
    """
    valid = {letter.upper() for letter in valid_letters}
    for rule, pattern in (
        ("answer_line", _ANSWER_LINE),
        ("the_answer_is", _THE_ANSWER_IS),
        ("upper_answer", _UPPER_ANSWER),
        ("letter_line", _LETTER_LINE),
        ("last_letter", _STANDALONE),
    ):
        letters = [match.group(1).upper() for match in pattern.finditer(text or "")]
        letters = [letter for letter in letters if letter in valid]
        if letters:
            return letters[-1], rule
    return None, "no_answer"


def extract_letter(text: str, valid_letters: str) -> str | None:
    """The answer letter of a multiple-choice completion, or None (method.md 5 cascade)."""
    return extract_letter_with_rule(text, valid_letters)[0]


def score_letter(text: str, gold: str, valid_letters: str) -> tuple[float, str | None, str]:
    """(score 0/1, extracted letter, reason) for one multiple-choice completion."""
    letter, rule = extract_letter_with_rule(text, valid_letters)
    if letter is None:
        return 0.0, None, "no_answer"
    correct = letter == gold.strip().upper()
    return (1.0 if correct else 0.0), letter, f"{'correct' if correct else 'wrong'} ({rule})"


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(text: str) -> str:
    """The first fenced python block, else the first untagged block, else the raw text."""
    untagged: str | None = None
    for match in _FENCE.finditer(text or ""):
        language = match.group(1).lower()
        if language in {"python", "py", "python3"}:
            return match.group(2)
        if not language and untagged is None:
            untagged = match.group(2)
    return untagged if untagged is not None else (text or "")


def score_code(
    text: str, tests: str, *, setup: str = "", timeout_s: float = 10.0, memory_mb: int = 1024
) -> tuple[float, str, str]:
    """(pass@1 score 0/1, extracted program, reason): the program is run against ``tests``.

    The reason ends with the isolation mode the item ran in, e.g. ``passed [sandbox:
    bwrap-root]`` (:func:`evaluation.sandbox_isolation.isolation_mode`). Raises
    :class:`evaluation.sandbox.SandboxUnavailable` when code cannot be isolated here and the
    weak mode was not opted into.
    """
    from evaluation.sandbox import run_program  # the sandbox is only needed for code items

    code = extract_code(text)
    result = run_program(code, tests, setup=setup, timeout_s=timeout_s, memory_mb=memory_mb)
    return (1.0 if result.passed else 0.0), code, f"{result.reason} [sandbox: {result.isolation}]"


@dataclass(frozen=True)
class ToolStep:
    """One ReAct step: the action name and its parsed input (a dict; raw text under ``_raw``)."""

    action: str
    arguments: dict[str, Any]


_ACTION = re.compile(r"^\s*Action\s*:\s*(.*?)\s*$", re.MULTILINE)
_ACTION_INPUT = re.compile(
    r"^\s*Action\s+Input\s*:\s*(.*?)(?=^\s*(?:Observation|Thought|Action|Final Answer)\b|\Z)",
    re.MULTILINE | re.DOTALL,
)


def _parse_arguments(raw: str) -> dict[str, Any]:
    raw = raw.strip().strip("`").strip()
    if raw.startswith("json"):
        raw = raw[4:].strip()
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, ValueError):
        return {"_raw": raw} if raw else {}
    return value if isinstance(value, dict) else {"_raw": raw}


def parse_tool_steps(text: str) -> list[ToolStep]:
    """All ``Action:`` / ``Action Input:`` steps of a ReAct transcript, in order."""
    steps: list[ToolStep] = []
    actions = list(_ACTION.finditer(text or ""))
    for index, match in enumerate(actions):
        end = actions[index + 1].start() if index + 1 < len(actions) else len(text)
        segment = text[match.end() : end]
        found = _ACTION_INPUT.search(segment)
        arguments = _parse_arguments(found.group(1)) if found else {}
        steps.append(ToolStep(match.group(1).strip().strip("`").strip(), arguments))
    return steps


def _normalise_value(value: Any) -> str:
    if isinstance(value, str):
        return value.strip().lower()
    return json.dumps(value, sort_keys=True).strip().lower()


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, dict)) and len(value) == 0)


def score_tool_calls(
    predicted: list[ToolStep], gold: list[ToolStep]
) -> dict[str, float]:
    """``action_acc``, ``argument_acc`` and ``full_acc`` of one item (each in [0, 1]).

    action: same number of steps and the same action names in order (0/1).
    argument: over every (gold step, non-empty gold key), the fraction whose value the predicted
    step at the same position matches. full: both equal 1.
    """
    action = float(
        len(predicted) == len(gold)
        and all(p.action == g.action for p, g in zip(predicted, gold))
    )
    matched = total = 0
    for index, gold_step in enumerate(gold):
        predicted_args = predicted[index].arguments if index < len(predicted) else {}
        for key, value in gold_step.arguments.items():
            if _is_empty(value):
                continue
            total += 1
            if key in predicted_args and _normalise_value(predicted_args[key]) == _normalise_value(
                value
            ):
                matched += 1
    argument = matched / total if total else 1.0
    return {
        "action_acc": action,
        "argument_acc": argument,
        "full_acc": float(action == 1.0 and argument == 1.0),
    }


def score_tool_text(text: str, gold_text: str) -> tuple[dict[str, float], str]:
    """Scores of a ReAct completion against a gold ReAct transcript, and a reason string."""
    predicted = parse_tool_steps(text)
    gold = parse_tool_steps(gold_text)
    scores = score_tool_calls(predicted, gold)
    names = ",".join(step.action for step in predicted) or "-"
    if not predicted:
        reason = "no_action"
    elif scores["full_acc"] == 1.0:
        reason = "correct"
    elif scores["action_acc"] == 1.0:
        reason = "wrong_arguments"
    else:
        reason = "wrong_actions"
    return scores, f"{reason} (actions: {names})"


MULTIPLE_CHOICE = frozenset({"scienceqa", "cose", "gpqa", "synthetic"})
CODE = frozenset({"mbpp", "humaneval"})


@dataclass(frozen=True)
class ItemScore:
    """The per-item outcome every task reports: metric values, the extracted answer, a reason."""

    metrics: dict[str, float]
    extracted: str | None
    reason: str


def code_setup(metadata: dict[str, Any]) -> str:
    """The setup code / imports of a code Record (MBPP's ``test_setup_code``), else ''."""
    return metadata.get("test_setup_code") or "\n".join(metadata.get("test_imports") or [])


def code_tests(metadata: dict[str, Any]) -> str:
    """The test program of a code Record: setup code / imports, then the asserts or ``check``."""
    setup = code_setup(metadata)
    tests = metadata.get("tests") or []
    return "\n".join([setup, *tests]) if setup else "\n".join(tests)


def score_output(
    benchmark: str,
    answer: str,
    metadata: dict[str, Any],
    prediction: str,
    *,
    timeout_s: float = 10.0,
) -> ItemScore:
    """Score one completion of a Record (its ``answer`` and ``metadata``) for ``benchmark``.

    Metric names: ``acc`` (multiple choice), ``pass_at_1`` (code), ``action_acc``,
    ``argument_acc`` and ``full_acc`` (ToolAlpaca); see :data:`evaluation.results.PRIMARY_METRIC`.
    """
    if benchmark in MULTIPLE_CHOICE or "valid_letters" in metadata:
        valid = "".join(metadata.get("valid_letters") or "ABCDE")
        score, letter, reason = score_letter(prediction, answer, valid)
        return ItemScore({"acc": score}, letter, reason)
    if benchmark in CODE:
        score, code, reason = score_code(
            prediction, code_tests(metadata), setup=code_setup(metadata), timeout_s=timeout_s
        )
        return ItemScore({"pass_at_1": score}, code, reason)
    if benchmark == "toolalpaca":
        scores, reason = score_tool_text(prediction, answer)
        steps = parse_tool_steps(prediction)
        extracted = json.dumps([[step.action, step.arguments] for step in steps])
        return ItemScore(scores, extracted, reason)
    raise ValueError(f"no scorer for benchmark {benchmark!r}")
