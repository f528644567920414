"""Induced-instruction contexts for multi-teacher agreement (method.md 2.1, source ``induction``).

The model reads ``induction_examples`` solved training examples and writes one short general
instruction for the task (temperature 0.7, ``induction_max_new_tokens`` new tokens, seeded).
Context = that instruction, a blank line, the prompt x, a blank line, the teacher instruction
sentence.

Departures from the paper: agreement needs K *different* teachers, and one instruction repeated K
times would give zero disagreement, so we induce K instructions per dataset (instruction k from its
own seeded draw of examples) and context k uses instruction k; every record shares them. The
meta-prompt wording is ours. An instruction that comes back empty after cleaning is resampled
(up to ``MAX_ATTEMPTS`` times with the next seed); if it stays empty the context is x + the
instruction sentence alone, and :func:`induce_instructions` reports it as an empty string.

:func:`sample_completions` is the small seeded sampler shared with :mod:`.negatives`, on top of
:class:`unisd_core.generation.hf.HFGenerationBackend` (one sampling implementation in the library).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from unisd_core.components.contexts import record_rng
from unisd_core.config import AgreementConfig
from unisd_core.data.records import Record
from unisd_core.prompts import TEACHER_INSTRUCTION, chat_prompt

INDUCTION_TEMPERATURE = 0.7
MAX_ATTEMPTS = 3
_LABEL_PATTERN = re.compile(r"^\s*(general\s+)?instruction\s*:\s*", re.IGNORECASE)


def sample_completions(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_new_tokens: int,
    seed: int,
    temperature: float = 0.7,
    batch_size: int = 8,
) -> list[str]:
    """Sample one completion per user text (chat template applied), top_p 1, seeded, decoded.

    Goes through the HF generation backend (full-vocabulary sampling, forked RNG, cut at the end
    of turn); chunk i of ``batch_size`` prompts is sampled with seed ``seed + i``.
    """
    from unisd_core.generation.hf import HFGenerationBackend

    backend = HFGenerationBackend(model, tokenizer)
    completions: list[str] = []
    for chunk, start in enumerate(range(0, len(texts), batch_size)):
        prompts = [chat_prompt(tokenizer, text) for text in texts[start:start + batch_size]]
        token_rows = backend.generate(
            prompts,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=1.0,
            seed=seed + chunk,
        )
        completions.extend(tokenizer.batch_decode(token_rows, skip_special_tokens=True))
    return completions


def induction_prompt(examples: Sequence[Record]) -> str:
    """The meta-prompt asking for one short general instruction from solved examples."""
    parts = [f"Below are {len(examples)} solved examples of the same task."]
    for number, example in enumerate(examples, start=1):
        parts.append(
            f"Example {number}:\nQuestion:\n{example.prompt}\nSolution:\n{example.demonstration}"
        )
    parts.append(
        "Write one short, general instruction (at most three sentences) that would help someone "
        "solve new questions of this task. Reply with the instruction only."
    )
    return "\n\n".join(parts)


def clean_instruction(text: str) -> str:
    """Strip whitespace and a leading ``Instruction:`` label from a generated instruction."""
    return _LABEL_PATTERN.sub("", text.strip(), count=1).strip()


def induce_instructions(
    records: Sequence[Record], model: Any, tokenizer: Any, *, config: AgreementConfig, seed: int
) -> list[str]:
    """``config.num_contexts`` instructions, instruction k induced from its own seeded examples."""
    if not records:
        raise ValueError("induction needs at least one solved training example")
    count = min(config.induction_examples, len(records))
    prompts = []
    for k in range(config.num_contexts):
        chosen = record_rng(seed, f"induction-{k}").choice(len(records), size=count, replace=False)
        prompts.append(induction_prompt([records[int(j)] for j in chosen]))
    instructions = [""] * len(prompts)
    for attempt in range(MAX_ATTEMPTS):
        missing = [k for k, text in enumerate(instructions) if not text]
        if not missing:
            break
        samples = sample_completions(
            model,
            tokenizer,
            [prompts[k] for k in missing],
            max_new_tokens=config.induction_max_new_tokens,
            seed=seed + attempt,
            temperature=INDUCTION_TEMPERATURE,
        )
        for k, sample in zip(missing, samples):
            instructions[k] = clean_instruction(sample)
    return instructions


def induction_context_text(instruction: str, prompt: str) -> str:
    """Instruction, blank line, x, blank line, the teacher instruction sentence."""
    head = f"{instruction}\n\n" if instruction else ""
    return f"{head}{prompt}\n\n{TEACHER_INSTRUCTION}"


def build_induction_contexts(
    records: Sequence[Record],
    model: Any,
    tokenizer: Any,
    *,
    config: AgreementConfig,
    seed: int,
    instructions: Sequence[str] | None = None,
) -> dict[str, list[str]]:
    """Record id -> K contexts, context k built on instruction k (induced here unless given)."""
    if instructions is None:
        instructions = induce_instructions(records, model, tokenizer, config=config, seed=seed)
    return {
        record.id: [induction_context_text(text, record.prompt) for text in instructions]
        for record in records
    }
