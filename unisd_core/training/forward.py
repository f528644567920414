"""Teacher-forced passes that return only what the losses need: hidden states and logits at y.

A causal LM's forward computes logits at every position; at paper scale (3k-token prompts, 150k
vocabulary) that is most of the memory of a step. Here the decoder runs once, the last hidden state
(after the final norm, the input of the LM head; the feature of method.md 2.3) is gathered at the
positions predicting y, and the LM head is applied to those rows only, or (the chunked loss path,
teacher-side scores) not at all: :func:`lm_head` hands its weight to the chunked losses.

No attention mask is passed: a ForcedBatch is right-padded, so under causal attention no position
the losses read (a real token) can see a padding token, and the decoder takes its unmasked causal
path (4 rows of 300 to 700 tokens: 27% faster for tiny Qwen2 on CPU; on a GPU it lets SDPA use its
flash kernel). The hidden states at padding positions differ from a masked pass, and nothing reads
them; position ids do not depend on the mask in these families (tested).

``parameters`` lets a pass run the same module with substituted tensors (the EMA adapter of a LoRA
teacher) through ``torch.func.functional_call``, without mutating the live student, so the order
of student and teacher passes cannot corrupt the autograd graph.

Departures from the paper: none (the logits are the same numbers the full forward would give).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unisd_core.losses.divergences import softcap_logits
from unisd_core.training.sequences import ForcedBatch


def causal_lm(model: nn.Module) -> nn.Module:
    """The transformers CausalLM inside ``model`` (a PeftModel's injected base, or itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def decoder_of(model: nn.Module) -> nn.Module:
    """The decoder stack (embeddings, layers, final norm) of a CausalLM or PeftModel."""
    return causal_lm(model).get_decoder()


def completion_hidden(
    model: nn.Module, batch: ForcedBatch, parameters: dict[str, Tensor] | None = None
) -> Tensor:
    """Last hidden state (after the final norm) at the positions predicting y. -> [B,T,H].

    ``parameters``: decoder-relative names -> tensors substituted for this pass only.
    """
    decoder = decoder_of(model)
    batch = batch.to(next(decoder.parameters()).device)
    mask_BL = batch.attention_mask_BL
    if bool((mask_BL[:, 1:] > mask_BL[:, :-1]).any()):  # a 0 before a 1: not right-padded
        raise ValueError("teacher-forced rows must be right-padded (see build_forced_batch)")
    kwargs = {"input_ids": batch.input_ids_BL, "use_cache": False}
    if parameters:
        output = torch.func.functional_call(decoder, parameters, args=(), kwargs=kwargs, strict=False)
    else:
        output = decoder(**kwargs)
    hidden_BLH = output.last_hidden_state
    index_BTH = batch.positions_BT.unsqueeze(-1).expand(-1, -1, hidden_BLH.shape[-1])
    return hidden_BLH.gather(1, index_BTH)


@dataclass(frozen=True)
class LmHead:
    """What the chunked losses need of an LM head: its weight [V,H] and the final soft-cap."""

    weight_VH: Tensor
    softcap: float | None

    def logits(self, hidden_XH: Tensor) -> Tensor:
        """Full logits [..., V] (the plain path and tests; same numbers as :func:`lm_logits`)."""
        return softcap_logits(F.linear(hidden_XH, self.weight_VH), self.softcap)


def lm_head(model: nn.Module) -> LmHead:
    """The LM head of ``model`` as weight + soft-cap (the chunked losses apply it themselves)."""
    lm = causal_lm(model)
    head = lm.get_output_embeddings()
    # A LoRA-wrapped or biased head would not be just ``weight``: refuse rather than mis-score.
    if not isinstance(head, nn.Linear) or head.bias is not None:
        raise ValueError(f"chunked scoring needs a plain bias-free nn.Linear LM head, got {type(head).__name__}")
    return LmHead(head.weight, _final_softcap(lm.config))


def lm_logits(model: nn.Module, hidden_BTH: Tensor) -> Tensor:
    """The LM head on gathered hidden states, with the family's final soft-capping. -> [B,T,V]."""
    lm = causal_lm(model)
    return softcap_logits(lm.get_output_embeddings()(hidden_BTH), _final_softcap(lm.config))


def completion_logits(
    model: nn.Module, batch: ForcedBatch, parameters: dict[str, Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """(hidden [B,T,H], logits [B,T,V]) at the positions predicting y."""
    hidden_BTH = completion_hidden(model, batch, parameters)
    return hidden_BTH, lm_logits(model, hidden_BTH)


def _final_softcap(config: Any) -> float | None:
    text_config = getattr(config, "get_text_config", lambda: config)()
    value = getattr(text_config, "final_logit_softcapping", None)
    return float(value) if value else None
