"""The completions y each method trains on in one optimizer step (method.md 1 and 3).

- sdft, opsd: one student sample per prompt (temperature/top_p of the config).
- gkd: a seeded fraction lambda of the step's prompts get student samples, the rest gold
  demonstrations (the count is lambda * N rounded down or up at random with the odds of its
  fractional part, so that every step's expected fraction is lambda; the chosen positions are
  drawn per step).
- sft: the gold demonstrations.
- ssd: samples of the *initial* model drawn once before training (ssd_temperature/ssd_top_p),
  then used as gold; they are stored in the run folder so a resumed run trains on the same ones.

Every sampling call gets a seed derived from (config.seed, step), so completions do not depend on
the history of the global RNG: a resumed run and an uninterrupted one sample the same tokens.

Departures from the paper: GKD's on-policy fraction is applied per step as a count of prompts
(floor or ceil of lambda * N) rather than a per-batch coin flip, which keeps every step's mixture
within one prompt of lambda. (A plain ``round`` would bias it: half-to-even sends 0.5 * 1 to 0, so a
one-prompt step would never be on-policy.)
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any, Sequence

from unisd_core.config import TrainConfig
from unisd_core.generation.base import GenerationBackend
from unisd_core.prompts import chat_prompt
from unisd_core.training.examples import Example
from unisd_core.training.sequences import gold_completion

SAMPLED_METHODS = ("sdft", "opsd")


def derived_seed(seed: int, step: int, salt: int = 0) -> int:
    """A seed for one (run seed, step, purpose), stable across processes."""
    return (seed * 1_000_003 + step * 7_919 + salt * 104_729) % (2**31 - 1)


def sample(backend: GenerationBackend, tokenizer: Any, examples: Sequence[Example], *,
           max_new_tokens: int, temperature: float, top_p: float, seed: int) -> list[list[int]]:
    """One sampled completion per example from chat(x)."""
    prompts = [chat_prompt(tokenizer, example.record.prompt) for example in examples]
    return backend.generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                            top_p=top_p, seed=seed)


def gold(tokenizer: Any, examples: Sequence[Example], end_id: int, max_new_tokens: int) -> list[list[int]]:
    """The gold demonstrations as completions."""
    return [gold_completion(tokenizer, e.record.demonstration, end_id, max_new_tokens) for e in examples]


def step_completions(config: TrainConfig, examples: Sequence[Example], *, step: int,
                     backend: GenerationBackend | None, tokenizer: Any, end_id: int,
                     ssd_samples: dict[str, list[int]] | None = None) -> tuple[list[list[int]], int]:
    """(completions aligned with ``examples``, how many of them are student samples)."""
    settings = dict(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                    top_p=config.top_p, seed=derived_seed(config.seed, step))
    if config.method in SAMPLED_METHODS:
        return sample(backend, tokenizer, examples, **settings), len(examples)
    if config.method == "sft":
        return gold(tokenizer, examples, end_id, config.max_new_tokens), 0
    if config.method == "ssd":
        if ssd_samples is None:
            raise ValueError("method 'ssd' needs its pre-drawn samples")
        return [list(ssd_samples[e.record.id]) for e in examples], 0
    if config.method == "gkd":
        rng = random.Random(derived_seed(config.seed, step, salt=1))
        count = on_policy_count(config.gkd_on_policy_fraction, len(examples), rng)
        chosen = set(rng.sample(range(len(examples)), count))
        completions = gold(tokenizer, examples, end_id, config.max_new_tokens)
        on_policy = [e for i, e in enumerate(examples) if i in chosen]
        sampled = iter(sample(backend, tokenizer, on_policy, **settings) if on_policy else [])
        return [next(sampled) if i in chosen else c for i, c in enumerate(completions)], count
    raise ValueError(f"unknown method {config.method!r}")


def on_policy_count(fraction: float, total: int, rng: random.Random) -> int:
    """floor(fraction * total), plus one with probability equal to its fractional part."""
    expected = fraction * total
    count = math.floor(expected)
    return count + int(rng.random() < expected - count)


def ssd_samples(config: TrainConfig, examples: Sequence[Example], backend: GenerationBackend,
                tokenizer: Any, path: Path) -> dict[str, list[int]]:
    """SSD's one-off samples from the initial model, read from ``path`` when already drawn."""
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("fingerprint") == config.fingerprint():
            return {key: list(value) for key, value in stored["samples"].items()}
    chunk = config.per_device_batch * config.grad_accum
    samples: dict[str, list[int]] = {}
    for index in range(0, len(examples), chunk):
        part = examples[index:index + chunk]
        drawn = sample(backend, tokenizer, part, max_new_tokens=config.max_new_tokens,
                       temperature=config.ssd_temperature, top_p=config.ssd_top_p,
                       seed=derived_seed(config.seed, index, salt=2))
        samples.update({e.record.id: ids for e, ids in zip(part, drawn)})
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"fingerprint": config.fingerprint(), "samples": samples}), encoding="utf-8")
    temporary.replace(path)
    return samples
