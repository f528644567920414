"""The no-gradient passes of a micro-step: teacher, K agreement contexts and bad teacher.

Which weights each pass uses (method.md 1, 2.1, 2.2, 2.4):
- the frozen base: the student with its LoRA adapter disabled, or (full fine-tuning) a frozen copy
  taken before the first step;
- the teacher: the frozen base, or the EMA teacher when that component is on;
- the agreement contexts always score with the frozen base (at tau = 1);
- the bad teacher uses the teacher's weights with the negative in the demonstration slot.

Passes that share weights are stacked into one forward (teacher + bad teacher, and the K contexts
too when the teacher is the frozen base); the K contexts always go through one batched pass.
All passes run in eval mode (no dropout) under ``torch.no_grad`` and stop at the last hidden
state; the LM head is applied later, chunk by chunk (or in full on the plain loss path).

Departures from the paper: none.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor, nn

from unisd_core.components.ema_teacher import EmaTeacher
from unisd_core.config import TrainConfig
from unisd_core.training.forward import LmHead, completion_hidden, decoder_of, lm_head
from unisd_core.training.sequences import ForcedBatch, stack_forced_batches


@dataclass(frozen=True)
class PassOutput:
    """Detached last hidden states [R,T,H] of R stacked rows and the LM head that scores them.

    No logits are kept: the chunked losses and :func:`chunked_sampled_token_logprobs` apply the
    head chunk by chunk; ``logits_RTV`` builds the full tensor only for the plain loss path.
    """

    hidden_RTH: Tensor
    head: LmHead

    @property
    def logits_RTV(self) -> Tensor:
        with torch.no_grad():
            return LmHead(self.head.weight_VH.detach(), self.head.softcap).logits(self.hidden_RTH)


class TeacherModels:
    """Owns the frozen base copy (full FT) and the EMA teacher, and runs the teacher-side passes."""

    def __init__(self, config: TrainConfig, student: nn.Module, *, lora: bool) -> None:
        self.lora = lora
        self.student = student
        components = config.components
        self.ema = (
            EmaTeacher(components.ema, student, lora=lora, decoder=decoder_of(student) if lora else None)
            if components.ema is not None else None
        )
        needs_base = self.ema is None or components.agreement is not None
        # Under LoRA the base is the student with its adapter off: no copy is needed.
        self.frozen_base = (
            copy.deepcopy(student).eval().requires_grad_(False) if (needs_base and not lora) else None
        )

    @property
    def teacher_is_base(self) -> bool:
        return self.ema is None

    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        was_training = self.student.training
        self.student.eval()
        try:
            yield
        finally:
            self.student.train(was_training)

    @torch.no_grad()
    def base_pass(self, batch: ForcedBatch) -> PassOutput:
        """The frozen base model on ``batch``."""
        if not self.lora:
            return PassOutput(completion_hidden(self.frozen_base, batch), lm_head(self.frozen_base))
        with self._eval_mode(), self.student.disable_adapter():
            return PassOutput(completion_hidden(self.student, batch), lm_head(self.student))

    @torch.no_grad()
    def teacher_pass(self, batch: ForcedBatch) -> PassOutput:
        """The teacher (EMA or frozen base) on ``batch``."""
        if self.ema is None:
            return self.base_pass(batch)
        if not self.lora:
            return PassOutput(completion_hidden(self.ema.model, batch), lm_head(self.ema.model))
        with self._eval_mode():  # the adapter is not on the LM head: the base head scores
            return PassOutput(completion_hidden(self.student, batch, self.ema.substitute_parameters()),
                              lm_head(self.student))

    def run(self, teacher_batches: list[ForcedBatch], base_batches: list[ForcedBatch],
            pad_id: int) -> tuple[list[PassOutput], list[PassOutput]]:
        """Teacher-weight batches and base-weight batches, each group in as few passes as allowed.

        Returns the outputs split back per input batch, in order.
        """
        if self.teacher_is_base:
            outputs = _stacked(self.base_pass, teacher_batches + base_batches, pad_id)
            return outputs[: len(teacher_batches)], outputs[len(teacher_batches):]
        return (_stacked(self.teacher_pass, teacher_batches, pad_id),
                _stacked(self.base_pass, base_batches, pad_id))

    def after_optimizer_step(self, step: int) -> bool:
        return self.ema.after_optimizer_step(step, self.student) if self.ema is not None else False


def _stacked(run_pass, batches: list[ForcedBatch], pad_id: int) -> list[PassOutput]:
    """One forward over the concatenation of ``batches``; outputs cut back per batch (T trimmed)."""
    if not batches:
        return []
    output = run_pass(stack_forced_batches(batches, pad_id))
    pieces, start = [], 0
    for batch in batches:
        rows, steps = batch.num_rows, int(batch.positions_BT.shape[1])
        pieces.append(PassOutput(output.hidden_RTH[start:start + rows, :steps], output.head))
        start += rows
    return pieces
