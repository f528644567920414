"""The EMA teacher (method.md 2.4): a slowly moving average of the student used as the teacher.

Every ``every_steps`` optimizer steps: theta_T <- beta theta_T + (1 - beta) theta_S, with beta the
weight of the old teacher, always in float32.

- Under LoRA the average acts on what the student learns: an float32 copy of the adapter tensors,
  and teacher = base + EMA(adapter). The teacher pass substitutes these tensors into the live
  module for that pass only (``torch.func.functional_call``), so no second model is held.
  (The authors' code averages the frozen base with itself, so its teacher never moves.)
- Under full fine-tuning: a float32 copy of the whole model, updated in place.

Degenerate settings (tests): beta = 1 keeps the initial weights (the frozen teacher, since a fresh
LoRA adapter adds exactly zero); beta = 0 with every_steps = 1 copies the student after each step
(a live teacher).

Departures from the paper: under LoRA, "EMA(adapter)" is read as the EMA of the adapter's
parameters, the factors A and B, each averaged on its own. The teacher's weight delta is then
s * EMA(B) @ EMA(A), not EMA(s * B @ A) (the average of the deltas the student had); the two differ
by the factors' co-movement over the averaging window (zero when either factor stays put; both
give the frozen teacher at beta = 1 and the live student at beta = 0, every step). Why the
factors: the exact delta average needs a float32 [d_out, d_in] tensor per adapted module, i.e.
4 bytes per adapted base weight (about the whole model again in float32: ~28 GB at 7B), and a
teacher pass with full substituted weights; the factors cost 4 bytes per adapter parameter,
r (d_in + d_out) per module, and reuse the student's own forward. The choice is pinned by a test
(tests/unit/test_training_precision.py) and listed in docs/departures.md. The float32 full-model copy
(full fine-tuning) is a copy, not a view: at paper scale it costs 4 bytes per parameter on top of
the student.
"""

from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import Tensor, nn

from unisd_core.config import EmaConfig


@torch.no_grad()
def ema_update_(teacher: Iterable[Tensor], student: Iterable[Tensor], beta: float) -> None:
    """In place: t <- beta t + (1 - beta) s for each pair (student cast to the teacher's dtype)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    for target, source in zip(teacher, student, strict=True):
        if target.shape != source.shape:
            raise ValueError(f"EMA shape mismatch {tuple(target.shape)} vs {tuple(source.shape)}")
        target.mul_(beta).add_(source.detach().to(target.dtype), alpha=1.0 - beta)


def adapter_parameters(decoder: nn.Module) -> dict[str, nn.Parameter]:
    """The trainable LoRA tensors of a decoder, by decoder-relative name."""
    found = {name: p for name, p in decoder.named_parameters() if "lora_" in name and p.requires_grad}
    if not found:
        raise ValueError("no trainable LoRA parameters found: is the student a PeftModel?")
    return found


class EmaTeacher:
    """EMA of the adapter (``lora=True``, on ``decoder``) or of the whole model (``lora=False``)."""

    def __init__(self, config: EmaConfig, student: nn.Module, *, lora: bool, decoder: nn.Module | None = None) -> None:
        self.config = config
        self.lora = lora
        self.updates = 0
        if lora:
            if decoder is None:
                raise ValueError("a LoRA EMA teacher needs the student's decoder module")
            self._live = adapter_parameters(decoder)
            self.adapter = {name: p.detach().float().clone() for name, p in self._live.items()}
            self.model: nn.Module | None = None
        else:
            self._live = dict(student.named_parameters())
            self.model = copy.deepcopy(student).float().eval().requires_grad_(False)
            self.adapter = {}

    def after_optimizer_step(self, step: int, student: nn.Module) -> bool:
        """Average in the student after optimizer step ``step`` (1-based) when it is due."""
        if step % self.config.every_steps != 0:
            return False
        if self.lora:
            names = list(self.adapter)
            ema_update_([self.adapter[n] for n in names], [self._live[n] for n in names], self.config.beta)
        else:
            teacher = dict(self.model.named_parameters())
            names = list(self._live)
            ema_update_([teacher[n] for n in names], [self._live[n] for n in names], self.config.beta)
        self.updates += 1
        return True

    def substitute_parameters(self) -> dict[str, Tensor]:
        """LoRA: decoder-relative name -> EMA tensor in the live tensor's dtype (for a pass)."""
        if not self.lora:
            raise RuntimeError("a full-weight EMA teacher is a model; use .model")
        return {n: t.to(device=self._live[n].device, dtype=self._live[n].dtype) for n, t in self.adapter.items()}

    def drift(self) -> float:
        """L2 distance between teacher and student weights (a metric; 0 for a live teacher)."""
        pairs = (
            ((self.adapter[n], p) for n, p in self._live.items())
            if self.lora
            else zip(self.model.parameters(), self._live.values())
        )
        total = sum(float((t - s.detach().float()).pow(2).sum()) for t, s in pairs)
        return total ** 0.5

    def state_dict(self) -> dict[str, object]:
        weights = self.adapter if self.lora else self.model.state_dict()
        return {"updates": self.updates, "weights": {n: t.clone() for n, t in weights.items()}}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.updates = int(state["updates"])
        weights = state["weights"]
        if self.lora:
            missing = set(self.adapter) ^ set(weights)
            if missing:
                raise ValueError(f"EMA adapter names differ from the checkpoint: {sorted(missing)[:5]}")
            # Checkpoints load on the CPU; the EMA tensors stay where the adapter lives.
            self.adapter = {n: weights[n].to(self.adapter[n].device, torch.float32).clone() for n in self.adapter}
        else:
            self.model.load_state_dict(weights)
