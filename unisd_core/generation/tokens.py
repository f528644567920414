"""Which token ids end a completion, and where a generated row stops.

Shared by the generation backends and the training loop (kept here, the lower layer, so that
generation never imports training).

Departures from the paper: none.
"""

from __future__ import annotations

from typing import Any, Sequence


def eos_token_ids(tokenizer: Any, model: Any | None = None) -> list[int]:
    """Every id that ends a turn: the tokenizer's EOS plus the generation config's (if any)."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in [config_eos] if isinstance(config_eos, int) else list(config_eos or []):
        if int(value) not in ids:
            ids.append(int(value))
    if not ids:
        raise ValueError("the tokenizer has no EOS token; completions could not end")
    return ids


def cut_at_eos(token_ids: Sequence[int], eos_ids: Sequence[int]) -> list[int]:
    """Generated ids up to and including the first EOS (padding after it dropped)."""
    eos = set(eos_ids)
    for index, token in enumerate(token_ids):
        if int(token) in eos:
            return [int(t) for t in token_ids[: index + 1]]
    return [int(t) for t in token_ids]
