"""The generation backend interface: prompts in, completion token ids out.

The training loop samples the student's completions through this protocol so that the CPU path
(HF ``generate``) and the GPU path (vLLM) are interchangeable. ``prompts`` are full model inputs
(the chat template already applied); a returned completion is the list of generated ids up to and
including the first end-of-turn token (none if ``max_new_tokens`` ran out first). ``seed`` makes
the sampling of one call reproducible on its own, independent of any global RNG state.
``sync_weights(model)`` is called after every optimizer step that changes the student, so a backend
holding its own copy of the weights (vLLM) samples from the current policy.

Departures from the paper: none.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class GenerationBackend(Protocol):
    """Samples completions from the current student."""

    def generate(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
    ) -> list[list[int]]: ...

    def sync_weights(self, model: Any) -> None: ...


def make_backend(name: str, model: Any, tokenizer: Any) -> GenerationBackend:
    """The backend called ``name`` ("hf" or "vllm") for ``model``; vllm is imported only here."""
    if name == "hf":
        from unisd_core.generation.hf import HFGenerationBackend

        return HFGenerationBackend(model, tokenizer)
    if name == "vllm":
        from unisd_core.generation.vllm_backend import VllmGenerationBackend

        return VllmGenerationBackend(model, tokenizer)
    raise ValueError(f"unknown generation backend {name!r}; choose 'hf' or 'vllm'")
