"""Sampling with HF ``generate`` on the live student (the CPU backend; also fine on one GPU).

Sampling is temperature + nucleus over the *full* vocabulary: ``top_k`` is forced to 0 (HF's
default of 50 would silently truncate the student's distribution, which the paper does not do).
Each call draws from a forked RNG seeded with ``seed``, so the completions depend only on
(weights, prompts, settings, seed) and the global RNG (dropout, data order) is left untouched;
this is what makes a resumed run sample the same completions as an uninterrupted one.

transformers 5 fills every generation field the caller leaves unset from the *model's*
``generation_config`` (``_prepare_generation_config``), and released instruct checkpoints ship
sampling defaults there (Qwen2.5-*-Instruct: ``repetition_penalty`` 1.05, ``top_k`` 20; Gemma-3-it:
``top_k`` 64). A repetition penalty, an n-gram ban or a minimum length would silently change the
distribution the student samples from, so each call runs with a neutral model generation config
(restored afterwards): only the settings written here shape the samples.

Departures from the paper: none.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from transformers import GenerationConfig

from unisd_core.generation.tokens import cut_at_eos, eos_token_ids


class HFGenerationBackend:
    """Batched left-padded ``generate`` on the model it holds (the live student, no copy)."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids = eos_token_ids(tokenizer, model)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.eos_ids[0])

    def sync_weights(self, model: Any) -> None:
        """The backend samples from the object it holds, so syncing is re-pointing it."""
        self.model = model

    @torch.no_grad()
    def generate(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
    ) -> list[list[int]]:
        if not prompts:
            return []
        encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        input_ids, attention = _left_pad(encoded, self.pad_id)
        config = GenerationConfig(
            do_sample=True, temperature=float(temperature), top_p=float(top_p), top_k=0,
            max_new_tokens=int(max_new_tokens), eos_token_id=self.eos_ids, pad_token_id=self.pad_id,
        )
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()  # no dropout while sampling the policy
        try:
            with neutral_generation_defaults(self.model), \
                    torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
                torch.manual_seed(int(seed))
                output = self.model.generate(
                    input_ids=input_ids.to(device), attention_mask=attention.to(device),
                    generation_config=config,
                )
        finally:
            self.model.train(was_training)
        new_tokens = output[:, input_ids.shape[1]:].tolist()
        return [cut_at_eos(row, self.eos_ids) for row in new_tokens]


@contextlib.contextmanager
def neutral_generation_defaults(model: Any) -> Iterator[None]:
    """Run with a blank ``generation_config`` on the CausalLM (a PeftModel's too), then restore it."""
    get_base = getattr(model, "get_base_model", None)
    causal_lm = get_base() if callable(get_base) else model
    saved = causal_lm.generation_config
    causal_lm.generation_config = GenerationConfig()
    try:
        yield
    finally:
        causal_lm.generation_config = saved


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), length), dtype=torch.long)
    for b, row in enumerate(rows):
        if row:
            input_ids[b, length - len(row):] = torch.tensor(row, dtype=torch.long)
            attention[b, length - len(row):] = 1
    return input_ids, attention
