"""Sampling with vLLM on a GPU: the only module that imports ``vllm`` (design.md habit 10).

vLLM pins its own torch and ``transformers<5.21`` and cannot be installed next to the CPU core, so
it is imported lazily here and nowhere else; without it, constructing the backend raises a clear
error instead of failing deep inside the loop. The engine holds its own copy of the weights:
``sync_weights`` pushes the student's current (LoRA-merged) state dict into the engine's model.

Prompts go to the engine as token ids, tokenised exactly as the training passes tokenise chat(x)
(``add_special_tokens=False``): given text, ``LLM.generate`` tokenises with special tokens on and
prepends a second BOS to the chat text of Llama and Gemma, whose templates already start with one,
so the student would sample from a prompt it is never trained on. Each prompt gets its own seed
(``seed + index``): one shared seed would give every prompt of the batch the same random stream.

Departures from the paper: none. Known limit: this module has never run here (no vllm on these
machines, nor on the GPU machines this project was lent); the weight push uses the engine
internals of vLLM's V0 worker (``driver_worker.model_runner``) and must be checked against the
pinned vLLM before a GPU study relies on it.
"""

from __future__ import annotations

from typing import Any

from unisd_core.generation.tokens import cut_at_eos, eos_token_ids


class VllmUnavailableError(RuntimeError):
    """vllm is not installed (it lives in the optional ``gpu`` extra)."""


class VllmGenerationBackend:
    """A vLLM engine on the student's initial weights, kept in sync after optimizer steps."""

    def __init__(self, model: Any, tokenizer: Any, *, gpu_memory_utilization: float = 0.3) -> None:
        try:
            import vllm
        except ImportError as error:  # the optional extra is absent: say so plainly
            raise VllmUnavailableError(
                "generation_backend='vllm' needs the optional GPU extra (pip install '.[gpu]' with "
                "constraints-gpu.txt, on a CUDA machine); use generation_backend='hf' here"
            ) from error
        self._vllm = vllm
        self.tokenizer = tokenizer
        self.eos_ids = eos_token_ids(tokenizer, model)
        source = getattr(getattr(model, "config", None), "_name_or_path", None)
        if not source:
            raise ValueError("the vLLM backend needs a model loaded from a folder or hub id")
        self.engine = vllm.LLM(model=source, tokenizer=source, dtype="auto",
                               gpu_memory_utilization=gpu_memory_utilization, enforce_eager=True)
        self.sync_weights(model)

    def sync_weights(self, model: Any) -> None:
        """Load the student's current weights (adapter merged on the fly) into the engine."""
        merged = _merged_state_dict(model)
        runner = self.engine.llm_engine.model_executor.driver_worker.model_runner
        runner.model.load_weights(merged.items())

    def generate(self, prompts: list[str], *, max_new_tokens: int, temperature: float,
                 top_p: float, seed: int) -> list[list[int]]:
        if not prompts:
            return []
        params = [
            self._vllm.SamplingParams(
                temperature=temperature, top_p=top_p, top_k=-1, max_tokens=max_new_tokens,
                seed=seed + index, stop_token_ids=self.eos_ids,
            )
            for index in range(len(prompts))
        ]
        outputs = self.engine.generate(token_prompts(self.tokenizer, prompts), params, use_tqdm=False)
        return [cut_at_eos(list(output.outputs[0].token_ids), self.eos_ids) for output in outputs]


def token_prompts(tokenizer: Any, prompts: list[str]) -> list[dict[str, list[int]]]:
    """vLLM token prompts (``{"prompt_token_ids": ids}``) of chat-formatted texts, no special tokens
    added (the template already holds any BOS), i.e. the ids the training passes use."""
    return [{"prompt_token_ids": [int(t) for t in tokenizer(p, add_special_tokens=False)["input_ids"]]}
            for p in prompts]


def _merged_state_dict(model: Any) -> dict[str, Any]:
    """Full weights with any active LoRA adapter merged, computed out of place.

    ``merge_adapter()``/``unmerge_adapter()`` would add and subtract B A in the weights' own dtype:
    in bf16 that round trip does not restore the base weights, so every sync would nudge the
    frozen base (the teacher of the empty subset) away from the model the run started from.
    """
    get_base = getattr(model, "get_base_model", None)
    if not callable(get_base):
        return {name: tensor.detach() for name, tensor in model.state_dict().items()}
    from peft.tuners.lora import LoraLayer

    base = get_base()
    state = {name.replace(".base_layer", ""): tensor.detach()
             for name, tensor in base.state_dict().items() if "lora_" not in name}
    for module_name, module in base.named_modules():
        if not isinstance(module, LoraLayer) or module.merged or module.disable_adapters:
            continue
        weight = module.get_base_layer().weight
        merged = weight.detach().float()
        for adapter in module.active_adapters:
            if adapter in module.lora_A:
                merged = merged + module.get_delta_weight(adapter).detach().float()
        state[f"{module_name}.weight"] = merged.to(weight.dtype)
    return state
