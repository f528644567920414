"""Negative demonstrations for token-level contrastive learning (method.md 2.2), built once.

The model writes ``num_negatives`` plausible-but-wrong demonstrations per training example, asked
for JSON ``{"reasoning": ..., "answer": ...}``:

- multiple choice: a confident argument for one specific wrong option; wrong options are assigned
  round-robin (never the gold letter);
- code: subtly buggy code, the flaw cycled over off-by-one / wrong operator / missing edge case /
  wrong return value;
- tool use: a plausible wrong call, cycled over wrong action / wrong arguments / wrong
  interpretation / extra call.

Usability policy (explicit, because a tiny random-init model writes garbage and a real model
sometimes disobeys):

- Parsing tries, in order: a JSON object with a ``reasoning`` or ``answer`` key anywhere in the
  text; lenient ``"reasoning": "...`` / ``"answer": "...`` fields of truncated JSON; ``Reasoning:``
  / ``Answer:`` lines. When all fail the raw text is used (``parsed=False``, counted in the stats).
- The negative mirrors the shape of the gold demonstration: it carries ``Reasoning:`` only when
  the gold one does, so the bad-teacher prompt differs from the good one in content only.
- MC: the answer is forced to the assigned wrong letter (that is what makes it a negative). It is
  unusable when the model's own answer field names the gold letter or its text says "answer is
  <gold>" / "Answer: <gold>" (it argued for the right answer), or when a reasoning is required and
  none is left after removing answer lines.
- Code / tool: the answer is the parsed answer, else the first fenced block, else the raw text.
  Unusable when empty, or when it equals the gold answer or demonstration (whitespace ignored);
  for tool use also when the gold has an ``Action:`` line and the negative has none.
  Code negatives are not executed: "buggy" is what was asked for, not verified.

Stand-in (``ContrastiveConfig.negative_source = "template"``, not the paper's method): a model too
small to follow the request (the 0.5M-parameter CPU base) writes no usable argument, so the
negative is the gold demonstration with its final answer line swapped to the assigned wrong letter
(same round-robin targets), reasoning kept: the bad teacher then reads a demonstration that
concludes a wrong option. Multiple choice only; code and tool records are refused.

Departures from the paper: prompt wording, the 0.7 sampling temperature, the per-record offset of
the round-robin (record i, negative j takes target (i + j) mod n, so small ``num_negatives`` still
cover every wrong option / flaw across the dataset) and the policy above are ours. The budget is
``negative_max_new_tokens`` = 256 new tokens by default, where the authors' code allows 1024
(the paper gives none): a negative mirrors a short gold demonstration, and a cut-off reply is
parsed leniently or counted as unusable (docs/departures.md).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from unisd_core.components.contexts import record_rng
from unisd_core.components.induction import sample_completions
from unisd_core.config import ContrastiveConfig
from unisd_core.data.records import Record
from unisd_core.prompts import format_demonstration

NEGATIVE_TEMPERATURE = 0.7
CODE_BENCHMARKS = frozenset({"mbpp", "humaneval"})
TOOL_BENCHMARKS = frozenset({"toolalpaca"})
CODE_FLAWS = (
    "an off-by-one error",
    "a wrong operator",
    "a missing edge case",
    "a wrong return value",
)
TOOL_FLAWS = (
    "the wrong action",
    "wrong arguments",
    "a wrong interpretation of the request",
    "an extra, unnecessary call",
)
_OPTION_LINE = re.compile(r"^\s*\(?([A-Z])[\).:]\s+\S", re.MULTILINE)
_FENCED = re.compile(r"```[a-zA-Z0-9_+-]*\n(.*?)```", re.DOTALL)
_ANSWER_LINE = re.compile(r"^\s*answer\s*:.*$", re.IGNORECASE | re.MULTILINE)
_LAST_ANSWER_LINE = re.compile(r"^Answer:\s*\S.*\Z", re.MULTILINE)
_JSON_HINT = '{"reasoning": "<%s>", "answer": "<%s>"}'


@dataclass(frozen=True)
class NegativeDemonstration:
    """One generated negative: what was asked (``target``), what came back, and the verdict."""

    record_id: str
    index: int
    kind: str
    target: str
    raw: str
    parsed: bool
    text: str | None
    reason: str

    @property
    def usable(self) -> bool:
        return self.text is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def task_kind(record: Record) -> str:
    """``"code"``, ``"tool"`` or ``"mc"`` (every other benchmark is multiple choice)."""
    if record.benchmark in CODE_BENCHMARKS:
        return "code"
    if record.benchmark in TOOL_BENCHMARKS:
        return "tool"
    return "mc"


def option_letters(record: Record) -> list[str]:
    """The option letters of an MC record: from ``metadata`` (choices/letters), else the prompt."""
    metadata = record.metadata or {}
    for key in ("valid_letters", "letters", "labels", "option_letters"):
        if isinstance(metadata.get(key), (list, tuple)) and metadata[key]:
            return [str(letter).strip().upper() for letter in metadata[key]]
    for key in ("choices", "options"):
        value = metadata.get(key)
        if isinstance(value, dict) and value:
            return [str(letter).strip().upper() for letter in value]
        if isinstance(value, (list, tuple)) and value:
            return [chr(ord("A") + i) for i in range(len(value))]
    found = _OPTION_LINE.findall(record.prompt)
    letters: list[str] = []
    for letter in found:  # keep the leading run A, B, C, ... only
        if letter == chr(ord("A") + len(letters)):
            letters.append(letter)
    return letters


def negative_targets(record: Record, num_negatives: int, offset: int = 0) -> list[str]:
    """What negative j must get wrong: a wrong letter (MC) or a flaw (code, tool), round-robin."""
    kind = task_kind(record)
    if kind == "code":
        pool: Sequence[str] = CODE_FLAWS
    elif kind == "tool":
        pool = TOOL_FLAWS
    else:
        gold = record.answer.strip().upper()
        pool = [letter for letter in option_letters(record) if letter != gold]
        if not pool:
            return []
    return [pool[(offset + j) % len(pool)] for j in range(num_negatives)]


def negative_prompt(record: Record, target: str) -> str:
    """The request for one negative demonstration of ``record`` with the assigned ``target``."""
    head = "You are writing training data: plausible but wrong solutions that look correct."
    kind = task_kind(record)
    if kind == "mc":
        body = (
            f"Question:\n{record.prompt}\n\nThe correct answer is {record.answer.strip()}. Write a "
            f"confident, convincing argument that the answer is {target} instead. Never say it is "
            f"wrong. Respond with JSON only: "
            + _JSON_HINT % ("your argument", target)
        )
    elif kind == "code":
        body = (
            f"Task:\n{record.prompt}\n\nA correct solution:\n{record.demonstration}\n\nWrite a "
            f"solution that looks correct but contains {target}. Never mention the bug. Respond "
            f"with JSON only: " + _JSON_HINT % ("a short, confident explanation", "the full code")
        )
    else:
        body = (
            f"Request:\n{record.prompt}\n\nA correct response:\n{record.demonstration}\n\nWrite a "
            f"response in the same format that makes {target}. Never mention the mistake. Respond "
            f"with JSON only: " + _JSON_HINT % ("a short, confident thought", "the full response")
        )
    return f"{head}\n\n{body}"


def parse_structured(text: str) -> tuple[str | None, str | None, bool]:
    """(reasoning, answer, parsed) from a model reply; ``parsed`` is False when nothing matched."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            fields = {str(key).strip().lower(): item for key, item in value.items()}
            if "reasoning" in fields or "answer" in fields:
                return _as_text(fields.get("reasoning")), _as_text(fields.get("answer")), True
    reasoning = _lenient_field(text, "reasoning")
    answer = _lenient_field(text, "answer")
    if reasoning is not None or answer is not None:
        return reasoning, answer, True
    labelled = re.search(r"reasoning\s*:\s*(.*?)(?:\n\s*answer\s*:\s*(.*))?$", text, re.I | re.S)
    if labelled:
        return _as_text(labelled.group(1)), _as_text(labelled.group(2)), True
    return None, None, False


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text.strip() or None


def _lenient_field(text: str, name: str) -> str | None:
    """The string value of ``"name": "...`` even when the JSON is cut off mid-string."""
    match = re.search(rf'"{name}"\s*:\s*"((?:[^"\\]|\\.)*)("|$)', text, re.I | re.S)
    if not match:
        return None
    try:
        return _as_text(json.loads(f'"{match.group(1)}"'))
    except ValueError:
        return _as_text(match.group(1))


def _normalised(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _needs_reasoning(record: Record) -> bool:
    return record.demonstration.lstrip().startswith("Reasoning:")


def to_negative(record: Record, index: int, target: str, raw: str) -> NegativeDemonstration:
    """Apply the usability policy of the module docstring to one raw reply."""
    reasoning, answer, parsed = parse_structured(raw)
    if task_kind(record) == "mc":
        text, reason = _mc_negative(record, target, raw, reasoning, answer, parsed)
    else:
        text, reason = _call_or_code_negative(record, raw, reasoning, answer, parsed)
    return NegativeDemonstration(
        record.id, index, task_kind(record), target, raw, parsed, text, reason
    )


def _mc_negative(
    record: Record, target: str, raw: str, reasoning: str | None, answer: str | None, parsed: bool
) -> tuple[str | None, str]:
    gold = record.answer.strip().upper()
    # Only "answer" is case-insensitive: "the answer is a function" must not match gold "A".
    concludes_gold = re.search(rf"\b(?i:answer)\s*(is|:)\s*\(?{re.escape(gold)}\b", raw)
    if (answer is not None and _leading_letter(answer) == gold) or concludes_gold:
        return None, "argued_for_gold"
    if not _needs_reasoning(record):
        # The adapters' gold MC demonstration without a rationale is ``Answer: X``.
        return format_demonstration(f"Answer: {target}"), "ok"
    if not parsed:
        reasoning = raw
    reasoning = _ANSWER_LINE.sub("", reasoning or "").strip()
    if not reasoning:
        return None, "empty_reasoning"
    return format_demonstration(target, reasoning), "ok"


def _leading_letter(answer: str) -> str | None:
    answer = re.sub(r"^\s*(the\s+)?answer\s*(is\b|:)?\s*", "", answer, flags=re.IGNORECASE)
    match = re.match(r"\(?([A-Za-z])\b", answer)
    return match.group(1).upper() if match else None


def _call_or_code_negative(
    record: Record, raw: str, reasoning: str | None, answer: str | None, parsed: bool
) -> tuple[str | None, str]:
    if answer is None:
        fenced = _FENCED.search(raw)
        answer = (fenced.group(1) if fenced else raw).strip()
    if not answer:
        return None, "empty_answer"
    if _normalised(answer) in {_normalised(record.answer), _normalised(record.demonstration)}:
        return None, "copied_gold"
    is_tool = task_kind(record) == "tool"
    if is_tool and "Action:" in record.demonstration and "Action:" not in answer:
        return None, "no_action"
    if "```" in record.demonstration and "```" not in answer:
        answer = f"```python\n{answer}\n```"  # same fencing as the gold demonstration
    if _needs_reasoning(record) and reasoning:
        return format_demonstration(answer, reasoning), "ok"
    return format_demonstration(answer), "ok"


def generate_negatives(
    records: Sequence[Record],
    model: Any,
    tokenizer: Any,
    *,
    config: ContrastiveConfig,
    seed: int,
    batch_size: int = 8,
) -> dict[str, list[NegativeDemonstration]]:
    """Record id -> its ``num_negatives`` judged negatives (usable or not), in target order."""
    jobs: list[tuple[Record, int, str]] = []
    for position, record in enumerate(records):
        for j, target in enumerate(negative_targets(record, config.num_negatives, position)):
            jobs.append((record, j, target))
    replies = sample_completions(
        model,
        tokenizer,
        [negative_prompt(record, target) for record, _, target in jobs],
        max_new_tokens=config.negative_max_new_tokens,
        seed=seed,
        temperature=NEGATIVE_TEMPERATURE,
        batch_size=batch_size,
    )
    negatives: dict[str, list[NegativeDemonstration]] = {record.id: [] for record in records}
    for (record, j, target), raw in zip(jobs, replies):
        negatives[record.id].append(to_negative(record, j, target, raw))
    return negatives


def template_negatives(
    records: Sequence[Record], num_negatives: int
) -> dict[str, list[NegativeDemonstration]]:
    """Record id -> ``num_negatives`` stand-in negatives written without a model (module
    docstring): the gold demonstration with its answer line set to the round-robin wrong letter."""
    negatives: dict[str, list[NegativeDemonstration]] = {}
    for position, record in enumerate(records):
        if task_kind(record) != "mc":
            raise ValueError(f"template negatives are defined for multiple choice only; "
                             f"{record.id!r} is {task_kind(record)} (use negative_source: model)")
        items = []
        for j, target in enumerate(negative_targets(record, num_negatives, position)):
            text, count = _LAST_ANSWER_LINE.subn(f"Answer: {target}", record.demonstration.rstrip())
            if count == 0:  # a bare-letter demonstration
                text = format_demonstration(f"Answer: {target}")
            items.append(NegativeDemonstration(record.id, j, "mc", target, "", True, text,
                                               "template"))
        negatives[record.id] = items
    return negatives


def usable_texts(negatives: dict[str, list[NegativeDemonstration]]) -> dict[str, list[str]]:
    """Record id -> the formatted texts of its usable negatives (possibly empty)."""
    return {rid: [n.text for n in items if n.text is not None] for rid, items in negatives.items()}


def build_negative_demonstrations(
    records: Sequence[Record], model: Any, tokenizer: Any, *, config: ContrastiveConfig, seed: int
) -> dict[str, list[str]]:
    """Record id -> usable negative demonstrations (formatted; unusable ones dropped)."""
    return usable_texts(generate_negatives(records, model, tokenizer, config=config, seed=seed))


def choose_negative(negatives: dict[str, list[str]], record_id: str, seed: int) -> str | None:
    """One negative for ``record_id``, seeded by (seed, record id); None when it has none."""
    options = negatives.get(record_id) or []
    if not options:
        return None
    return options[int(record_rng(seed, f"negative:{record_id}").integers(len(options)))]


def negative_stats(negatives: dict[str, list[NegativeDemonstration]]) -> dict[str, Any]:
    """Counts for logging: generated, usable, parsed, unusable by reason, examples left without."""
    items = [item for group in negatives.values() for item in group]
    reasons = Counter(item.reason for item in items if not item.usable)
    return {
        "generated": len(items),
        "usable": sum(item.usable for item in items),
        "unusable": sum(not item.usable for item in items),
        "parsed": sum(item.parsed for item in items),
        "unusable_reasons": dict(sorted(reasons.items())),
        "examples_without_negative": sum(
            not any(item.usable for item in group) for group in negatives.values()
        ),
    }
