"""Pretrain a tiny Qwen2 on the synthetic task, so the CPU demo starts from a base that knows it a bit.

``python -m unisd_core.models.pretrain --seed S --ship`` rebuilds the shipped base of seed S
(:mod:`unisd_core.models.shipped`; ``--out DIR`` writes anywhere, ``--check`` verifies the shipped
ones). It trains a real ``Qwen2ForCausalLM`` (hidden 96, 3 layers, 0.5M parameters, the
tiny-qwen2 tokenizer and chat template) from a seeded random init with AdamW on chat-formatted
sequences of the synthetic "largest number" task (:mod:`unisd_core.data.synthetic`, its
``pretrain`` split, disjoint from ``test``), in two phases over one warmup + cosine schedule:

1. reading (the first ``reading_steps`` = 500): teacher format only, chat(teacher_prompt_text(x,
   c)) + the gold completion, on items whose four numbers lie within +-``reading_spread`` (30)
   of each other. There the maximum is hard to see (leading digits tie), so what lowers the loss
   is reading the answer letter off the demonstration: the demonstration-conditioned teacher of
   SDFT becomes near perfect (seed 0: 100% of 200 test items by step 400);
2. rule (the remaining 400 steps): ordinary items, half in teacher format (keeps the reading),
   half with a *blind* demonstration (the letter replaced by ``?``: nothing to read, so the rule
   must be used) or, one draw in ten, the plain student prompt. The rule (find the maximum, map
   it to its letter) is learned only partly within the budget (35% greedy at the end), and in a
   state that a short fine-tuning still moves (SFT/SDFT +3 to +11 points in 40 steps on the
   three shipped seeds; seed 1's reading phase stopped at 50%: docs/synthetic.md).

Why this design (issue 14; iterations judged on the base's no-demo / with-demo accuracy and, for
the last three candidates, one SDFT/SFT seed at the demo's settings): mixed from the start, the
rule (often decided by the first digit) was learned before demonstration reading (teacher-forced
letter on 200 test items: 58% without vs 53% with the demonstration at step 400, 64% vs 83% at
500), so the teacher was never far above the student (the issue-7 base: 38.0% vs 50.0%). A
reading phase first fixes the gap (100% with the demonstration); with plain student prompts in
the rule phase the rule then stayed unlearnable by fine-tuning (36% base, SFT/SDFT +0 to +3 at lr
2e-4 to 3e-3), with a restarted schedule and 30% teacher format slightly better (SDFT +4.7, SFT
+2.7); blind demonstrations gave SDFT +7.7, SFT +9.0 (one seed) and were kept. A reading phase
*after* the rule (``reading_first=False``, restarted schedule) erased the rule, and close-number
teacher rows mixed in from the start (``close_teacher``) were too slow to learn reading to be
finished in time; both options stay, off. Wrong demonstrations (``mismatch_fraction``) left the
model near chance (issue 7) and are off.

The loss covers completion tokens only. The budget (``PretrainSettings``) is fixed once. Training
is deterministic for a fixed seed and thread count on one machine (deterministic algorithms on,
one seeded generator for the data order), but not across CPUs: hence the shipped bases.

Departures from the paper: the paper starts from real instruct models; this base exists only so
that CPU runs measure real effects (issues 7, 14). Initializer range 0.02 (the zoo's random models
use 0.1), because this model is trained.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
from pydantic import Field, model_validator
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from unisd_core.config import Frozen
from unisd_core.data.records import Record
from unisd_core.data import synthetic
from unisd_core.data.synthetic import synthetic_records
from unisd_core.models.tokenizer import VOCAB_SIZE, chat_format, train_tokenizer
from unisd_core.prompts import MC_INSTRUCTION, chat_prompt, teacher_prompt_text

# Bump when the training procedure changes (it enters the zoo's build hash).
PRETRAIN_VERSION = "2"
FAMILY = "qwen2"


class Example(NamedTuple):
    """Token ids of one pretraining item; ``teacher``/``mismatched`` are (prompt, completion)."""

    student_prompt: list[int]
    completion: list[int]
    teacher: tuple[list[int], list[int]]
    mismatched: tuple[list[int], list[int]]
    blind: tuple[list[int], list[int]]
BUILD_MARKER = "unisd_build.json"  # the zoo's marker name: present = folder complete


class PretrainSettings(Frozen):
    """Everything that decides the pretrained weights (all of it enters the build hash)."""

    seed: int = Field(0, ge=0)
    steps: int = Field(900, ge=1)  # in all, the reading phase included
    # Phase 1 (the first ``reading_steps``): teacher format only, on close numbers (+-reading_spread),
    # where the rule barely helps, so reading the letter off the demonstration is what is learned.
    reading_steps: int = Field(500, ge=0)
    reading_spread: int = Field(30, ge=2)
    restart_schedule: bool = False
    reading_first: bool = True
    close_teacher: bool = False
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(3e-3, gt=0.0)
    warmup_steps: int = Field(30, ge=0)
    weight_decay: float = Field(0.01, ge=0.0)
    teacher_fraction: float = Field(0.5, ge=0.0, le=1.0)
    mismatch_fraction: float = Field(0.0, ge=0.0, le=1.0)
    # Rule phase: share of the non-teacher draws shown with a blind demonstration (the answer
    # letter replaced by "?") instead of the plain student prompt.
    blind_fraction: float = Field(0.9, ge=0.0, le=1.0)
    pool_size: int = Field(4_000, ge=1)
    hidden_size: int = Field(96, ge=8)
    intermediate_size: int = Field(256, ge=8)
    num_hidden_layers: int = Field(3, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    num_key_value_heads: int = Field(2, ge=1)
    threads: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _phases_fit(self) -> "PretrainSettings":
        if self.reading_steps > self.steps:
            raise ValueError(f"reading_steps ({self.reading_steps}) exceeds steps ({self.steps})")
        return self


def data_spec() -> dict[str, Any]:
    """What decides the pretraining text besides the settings: generator and prompt templates."""
    return {"generator": synthetic.generator_spec(), "mc_instruction": MC_INSTRUCTION,
            "teacher_template": teacher_prompt_text("{x}", "{c}")}


def model_config(settings: PretrainSettings) -> Qwen2Config:
    """The Qwen2 config of the pretrained base (token ids of the tiny-qwen2 chat format)."""
    spec = chat_format(FAMILY)
    return Qwen2Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=settings.hidden_size,
        intermediate_size=settings.intermediate_size,
        num_hidden_layers=settings.num_hidden_layers,
        num_attention_heads=settings.num_attention_heads,
        num_key_value_heads=settings.num_key_value_heads,
        max_position_embeddings=2048,
        initializer_range=0.02,
        tie_word_embeddings=True,
        eos_token_id=spec.token_id(spec.end_of_turn_token),
        pad_token_id=spec.token_id(spec.pad_token),
        bos_token_id=None,
    )


def encode_examples(tokenizer: Any, records: list[Record], *, seed: int = 0) -> list[Example]:
    """Per record: student prompt ids, gold completion ids (with end of turn), and the teacher
    prompt + completion for the gold demonstration and for one wrong option's demonstration
    (chosen with ``seed``)."""
    end_id = tokenizer.convert_tokens_to_ids(chat_format(FAMILY).end_of_turn_token)
    rng = random.Random(seed)
    wrong = [wrong_demonstration(r, rng) for r in records]
    encode = lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"]  # noqa: E731
    student = encode([chat_prompt(tokenizer, r.prompt) for r in records])
    gold = encode([r.demonstration for r in records])
    teacher = encode([chat_prompt(tokenizer, teacher_prompt_text(r.prompt, r.demonstration))
                      for r in records])
    mismatched = encode([chat_prompt(tokenizer, teacher_prompt_text(r.prompt, w))
                         for r, w in zip(records, wrong)])
    wrong_ids = encode(wrong)
    blind = encode([chat_prompt(tokenizer, teacher_prompt_text(r.prompt, blind_demonstration(r)))
                    for r in records])
    return [
        Example(list(s), list(g) + [end_id], (list(t), list(g) + [end_id]),
                (list(m), list(w) + [end_id]), (list(b), list(g) + [end_id]))
        for s, g, t, m, w, b in zip(student, gold, teacher, mismatched, wrong_ids, blind)
    ]


def blind_demonstration(record: Record) -> str:
    """The gold demonstration with its answer letter replaced by ``?`` (nothing to read off)."""
    return record.demonstration.replace(f"Answer: {record.answer}", "Answer: ?")


def wrong_demonstration(record: Record, rng: random.Random) -> str:
    """The demonstration of a wrong option of a synthetic record, in the gold's exact layout."""
    letters, choices = record.metadata["valid_letters"], record.metadata["choices"]
    gold_index = letters.index(record.answer)
    index = rng.choice([i for i in range(len(letters)) if i != gold_index])
    return record.demonstration.replace(choices[gold_index], choices[index], 1).replace(
        f"Answer: {record.answer}", f"Answer: {letters[index]}")


def make_batch(
    rows: list[tuple[list[int], list[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids_BL, attention_mask_BL, labels_BL) from (prompt, completion) pairs;
    labels are -100 on prompt and padding, so the loss covers completion tokens only."""
    length = max(len(p) + len(c) for p, c in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), length), dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    for row, (prompt, completion) in enumerate(rows):
        ids = prompt + completion
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        labels[row, len(prompt) : len(ids)] = torch.tensor(completion)
    return input_ids, attention, labels


def completion_loss(model: Qwen2ForCausalLM, input_ids_BL: torch.Tensor,
                    attention_mask_BL: torch.Tensor, labels_BL: torch.Tensor) -> torch.Tensor:
    """Mean token NLL of the completion tokens. The LM head runs only at the positions that
    predict a completion token (most positions are prompt), which is most of the saving on CPU."""
    hidden_BLH = model.model(input_ids=input_ids_BL, attention_mask=attention_mask_BL).last_hidden_state
    targets_BL = labels_BL[:, 1:]
    predicting = targets_BL != -100
    logits_NV = model.lm_head(hidden_BLH[:, :-1][predicting])
    return torch.nn.functional.cross_entropy(logits_NV.float(), targets_BL[predicting])


def phase_of(step: int, settings: PretrainSettings) -> tuple[bool, int, int]:
    """(reading phase?, step within its schedule, length of that schedule) of ``step``."""
    rule_steps = settings.steps - settings.reading_steps
    reading = (step < settings.reading_steps if settings.reading_first
               else step >= rule_steps)
    if not settings.restart_schedule or not settings.reading_steps:
        return reading, step, settings.steps
    first = settings.reading_steps if settings.reading_first else rule_steps
    return (reading, step, first) if step < first else (reading, step - first, settings.steps - first)


def learning_rate_at(step: int, settings: PretrainSettings) -> float:
    """Linear warmup, then cosine decay to 10% of the peak; with ``restart_schedule`` each phase
    has a schedule of its own (warmup and cosine again from its first step)."""
    _, step, total = phase_of(step, settings)
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, total - settings.warmup_steps)
    cosine = 0.5 * (1.0 + torch.cos(torch.tensor(progress * torch.pi)).item())
    return settings.learning_rate * (0.1 + 0.9 * cosine)


def pretrain(settings: PretrainSettings, *, log_every: int = 0,
             on_step: Callable[[int, Any], None] | None = None) -> tuple[Qwen2ForCausalLM, Any, dict]:
    """Train the base from ``settings.seed``; returns (model in eval mode, tokenizer, stats).
    ``on_step(step, model)`` runs after each optimizer step (probes; it must not touch the RNGs)."""
    started = time.perf_counter()
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(settings.threads)
    torch.use_deterministic_algorithms(True)
    try:
        tokenizer = train_tokenizer(FAMILY)
        records = synthetic_records("pretrain", settings.pool_size, seed=settings.seed,
                                    shuffle_seed=settings.seed)
        examples = encode_examples(tokenizer, records, seed=settings.seed)
        close = synthetic_records("pretrain", settings.pool_size, seed=settings.seed,
                                  shuffle_seed=settings.seed, spread=settings.reading_spread)
        reading = encode_examples(tokenizer, close, seed=settings.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            model = Qwen2ForCausalLM(model_config(settings))
            losses = _train_loop(model, (reading, examples), settings, tokenizer.pad_token_id,
                                 log_every, on_step)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    model.eval()
    stats = {"seconds": round(time.perf_counter() - started, 1), "final_loss": losses[-1],
             "parameters": sum(p.numel() for p in model.parameters())}
    return model, tokenizer, stats


def _train_loop(model: Qwen2ForCausalLM, pools: tuple[list, list], settings: PretrainSettings,
                pad_id: int, log_every: int, on_step: Callable[[int, Any], None] | None) -> list[float]:
    """Seeded AdamW steps over one warmup + cosine schedule. The first ``reading_steps`` draw
    close-number examples in teacher format only; the rest draw the ordinary examples, each in
    student or teacher format (and, in teacher format, with the gold or a wrong demonstration)
    by seeded coin flips."""
    rng = random.Random(settings.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate,
                                  weight_decay=settings.weight_decay, betas=(0.9, 0.98))
    model.train()
    losses: list[float] = []
    for step in range(settings.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, settings)
        reading = phase_of(step, settings)[0]
        rows = [_draw_row(pools, rng, settings, reading) for _ in range(settings.batch_size)]
        input_ids, attention, labels = make_batch(rows, pad_id)
        loss = completion_loss(model, input_ids, attention, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        if log_every and (step % log_every == 0 or step == settings.steps - 1):
            print(f"step {step:5d}  loss {losses[-1]:.4f}  lr {learning_rate_at(step, settings):.2e}",
                  flush=True)
        if on_step is not None:
            on_step(step, model)
    return losses


def _draw_row(pools: tuple[list, list], rng: random.Random, settings: PretrainSettings,
              reading: bool) -> tuple[list[int], list[int]]:
    """One (prompt, completion): a close-number teacher-format row in the reading phase; else an
    ordinary example in student format, or (``teacher_fraction``) a teacher-format row, drawn
    from the close-number pool when ``close_teacher`` is set."""
    close, ordinary = pools
    if reading:
        return close[rng.randrange(len(close))].teacher
    example = ordinary[rng.randrange(len(ordinary))]
    if rng.random() >= settings.teacher_fraction:
        if settings.blind_fraction and rng.random() < settings.blind_fraction:
            return example.blind
        return example.student_prompt, example.completion
    if settings.close_teacher:
        example = close[rng.randrange(len(close))]
    return example.mismatched if rng.random() < settings.mismatch_fraction else example.teacher


def save_pretrained_base(model: Qwen2ForCausalLM, tokenizer: Any, folder: Path,
                         settings: PretrainSettings, stats: dict, *, marker: dict | None = None) -> Path:
    """Save weights, tokenizer, a generation config stopping at end of turn, and the marker file
    (written last: its presence means the folder is complete)."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = chat_format(FAMILY)
    model.generation_config = GenerationConfig(
        eos_token_id=spec.token_id(spec.end_of_turn_token),
        pad_token_id=spec.token_id(spec.pad_token),
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    payload = {**(marker or {}), "settings": settings.model_dump(), "stats": stats}
    (folder / BUILD_MARKER).write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return folder


def ship_base(seed: int) -> Path:
    """Pretrain the base of ``seed`` with the default settings and ship it into the package
    (folder + manifest entry with every file's SHA-256; :mod:`unisd_core.models.shipped`)."""
    import platform

    import tokenizers
    import transformers

    from unisd_core.models import shipped

    settings = PretrainSettings(seed=seed)
    name = shipped.base_name(seed)
    model, tokenizer, stats = pretrain(settings, log_every=100)
    entry = {"seed": seed, "pretrain_version": PRETRAIN_VERSION, "settings": settings.model_dump(),
             "data": data_spec(), "stats": stats,
             "built_with": {"torch": torch.__version__, "transformers": transformers.__version__,
                            "tokenizers": tokenizers.__version__, "machine": platform.machine(),
                            "cpu_capability": torch.backends.cpu.get_cpu_capability()}}
    marker = {"name": name, "family": FAMILY, "seed": seed}
    return shipped.ship(name, lambda folder: save_pretrained_base(
        model, tokenizer, folder, settings, stats, marker=marker), entry)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unisd_core.models.pretrain",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="override the step budget")
    parser.add_argument("--out", type=Path, default=None, help="folder to write")
    parser.add_argument("--ship", action="store_true",
                        help="rebuild the shipped base of --seed (default settings) in the package")
    parser.add_argument("--check", action="store_true",
                        help="verify every shipped base against its SHA-256 manifest")
    args = parser.parse_args(argv)
    if args.check:
        from unisd_core.models import shipped

        for name in shipped.SHIPPED_SEEDS:
            print(f"{name}: ok {shipped.check_base(name)}")
        return 0
    overrides = {"seed": args.seed, **({"steps": args.steps} if args.steps else {})}
    settings = PretrainSettings(**overrides)
    if args.ship:
        if args.steps or args.out:
            parser.error("--ship builds the default settings into the package; drop --steps/--out")
        print(ship_base(args.seed))
        return 0
    if args.out is None:
        parser.error("give --out DIR (or --ship to rebuild a shipped base)")
    model, tokenizer, stats = pretrain(settings, log_every=50)
    save_pretrained_base(model, tokenizer, args.out, settings, stats)
    print(json.dumps(stats), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
