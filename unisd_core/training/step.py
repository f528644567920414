"""One micro-step (forward passes, loss, backward) for each kind of method (method.md 2.6).

Order of a distillation micro-step: teacher-side passes (teacher + bad teacher stacked, the K
agreement contexts in one batched pass, all without gradient) -> student forward -> per-token
divergence -> clip -> agreement weights -> normalise -> + lambda_c L_con -> + lambda_fm L_fm
(the composition itself lives in :func:`unisd_core.losses.distillation_loss`) -> backward of
loss * scale. Teacher passes run before the student's only to free their activations first; they
are independent of it. SFT and SSD have no teacher: token NLL of the completion.

Memory: every pass stops at the last hidden state. Teacher-side scores that only need the sampled
token (K agreement contexts at tau 1, bad teacher at tau) are gathered chunk by chunk from the
hidden states and the LM head, never as [rows,T,V]. ``config.loss_path`` picks the divergence:
"chunked" (default) calls :func:`chunked_distillation_loss` on the student and teacher hidden
states, so no full-vocabulary tensor exists in the step; "plain" builds full student and teacher
logits and calls :func:`distillation_loss` (the reference; same loss and gradients to rounding).

Departures from the paper: none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from unisd_core.config import TrainConfig
from unisd_core.losses import LossOutput, chunked_distillation_loss, distillation_loss, sft_loss, token_divergence
from unisd_core.losses.chunked import chunk_tokens_for_vocab, chunked_sampled_token_logprobs, chunked_token_divergences
from unisd_core.losses.reductions import masked_mean
from unisd_core.training.examples import Example
from unisd_core.training.forward import completion_hidden, completion_logits, lm_head, lm_logits
from unisd_core.training.sequences import ForcedBatch, build_forced_batch
from unisd_core.training.teachers import PassOutput, TeacherModels


@dataclass(frozen=True)
class MicroBatch:
    """Examples and their completions (aligned)."""

    examples: Sequence[Example]
    completions: Sequence[Sequence[int]]


def divergence_alpha(config: TrainConfig) -> float:
    """GKD uses its own generalized-JSD beta; everything else the config's alpha."""
    return config.gkd_beta if config.method == "gkd" else config.alpha


def sft_micro_step(config: TrainConfig, student: nn.Module, micro: MicroBatch, *, pad_id: int,
                   scale: float) -> LossOutput:
    """Token NLL of the completions given chat(x); backward of loss * scale."""
    batch = build_forced_batch([e.student_prompt_ids for e in micro.examples], micro.completions,
                               pad_id).to(student_device(student))
    _, logits_BTV = completion_logits(student, batch)
    output = sft_loss(logits_BTV, batch.completion_ids_BT, batch.mask_BT, normalizer=config.normalizer)
    (output.loss * scale).backward()
    return output


def _teacher_side(config: TrainConfig, teachers: TeacherModels, micro: MicroBatch, pad_id: int):
    """Teacher, bad-teacher and agreement passes. -> (teacher, bad or None, usable [B], contexts)."""
    examples, completions = micro.examples, micro.completions
    device = student_device(teachers.student)
    teacher_batch = build_forced_batch([e.teacher_prompt_ids for e in examples], completions, pad_id).to(device)
    usable = [i for i, e in enumerate(examples) if e.negative_prompt_ids is not None]
    teacher_side = [teacher_batch]
    if config.components.contrastive is not None and usable:
        teacher_side.append(build_forced_batch(
            [examples[i].negative_prompt_ids for i in usable], [completions[i] for i in usable], pad_id).to(device))
    context_batches: list[ForcedBatch] = []
    if config.components.agreement is not None:
        for k in range(config.components.agreement.num_contexts):
            context_batches.append(build_forced_batch(
                [e.context_prompt_ids[k] for e in examples], completions, pad_id).to(device))
    teacher_outputs, context_outputs = teachers.run(teacher_side, context_batches, pad_id)
    bad = teacher_outputs[1] if len(teacher_outputs) > 1 else None
    return teacher_batch, teacher_outputs[0], bad, usable, context_outputs


def loss_chunk_tokens(config: TrainConfig, vocab_size: int) -> int:
    """Tokens per chunk: the config's, or chosen from its memory budget and the vocabulary."""
    if config.loss_chunk_tokens is not None:
        return config.loss_chunk_tokens
    return chunk_tokens_for_vocab(vocab_size, budget_mib=config.loss_chunk_budget_mib)


def _bad_teacher_logprobs(bad: PassOutput | None, usable: list[int], batch: ForcedBatch,
                          temperature: float, chunk: int) -> tuple[Tensor, Tensor]:
    """Bad-teacher sampled-token log-probs [B,T] (0 where unusable) and the usable mask [B]."""
    rows, steps = batch.completion_ids_BT.shape
    device = batch.completion_ids_BT.device
    logprobs_BT = torch.zeros((rows, steps), dtype=torch.float32, device=device)
    usable_B = torch.zeros(rows, dtype=torch.bool, device=device)
    if bad is not None:
        index = torch.tensor(usable, dtype=torch.long, device=device)
        width = int(bad.hidden_RTH.shape[1])
        logprobs_BT[index, :width] = pass_logprobs(bad, batch.completion_ids_BT[index, :width],
                                                   temperature=temperature, chunk=chunk)
        usable_B[index] = True
    return logprobs_BT, usable_B


def pass_logprobs(output: PassOutput, token_ids_BT: Tensor, *, temperature: float, chunk: int) -> Tensor:
    """Sampled-token log-probs [B,T] of a teacher-side pass, chunk by chunk (no [B,T,V] tensor)."""
    return chunked_sampled_token_logprobs(output.hidden_RTH, output.head.weight_VH, token_ids_BT,
                                          temperature=temperature, chunk_size=chunk,
                                          logit_softcap=output.head.softcap)


def distillation_micro_step(config: TrainConfig, student: nn.Module, teachers: TeacherModels,
                            micro: MicroBatch, *, pad_id: int, scale: float) -> LossOutput:
    """Self-distillation micro-step with the enabled components; backward of loss * scale."""
    components = config.components
    teacher_batch, teacher, bad, usable, contexts = _teacher_side(config, teachers, micro, pad_id)
    chunk = loss_chunk_tokens(config, int(teacher.head.weight_VH.shape[0]))
    ids_BT = teacher_batch.completion_ids_BT
    agreement_KBT = None
    if components.agreement is not None:  # scored at tau = 1 (method.md 2.1)
        agreement_KBT = torch.stack([pass_logprobs(c, ids_BT, temperature=1.0, chunk=chunk) for c in contexts])
    bad_BT, usable_B = (None, None)
    if components.contrastive is not None:
        bad_BT, usable_B = _bad_teacher_logprobs(bad, usable, teacher_batch, config.temperature, chunk)
    student_batch = build_forced_batch([e.student_prompt_ids for e in micro.examples], micro.completions,
                                       pad_id).to(student_device(student))
    student_hidden_BTH = completion_hidden(student, student_batch)
    kwargs = dict(components=components, alpha=divergence_alpha(config), temperature=config.temperature,
                  normalizer=config.normalizer, agreement_logprobs_KBT=agreement_KBT,
                  bad_teacher_logprobs_BT=bad_BT, contrastive_usable_B=usable_B)
    if config.loss_path == "chunked":
        output = _chunked_loss(config, student, student_hidden_BTH, teacher, student_batch, chunk, kwargs)
    else:
        output = _plain_loss(config, student, student_hidden_BTH, teacher, student_batch, kwargs)
    (output.loss * scale).backward()
    if components.contrastive is not None:
        output.metrics["contrastive/usable_rows"] = float(len(usable))
    return output


def _plain_loss(config: TrainConfig, student: nn.Module, student_hidden_BTH: Tensor, teacher: PassOutput,
                batch: ForcedBatch, kwargs: dict) -> LossOutput:
    """Full [B,T,V] student and teacher logits, :func:`distillation_loss` (the reference path)."""
    matching = config.components.feature_matching is not None
    student_logits_BTV = lm_logits(student, student_hidden_BTH)
    teacher_logits_BTV = teacher.logits_RTV
    output = distillation_loss(
        student_logits_BTV, teacher_logits_BTV, batch.completion_ids_BT, batch.mask_BT,
        student_hidden_BTH=student_hidden_BTH if matching else None,
        teacher_hidden_BTH=teacher.hidden_RTH if matching else None, **kwargs)
    if divergence_alpha(config) == 0.0 and "divergence/mean" in output.metrics:
        output.metrics["kl"] = output.metrics["divergence/mean"]
    else:
        with torch.no_grad():
            divergence_BT = token_divergence(student_logits_BTV, teacher_logits_BTV, alpha=0.0,
                                             temperature=config.temperature)
            output.metrics["kl"] = float(masked_mean(divergence_BT, batch.mask_BT))
    return output


def _chunked_loss(config: TrainConfig, student: nn.Module, student_hidden_BTH: Tensor, teacher: PassOutput,
                  batch: ForcedBatch, chunk: int, kwargs: dict) -> LossOutput:
    """Same loss and gradients from hidden states and head weights, ``chunk`` tokens at a time."""
    head = lm_head(student)
    output = chunked_distillation_loss(
        student_hidden_BTH, head.weight_VH, teacher.hidden_RTH, teacher.head.weight_VH,
        batch.completion_ids_BT, batch.mask_BT, chunk_size=chunk, logit_softcap=head.softcap, **kwargs)
    if divergence_alpha(config) == 0.0 and "divergence/mean" in output.metrics:
        output.metrics["kl"] = output.metrics["divergence/mean"]
    else:  # the logged forward KL of a JSD / reverse-KL run, also chunked
        mask = batch.mask_BT.bool()
        divergence_N = chunked_token_divergences(
            student_hidden_BTH.detach()[mask], head.weight_VH.detach(), teacher.hidden_RTH[mask],
            teacher.head.weight_VH.detach(), alpha=0.0, temperature=config.temperature,
            chunk_size=chunk, logit_softcap=teacher.head.softcap)
        output.metrics["kl"] = float(divergence_N.sum()) / max(1, divergence_N.numel())
    return output


def micro_step(config: TrainConfig, student: nn.Module, teachers: TeacherModels | None,
               micro: MicroBatch, *, pad_id: int, scale: float) -> LossOutput:
    """Dispatch on the method: teacherless NLL (sft, ssd) or distillation (sdft, gkd, opsd)."""
    if config.method in ("sft", "ssd"):
        return sft_micro_step(config, student, micro, pad_id=pad_id, scale=scale)
    return distillation_micro_step(config, student, teachers, micro, pad_id=pad_id, scale=scale)


def split_micro_batches(examples: Sequence[Example], completions: Sequence[Sequence[int]],
                        size: int, *, group_by_length: bool = False) -> list[MicroBatch]:
    """Consecutive chunks of ``size`` (the last may be smaller). With ``group_by_length`` the
    step's examples are first ordered by completion length, longest first (stable), so that each
    micro-batch pads to a length close to its rows' own (``TrainConfig.group_by_length``)."""
    if group_by_length:
        order = sorted(range(len(examples)), key=lambda i: -len(completions[i]))
        examples, completions = [examples[i] for i in order], [completions[i] for i in order]
    return [MicroBatch(examples[i:i + size], completions[i:i + size]) for i in range(0, len(examples), size)]


def combine_metrics(outputs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean over micro-batches of each metric (``tokens`` and counts summed, maxima maxed)."""
    summed = {"tokens", "contrastive/usable", "contrastive/usable_rows"}
    maxed = {"divergence/max"}
    combined: dict[str, float] = {}
    for name in sorted({n for output in outputs for n in output}):
        values = [float(output[name]) for output in outputs if name in output]
        combined[name] = (sum(values) if name in summed else max(values) if name in maxed
                          else sum(values) / len(values))
    return combined


def student_device(student: nn.Module) -> Any:
    return next(student.parameters()).device
