"""Negative demonstrations without a model: targets, parsing, the usability policy, the choice."""

from __future__ import annotations

import json

import pytest

from unisd_core.components.negatives import (
    CODE_FLAWS,
    TOOL_FLAWS,
    NegativeDemonstration,
    choose_negative,
    negative_prompt,
    negative_stats,
    negative_targets,
    option_letters,
    parse_structured,
    template_negatives,
    to_negative,
    usable_texts,
)
from unisd_core.data.adapters import scienceqa
from unisd_core.data.records import Record
from unisd_core.data.synthetic import generate_rows


def mc_records(count: int = 6) -> list[Record]:
    """Real ScienceQA-schema rows through the real adapter (4 options, rationale present)."""
    return [scienceqa.to_record(row, i, 0, split="train") for i, row in enumerate(generate_rows("train", count))]


CODE = Record(
    "mbpp-train-1", "mbpp", "Write add(a, b).", "```python\ndef add(a, b):\n    return a + b\n```",
    "def add(a, b):\n    return a + b", {"tests": ["assert add(1, 2) == 3"]},
)
TOOL = Record(
    "toolalpaca-train-1", "toolalpaca", "Use the weather tool for Paris.",
    'Action: getWeather\nAction Input: {"city": "Paris"}', 'Action: getWeather\nAction Input: {"city": "Paris"}',
)


def test_mc_round_robin_never_gold_and_covers_every_wrong_option() -> None:
    for position, record in enumerate(mc_records()):
        letters = option_letters(record)
        assert letters == ["A", "B", "C", "D"]
        targets = negative_targets(record, 6, offset=position)
        assert record.answer not in targets
        assert set(targets) == set(letters) - {record.answer}
        assert all(a != b for a, b in zip(targets, targets[1:]))  # cycled, not repeated
        assert f"the answer is {targets[0]} instead" in negative_prompt(record, targets[0])


def test_template_negatives_swap_only_the_answer_to_the_round_robin_wrong_letter() -> None:
    records = mc_records()
    found = template_negatives(records, 4)
    for position, record in enumerate(records):
        targets = negative_targets(record, 4, offset=position)
        assert [n.target for n in found[record.id]] == targets
        for negative in found[record.id]:
            assert negative.usable and negative.target != record.answer
            reasoning, answer_line = negative.text.rsplit("\n", 1)
            assert answer_line == f"Answer: {negative.target}"
            assert reasoning == record.demonstration.rsplit("\n", 1)[0]  # reasoning kept
    bare = Record("x", "cose", "Q?\nA. one\nB. two\nC. three\n", "Answer: B", "B")
    assert [n.text for n in template_negatives([bare], 2)["x"]] == ["Answer: A", "Answer: C"]
    with pytest.raises(ValueError, match="multiple choice only"):
        template_negatives([CODE], 2)


def test_option_letters_fall_back_to_prompt_lines() -> None:
    record = Record("x", "cose", "Q?\nA. one\nB. two\nC. three\n", "Answer: B", "B")
    assert option_letters(record) == ["A", "B", "C"]
    assert negative_targets(record, 4) == ["A", "C", "A", "C"]


def test_code_and_tool_flaws_cycle() -> None:
    assert negative_targets(CODE, 5) == [*CODE_FLAWS, CODE_FLAWS[0]]
    assert negative_targets(TOOL, 4, offset=1) == [*TOOL_FLAWS[1:], TOOL_FLAWS[0]]
    assert CODE.demonstration in negative_prompt(CODE, CODE_FLAWS[0])


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"reasoning": "It is blue.", "answer": "C"}', ("It is blue.", "C", True)),
        ('Sure!\n```json\n{"Reasoning": "r", "answer": {"x": 1}}\n```', ("r", '{"x": 1}', True)),
        ('{"reasoning": "cut off mid way', ("cut off mid way", None, True)),
        ("Reasoning: because\nAnswer: B", ("because", "B", True)),
        ("garbage ## tokens", (None, None, False)),
    ],
)
def test_parse_structured(reply: str, expected: tuple) -> None:
    assert parse_structured(reply) == expected


def test_mc_negative_forces_the_wrong_letter() -> None:
    record = mc_records(1)[0]
    wrong = negative_targets(record, 1)[0]
    reply = json.dumps({"reasoning": "Clearly this one.", "answer": "whatever"})
    negative = to_negative(record, 0, wrong, reply)
    assert negative.usable and negative.parsed
    assert negative.text == f"Reasoning: Clearly this one.\nAnswer: {wrong}"


def test_mc_negative_policy_rejects_gold_and_keeps_raw_text_honestly() -> None:
    record = mc_records(1)[0]
    wrong = negative_targets(record, 1)[0]
    gold_reply = json.dumps({"reasoning": "r", "answer": f"Answer: {record.answer}"})
    assert to_negative(record, 0, wrong, gold_reply).reason == "argued_for_gold"
    assert to_negative(record, 0, wrong, f"so the answer is {record.answer}.").reason == "argued_for_gold"
    lower = to_negative(record, 0, wrong, f"The answer is {record.answer.lower()} trap.")
    assert lower.usable  # a lowercase article is not the gold letter
    raw = to_negative(record, 1, wrong, f"zq xv\nAnswer: {wrong}")
    assert raw.usable and not raw.parsed
    assert raw.text == f"Reasoning: zq xv\nAnswer: {wrong}"  # answer lines dropped from reasoning
    assert to_negative(record, 2, wrong, "   ").reason == "empty_reasoning"
    no_rationale = Record("y", "gpqa", "Q?\nA. x\nB. y", "Answer: A", "A", {"valid_letters": ["A", "B"]})
    assert to_negative(no_rationale, 0, "B", "").text == "Answer: B"  # mirrors the gold shape


def test_code_and_tool_negative_policy() -> None:
    buggy = json.dumps({"reasoning": "Adds them.", "answer": "def add(a, b):\n    return a - b"})
    negative = to_negative(CODE, 0, CODE_FLAWS[1], buggy)
    assert negative.text == "```python\ndef add(a, b):\n    return a - b\n```"
    copied = json.dumps({"reasoning": "x", "answer": CODE.answer})
    assert to_negative(CODE, 1, CODE_FLAWS[0], copied).reason == "copied_gold"
    assert to_negative(CODE, 2, CODE_FLAWS[0], "").reason == "empty_answer"
    assert to_negative(TOOL, 0, TOOL_FLAWS[0], "I think it rains").reason == "no_action"
    wrong_call = 'Action: getWeather\nAction Input: {"city": "Rome"}'
    assert to_negative(TOOL, 1, TOOL_FLAWS[1], wrong_call).text == wrong_call


def test_choose_negative_is_seeded_and_counts() -> None:
    texts = {"a": ["n0", "n1", "n2", "n3"], "b": []}
    picks = {choose_negative(texts, "a", seed) for seed in range(20)}
    assert picks <= set(texts["a"]) and len(picks) > 1
    assert choose_negative(texts, "a", 7) == choose_negative(texts, "a", 7)
    assert choose_negative(texts, "b", 0) is None
    assert choose_negative(texts, "missing", 0) is None


def test_negative_stats_count_unusable() -> None:
    good = NegativeDemonstration("a", 0, "mc", "B", "r", True, "Answer: B", "ok")
    bad = NegativeDemonstration("b", 0, "mc", "B", "", False, None, "empty_reasoning")
    generated = {"a": [good, bad], "b": [bad]}
    stats = negative_stats(generated)
    assert stats["generated"] == 3 and stats["usable"] == 1 and stats["unusable"] == 2
    assert stats["unusable_reasons"] == {"empty_reasoning": 2}
    assert stats["examples_without_negative"] == 1
    assert usable_texts(generated) == {"a": ["Answer: B"], "b": []}
