"""Letter extraction on messy outputs, code extraction, and ToolAlpaca step scoring."""

from __future__ import annotations

import pytest

from evaluation.scorers import (
    ToolStep,
    extract_code,
    extract_letter,
    extract_letter_with_rule,
    parse_tool_steps,
    score_letter,
    score_tool_calls,
    score_tool_text,
)


@pytest.mark.parametrize(
    ("text", "expected", "rule"),
    [
        ("Reasoning about B and C.\nAnswer: C", "C", "answer_line"),
        ("**Answer:** (b)", "B", "answer_line"),  # lower case, markdown, parentheses
        ("Answer: A\nwait, I was wrong.\nAnswer: D", "D", "answer_line"),  # the last one wins
        ("answer: c, because the sky is blue", "C", "answer_line"),  # trailing text
        ("I think the answer is (B) since A fails.", "B", "the_answer_is"),
        ("So the correct answer is: d.", "D", "the_answer_is"),
        ("Options A and B are wrong. FINAL ANSWER: C", "C", "upper_answer"),
        ("A and B are both wrong.\nC) the rod", "C", "letter_line"),
        ("Between A and B, I pick D for sure", "D", "last_letter"),
        ("Answer: F\nthe answer is B", "B", "the_answer_is"),  # F is not a valid letter
        ("I have no idea, sorry.", None, "no_answer"),
        ("", None, "no_answer"),
        ("a cat sat on a mat", None, "no_answer"),  # lower-case words are not letters
    ],
)
def test_letter_cascade(text: str, expected: str | None, rule: str) -> None:
    assert extract_letter_with_rule(text, "ABCDE") == (expected, rule)
    assert extract_letter(text, "ABCDE") == expected


def test_valid_letters_restrict_the_cascade() -> None:
    assert extract_letter("Answer: E", "ABCD") is None
    assert extract_letter("Answer: E", "ABCDE") == "E"


def test_score_letter_reports_rule_and_correctness() -> None:
    assert score_letter("Answer: B", "B", "ABCD") == (1.0, "B", "correct (answer_line)")
    assert score_letter("Answer: C", "b", "ABCD")[0] == 0.0
    assert score_letter("nothing", "B", "ABCD") == (0.0, None, "no_answer")


def test_extract_code_prefers_python_block_then_untagged_then_raw() -> None:
    text = "```text\nnot code\n```\n```python\nx = 1\n```\n```python\ny = 2\n```"
    assert extract_code(text) == "x = 1\n"
    assert extract_code("```\nz = 3\n```") == "z = 3\n"
    assert extract_code("def f():\n    return 1") == "def f():\n    return 1"
    assert extract_code("```python\ndef f():\n    return 1") == "def f():\n    return 1"


REACT_GOLD = (
    "Thought: I need the weather.\n"
    "Action: getWeather\n"
    'Action Input: {"city": "Paris", "unit": "C", "note": ""}\n'
    "Observation: 20C\n"
    "Thought: and the forecast\n"
    "Action: getForecast\n"
    'Action Input: {"city": "Paris", "days": 3}\n'
)


def test_parse_tool_steps_reads_actions_and_json_inputs() -> None:
    steps = parse_tool_steps(REACT_GOLD)
    assert [step.action for step in steps] == ["getWeather", "getForecast"]
    assert steps[1].arguments == {"city": "Paris", "days": 3}
    assert parse_tool_steps("Action: x\nAction Input: not json")[0].arguments == {
        "_raw": "not json"
    }


def test_tool_scores_on_partial_matches() -> None:
    gold = parse_tool_steps(REACT_GOLD)
    assert score_tool_calls(gold, gold) == {"action_acc": 1.0, "argument_acc": 1.0, "full_acc": 1.0}
    # Right actions, one of four non-empty gold values wrong ("note" is empty and not counted).
    wrong_city = [
        ToolStep("getWeather", {"city": "paris ", "unit": "F"}),
        ToolStep("getForecast", {"city": "Paris", "days": "3"}),
    ]
    assert score_tool_calls(wrong_city, gold) == {
        "action_acc": 1.0,
        "argument_acc": 0.75,
        "full_acc": 0.0,
    }
    # One step missing: action accuracy 0, the missing step's two values unmatched.
    assert score_tool_calls(gold[:1], gold) == {
        "action_acc": 0.0,
        "argument_acc": 0.5,
        "full_acc": 0.0,
    }
    scores, reason = score_tool_text("Final Answer: it is sunny", REACT_GOLD)
    assert scores["full_acc"] == 0.0 and reason.startswith("no_action")
