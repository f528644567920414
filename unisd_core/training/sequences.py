"""Token layout of teacher-forced passes: [prompt; completion] rows and the positions predicting y.

Every pass of a micro-step (student on chat(x) + y, teacher on chat(x~) + y, the K agreement
contexts, the bad teacher) scores the *same* completion tokens y under a different prompt. Rows are
right-padded, so positions count from 0 in every row and no position ids are needed; the position
that predicts y_t in row b is ``len(prompt_b) - 1 + t`` (the one-position shift lives here and
nowhere else). The loss mask covers the generated tokens, the final EOS included (method.md 1).

Departures from the paper: none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from unisd_core.generation.tokens import cut_at_eos, eos_token_ids  # noqa: F401 (re-exported)
from unisd_core.prompts import chat_prompt


@dataclass(frozen=True)
class ForcedBatch:
    """Right-padded rows [prompt; completion] and the index of each completion token's predictor.

    ``input_ids_BL``/``attention_mask_BL``: the model input. ``positions_BT[b, t]``: position in
    row b whose output predicts ``completion_ids_BT[b, t]``. ``mask_BT``: 1.0 on real completion
    tokens, 0.0 on padding (padding positions are clamped to a valid index and masked).
    """

    input_ids_BL: Tensor
    attention_mask_BL: Tensor
    positions_BT: Tensor
    completion_ids_BT: Tensor
    mask_BT: Tensor

    @property
    def num_rows(self) -> int:
        return int(self.input_ids_BL.shape[0])

    def to(self, device: Any) -> "ForcedBatch":
        """The same batch on ``device`` (a no-op when already there)."""
        return ForcedBatch(*(t.to(device) for t in (
            self.input_ids_BL, self.attention_mask_BL, self.positions_BT,
            self.completion_ids_BT, self.mask_BT)))


def encode_chat(tokenizer: Any, text: str) -> list[int]:
    """Token ids of chat(text) with the generation prompt; the template carries any BOS."""
    return list(tokenizer(chat_prompt(tokenizer, text), add_special_tokens=False)["input_ids"])


def gold_completion(tokenizer: Any, text: str, end_id: int, max_tokens: int) -> list[int]:
    """A gold demonstration as a completion: its tokens then the end-of-turn id.

    A demonstration longer than ``max_tokens`` is cut to ``max_tokens`` tokens *without* the end
    token, as a sampled completion that ran out of budget would be (a cut text must not teach
    stopping mid-sentence).
    """
    ids = [int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"]]
    return ids[:max_tokens] if len(ids) >= max_tokens else ids + [int(end_id)]


def end_of_turn_id(tokenizer: Any, eos_ids: Sequence[int]) -> int:
    """The id the chat template puts right after an assistant message (if it is an EOS id).

    Qwen/Llama instruct templates end a turn with their EOS; Gemma ends it with
    ``<end_of_turn>``, which its generation config lists among the EOS ids while the tokenizer's
    EOS is ``<eos>``. Falls back to the first EOS id.
    """
    marker = "\u2063unisd-end-probe\u2063"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}], tokenize=False
        )
    except Exception:  # a template without assistant turns: nothing to learn from it
        return int(eos_ids[0])
    if marker not in text:
        return int(eos_ids[0])
    suffix = text.split(marker, 1)[1]
    following = tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix else []
    for token in following[:3]:
        if int(token) in set(int(e) for e in eos_ids):
            return int(token)
    return int(eos_ids[0])


def build_forced_batch(
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    pad_id: int,
) -> ForcedBatch:
    """Right-padded [prompt_b; completion_b] rows. B prompts and B completions -> ForcedBatch.

    T = the longest completion (at least 1, so an empty completion gives an all-masked row).
    """
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
    if any(len(prompt) == 0 for prompt in prompt_ids):
        raise ValueError("an empty prompt has no position to predict the first completion token")
    rows = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids)]
    length = max(len(row) for row in rows)
    steps = max(1, max(len(c) for c in completion_ids))
    batch = len(rows)
    input_ids = torch.full((batch, length), int(pad_id), dtype=torch.long)
    attention = torch.zeros((batch, length), dtype=torch.long)
    positions = torch.zeros((batch, steps), dtype=torch.long)
    targets = torch.full((batch, steps), int(pad_id), dtype=torch.long)
    mask = torch.zeros((batch, steps), dtype=torch.float32)
    for b, (prompt, completion) in enumerate(zip(prompt_ids, completion_ids)):
        input_ids[b, : len(rows[b])] = torch.tensor(rows[b], dtype=torch.long)
        attention[b, : len(rows[b])] = 1
        start = len(prompt) - 1
        positions[b] = torch.clamp(torch.arange(steps) + start, max=len(rows[b]) - 1)
        if completion:
            targets[b, : len(completion)] = torch.tensor(list(completion), dtype=torch.long)
            mask[b, : len(completion)] = 1.0
    return ForcedBatch(input_ids, attention, positions, targets, mask)


def stack_forced_batches(batches: Sequence[ForcedBatch], pad_id: int) -> ForcedBatch:
    """Concatenate batches along B (re-padding L and T) so that one forward pass serves all."""
    length = max(int(b.input_ids_BL.shape[1]) for b in batches)
    steps = max(int(b.positions_BT.shape[1]) for b in batches)

    def pad(tensor: Tensor, width: int, value: float) -> Tensor:
        extra = width - int(tensor.shape[1])
        return torch.nn.functional.pad(tensor, (0, extra), value=value) if extra else tensor

    return ForcedBatch(
        torch.cat([pad(b.input_ids_BL, length, pad_id) for b in batches]),
        torch.cat([pad(b.attention_mask_BL, length, 0) for b in batches]),
        torch.cat([pad(b.positions_BT, steps, 0) for b in batches]),
        torch.cat([pad(b.completion_ids_BT, steps, pad_id) for b in batches]),
        torch.cat([pad(b.mask_BT, steps, 0.0) for b in batches]),
    )
