"""Prompt construction shared by training and evaluation (method.md sections 1, 2.2, 5).

The student sees chat(x). The teacher sees chat(x~) with
x~ = x, a blank line, the marker line, the demonstration, a blank line, the instruction sentence.
The bad teacher of the contrastive component uses the byte-identical template with a negative
demonstration (the authors' code differs in whitespace there; we do not).
"""

from __future__ import annotations

from typing import Any

DEMONSTRATION_MARKER = "This is an example for a response to the question:"
TEACHER_INSTRUCTION = (
    "Carefully study the reference solution, then solve the problem below with your own approach."
)
MC_INSTRUCTION = (
    "Think briefly, then give your final answer on its own line as `Answer: <letter>`."
)


def format_demonstration(answer: str, rationale: str | None = None) -> str:
    """``Reasoning: <r>\\nAnswer: <a>`` when a rationale exists, else the answer alone."""
    if rationale and rationale.strip():
        return f"Reasoning: {rationale.strip()}\nAnswer: {answer.strip()}"
    return answer.strip()


def teacher_prompt_text(prompt: str, demonstration: str) -> str:
    """x~ for the demonstration-conditioned teacher (and, with a negative, the bad teacher)."""
    return (
        f"{prompt}\n\n{DEMONSTRATION_MARKER}\n{demonstration}\n\n{TEACHER_INSTRUCTION}"
    )


def chat_prompt(tokenizer: Any, text: str) -> str:
    """Apply the tokenizer's chat template to one user turn, ready for generation."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
