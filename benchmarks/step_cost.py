"""Step-cost benchmark (issue 8): time and peak memory of one optimizer step (generation included)
and of its loss side alone (teacher passes + student forward + loss + backward, no generation),
for each single component and for UniSD*, against the empty subset, on the tiny families; plus
the loss side that the token counts predict, so that waste is visible.

Usage: ``python benchmarks/step_cost.py [--families tiny-qwen2 tiny-llama tiny-gemma3] [--repeats 2]``.
Each family runs in a fresh interpreter (``--repeats`` times) through the training loop's own
functions (``prepare_run``, ``optimizer_step``, ``accumulate_gradients``): nothing is
re-implemented here. Per family process:

1. ``prepare_run`` for every subset on the first ``--records`` CoS-E sample training records (LoRA
   r 64, the paper's default; per-device batch ``--batch`` x grad_accum 2; ``--new-tokens``
   sampled tokens), and the step-1 completions of each (the student is the same in every subset
   then, so all subsets see the same completions).
2. Loss side: ``accumulate_gradients`` (teacher-side passes, student forward, loss, backward of
   both micro-batches; gradients dropped, weights unchanged) in ``--rounds`` interleaved rounds
   after a warm-up round: each round times every subset once, so a change in the load of this
   shared machine hits all subsets alike.
3. Per-token cost, calibrated in every round (on the first subset's run): the first student
   micro-batch, forward without gradient (eval mode) and forward + backward (a logsumexp loss on
   its logits), divided by its padded token count. Prediction = fb_cost x student tokens +
   fwd_cost x teacher-side tokens (teacher, bad teacher, K agreement contexts), real (unpadded)
   tokens; a second prediction uses the padded tokens the loop's passes process. The loss math,
   the EMA parameter substitution and Python overhead are what the predictions leave out.
   A length-aware pair of predictions (also per round) prices every row at the per-token cost
   measured at its own length: at tiny widths (hidden 64) attention, quadratic in the length,
   is a large share of a pass, so a teacher-side row (demonstration + x + y) costs more per
   token than a student row (x + y). Bare passes of each kind (student forward + backward,
   no-gradient forward with the adapter on, the same with it off: the frozen base) are timed on
   a grid of lengths spanning every row and pass length of the step, with as many rows as make
   the student micro-batch's token count, and interpolated linearly (:func:`length_costs`,
   :func:`predict`).
4. ``--rounds`` full optimizer steps per subset, interleaved the same way (``step_s`` and
   ``generation_s`` as the loop reports them), with the peak memory around each.

Times are medians over rounds and processes; every ratio is the median of same-round ratios
(a subset against the empty subset timed in the same round; the loss side against the prediction
calibrated in the same round), which cancels most of the drift of a shared machine's load. Peaks
are the largest seen.

Caches: agreement contexts come from :func:`build_agreement_contexts` with random donors (same
layout as retrieval donors: a donor example then x; no embedding model needed); the negative of
each record is its own demonstration with a wrong answer letter, so bad-teacher prompts have the
length real negatives have. Neither needs the tiny model to generate (its output is noise).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measure import PeakMemory, emit, machine_line, median, run_worker, table, timed  # noqa: E402

SCRIPT = Path(__file__).resolve()
SUBSETS = ("none", "agreement", "contrastive", "feature_matching", "ema", "clipping", "unisd_star")


def components_for(subset: str):
    from unisd_core.config import ComponentsConfig
    from unisd_core.presets import UNISD_STAR, component_subset

    if subset == "none":
        return ComponentsConfig()
    if subset == "unisd_star":
        return UNISD_STAR
    return component_subset([subset])


def wrong_demonstration(record) -> str:
    """The record's demonstration with its answer letter replaced by the next valid one."""
    letters = record.metadata.get("valid_letters") or ["A", "B"]
    answer = record.answer.strip()
    wrong = letters[(letters.index(answer) + 1) % len(letters)] if answer in letters else letters[0]
    lines = record.demonstration.rstrip().splitlines()
    return "\n".join(lines[:-1] + [f"Answer: {wrong}"])


def build_caches(records, num_contexts: int):
    from unisd_core.components.contexts import build_agreement_contexts
    from unisd_core.components.prepared import PreparedCaches
    from unisd_core.config import AgreementConfig

    contexts = build_agreement_contexts(
        records, config=AgreementConfig(context_source="random", num_contexts=num_contexts), seed=0)
    return PreparedCaches(agreement_contexts=contexts, negatives={r.id: wrong_demonstration(r) for r in records})


@dataclass(frozen=True)
class PassShape:
    """One forward pass of a micro-step, by its weights and its rows' real lengths.

    ``kind``: "student" (forward + backward, adapter on), "adapter" (no-gradient forward with the
    adapter's weights: the EMA teacher of a LoRA run) or "base" (no-gradient forward of the frozen
    base: adapter off). The pass runs its rows padded to the longest one.
    """

    kind: str
    lengths: tuple[int, ...]

    @property
    def padded(self) -> int:
        return len(self.lengths) * max(self.lengths)


def pass_shapes(config, examples, completions) -> list[PassShape]:
    """The passes of one optimizer step's micro-steps, grouped as ``unisd_core.training`` groups
    them (per micro-batch: the student; teacher + bad teacher + K contexts stacked into one pass
    when the teacher is the frozen base, else teacher + bad teacher in one pass with the EMA
    weights and the K contexts in another with the base's). Mirrors ``training.step._teacher_side``
    and ``TeacherModels.run`` by lengths only."""
    from unisd_core.training.step import split_micro_batches

    components, shapes = config.components, []
    for micro in split_micro_batches(examples, completions, config.per_device_batch,
                                     group_by_length=config.group_by_length):
        part = list(zip(micro.examples, micro.completions))
        shapes.append(PassShape("student", tuple(len(e.student_prompt_ids) + len(c) for e, c in part)))
        teacher = [len(e.teacher_prompt_ids) + len(c) for e, c in part]
        if components.contrastive is not None:
            teacher += [len(e.negative_prompt_ids) + len(c) for e, c in part if e.negative_prompt_ids is not None]
        contexts = []
        if components.agreement is not None:
            contexts = [len(ctx) + len(c) for e, c in part for ctx in e.context_prompt_ids]
        if components.ema is None:
            shapes.append(PassShape("base", tuple(teacher + contexts)))
        else:
            shapes.append(PassShape("adapter", tuple(teacher)))
            if contexts:
                shapes.append(PassShape("base", tuple(contexts)))
    return shapes


def token_counts(config, examples, completions) -> dict[str, int]:
    """Real (unpadded) tokens of each pass of one optimizer step's micro-steps."""
    counts = {"student": 0, "teacher_side": 0}
    for shape in pass_shapes(config, examples, completions):
        counts["student" if shape.kind == "student" else "teacher_side"] += sum(shape.lengths)
    return counts


def padded_token_counts(config, examples, completions) -> dict[str, int]:
    """Tokens the forward passes actually process, padding included (see :func:`pass_shapes`)."""
    counts = {"student_padded": 0, "teacher_side_padded": 0}
    for shape in pass_shapes(config, examples, completions):
        counts["student_padded" if shape.kind == "student" else "teacher_side_padded"] += shape.padded
    return counts


def length_grid(shapes: list[PassShape], points: int = 6) -> list[int]:
    """Lengths at which to calibrate: evenly spaced over every row and padded length needed."""
    needed = [n for shape in shapes for n in (*shape.lengths, max(shape.lengths))]
    low, high = min(needed), max(needed)
    return sorted({round(low + (high - low) * i / (points - 1)) for i in range(points)})


def interpolate(curve: list[tuple[int, float]], length: float) -> float:
    """Piecewise-linear cost per token at ``length`` from (length, cost) points (clamped ends)."""
    if length <= curve[0][0]:
        return curve[0][1]
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if length <= x1:
            return y0 + (y1 - y0) * (length - x0) / (x1 - x0)
    return curve[-1][1]


def predict(shapes: list[PassShape], curves: dict[str, list[tuple[int, float]]]) -> tuple[float, float]:
    """Length-aware token-count predictions of a loss side: (real tokens: each row's tokens x the
    per-token cost at its own length; padded: each pass's rows x longest x the cost at that length)."""
    real = padded = 0.0
    for shape in shapes:
        curve, longest = curves[shape.kind], max(shape.lengths)
        real += sum(n * interpolate(curve, n) for n in shape.lengths)
        padded += shape.padded * interpolate(curve, longest)
    return real, padded


def time_pass(run, batch, kind: str) -> float:
    """Seconds of one bare pass over ``batch``: "student" = forward + backward of a logsumexp loss
    on the logits in train mode (gradients dropped); "adapter" / "base" = ``completion_logits``
    without gradient in eval mode, with the LoRA adapter on / off."""
    import torch

    from unisd_core.training.forward import completion_logits

    model, times = run.model, {}
    if kind == "student":
        model.train()
        with timed(times, kind):
            _, logits = completion_logits(model, batch)
            logits.float().logsumexp(-1).mean().backward()
        run.optimizer.zero_grad(set_to_none=True)
        return times[kind][0]
    model.eval()
    adapter_off = model.disable_adapter() if kind == "base" else contextlib.nullcontext()
    with torch.no_grad(), adapter_off, timed(times, kind):
        completion_logits(model, batch)
    model.train()
    return times[kind][0]


def length_costs(run, grid: list[int], completion_tokens: int, batch_tokens: int) -> dict[str, list[tuple[int, float]]]:
    """Seconds per token of a bare pass (:func:`time_pass`), per kind and length, one timed call
    after a warm-up: rows of ``length`` tokens (the last ``completion_tokens`` of them scored, as in
    the loop's passes), as many rows as make about ``batch_tokens`` tokens (the student
    micro-batch's size), random token ids, no padding."""
    import torch

    from unisd_core.training.sequences import build_forced_batch

    vocab = int(run.model.get_input_embeddings().weight.shape[0])
    generator = torch.Generator().manual_seed(0)
    curves: dict[str, list[tuple[int, float]]] = {"student": [], "adapter": [], "base": []}
    for length in grid:
        rows, completion = max(1, round(batch_tokens / length)), min(completion_tokens, length - 1)
        ids = torch.randint(3, vocab, (rows, length), generator=generator).tolist()
        batch = build_forced_batch([r[:length - completion] for r in ids], [r[length - completion:] for r in ids],
                                   run.pad_id)
        for kind in curves:
            seconds = [time_pass(run, batch, kind) for _ in range(2)][-1]  # the first is a warm-up
            curves[kind].append((length, seconds / (rows * length)))
    return curves


def per_token_costs(run, examples, completions, rounds: int) -> tuple[float, float]:
    """(forward-only, forward+backward) seconds per padded token of the first student micro-batch
    (fastest of ``rounds`` after a warm-up; forward with the adapter on, as the student's)."""
    from unisd_core.training.sequences import build_forced_batch

    size = run.config.per_device_batch
    batch = build_forced_batch([e.student_prompt_ids for e in examples[:size]], completions[:size], run.pad_id)
    tokens = batch.input_ids_BL.numel()
    forward = [time_pass(run, batch, "adapter") for _ in range(rounds + 1)][1:]
    train = [time_pass(run, batch, "student") for _ in range(rounds + 1)][1:]
    return min(forward) / tokens, min(train) / tokens


def _prepare(args, records, subset: str):
    from unisd_core.config import LoraSettings, TrainConfig
    from unisd_core.training.completions import step_completions
    from unisd_core.training.loop import prepare_run

    components = components_for(subset)
    config = TrainConfig(model=args.family, components=components, per_device_batch=args.batch,
                         grad_accum=2, max_new_tokens=args.new_tokens, max_steps=args.rounds + 2,
                         lora=LoraSettings(), learning_rate=1e-4, warmup_ratio=0.0, checkpoint_every=1000,
                         loss_path=args.loss_path, group_by_length=args.group_by_length)
    num_contexts = components.agreement.num_contexts if components.agreement is not None else 3
    run = prepare_run(config, records, caches=build_caches(records, num_contexts), device="cpu")
    examples = run.examples_for_step(1)
    started = time.perf_counter()
    completions, _ = step_completions(config, examples, step=1, backend=run.backend, tokenizer=run.tokenizer,
                                      end_id=run.end_id, ssd_samples=None)
    return run, examples, completions, time.perf_counter() - started


def worker(args) -> None:
    """All subsets of one family in this process, timed in interleaved rounds (each round
    calibrates the per-token cost once and times every subset once), so that a change in the
    machine's load hits the subsets and the prediction of the same round alike."""
    import torch

    from unisd_core.data.datasets import load_records
    from unisd_core.training.loop import accumulate_gradients, optimizer_step

    torch.set_num_threads(args.threads)
    records = load_records("cose", "train")[: args.records]
    prepared = {subset: _prepare(args, records, subset) for subset in args.subsets}
    first = prepared[args.subsets[0]]
    counts = {subset: {**token_counts(run.config, examples, completions),
                       **padded_token_counts(run.config, examples, completions)}
              for subset, (run, examples, completions, _) in prepared.items()}
    shapes = {subset: pass_shapes(run.config, examples, completions)
              for subset, (run, examples, completions, _) in prepared.items()}
    grid = length_grid([shape for subset_shapes in shapes.values() for shape in subset_shapes])
    student_tokens = first[0].config.per_device_batch * max(shapes[args.subsets[0]][0].lengths)
    series: dict[str, dict[str, list[float]]] = {subset: {} for subset in prepared}
    for round_index in range(args.rounds + 1):  # round 0 warms every subset up, untimed
        forward_cost, train_cost = per_token_costs(first[0], first[1], first[2], 1)
        curves = length_costs(first[0], grid, args.new_tokens, student_tokens)
        for subset, (run, examples, completions, _) in prepared.items():
            with PeakMemory() as peak:
                started = time.perf_counter()
                accumulate_gradients(run, 1, examples, completions)
                elapsed = time.perf_counter() - started
            run.optimizer.zero_grad(set_to_none=True)
            if round_index:
                count = counts[subset]
                predicted = train_cost * count["student"] + forward_cost * count["teacher_side"]
                padded = train_cost * count["student_padded"] + forward_cost * count["teacher_side_padded"]
                by_length, by_length_padded = predict(shapes[subset], curves)
                for key, value in (("loss_side_s", elapsed), ("predicted_s", predicted),
                                   ("predicted_padded_s", padded), ("predicted_by_length_s", by_length),
                                   ("predicted_by_length_padded_s", by_length_padded),
                                   ("loss_peak_mib", peak.mib)):
                    series[subset].setdefault(key, []).append(value)
    for step in range(1, args.rounds + 1):
        for subset, (run, *_rest) in prepared.items():
            with PeakMemory() as peak:
                values = optimizer_step(run, step)
            for key, value in (("step_s", values["step_s"]), ("generation_s", values["generation_s"]),
                               ("completion_length", values["completion_length_mean"]), ("step_peak_mib", peak.mib)):
                series[subset].setdefault(key, []).append(value)
    emit({"series": series, "counts": counts, "memory_method": peak.method,
          "calibration_lengths": grid, "last_curves": curves})


def _paired_ratio(runs: list[dict], subset: str, key: str, base_subset: str | None, base_key: str | None = None):
    """Median over (process, round) of value / the same round's base value (or the same
    subset's ``base_key`` when ``base_subset`` is None)."""
    ratios = []
    for run in runs:
        values = run["series"][subset][key]
        bases = run["series"][base_subset or subset][base_key or key]
        ratios += [v / b for v, b in zip(values, bases) if b > 0]
    return median(ratios) if ratios else float("nan")


def _optional_ratio(runs: list[dict], subset: str, key: str) -> str:
    """Loss side / a prediction, or n/a for runs recorded before that prediction existed."""
    if key not in runs[0]["series"][subset]:
        return "n/a"
    return f"{_paired_ratio(runs, subset, 'loss_side_s', None, key):.2f}"


def _pooled(runs: list[dict], subset: str, key: str, how=median) -> float:
    return how([v for run in runs for v in run["series"][subset][key]])


def summary(results: dict[str, list[dict]], subsets: list[str]) -> str:
    rows = []
    for family, all_runs in results.items():
        runs = [r for r in all_runs if "error" not in r]
        for subset in subsets:
            if not runs:
                rows.append([family, subset, "failed"] + [""] * 14)
                continue
            count = runs[0]["counts"][subset]
            rows.append([
                family, subset, f"{_pooled(runs, subset, 'step_s'):.2f}",
                f"{_paired_ratio(runs, subset, 'step_s', 'none'):.2f}",
                f"{_pooled(runs, subset, 'generation_s'):.2f}", f"{_pooled(runs, subset, 'loss_side_s'):.3f}",
                f"{_paired_ratio(runs, subset, 'loss_side_s', 'none'):.2f}",
                f"{_pooled(runs, subset, 'predicted_s'):.3f}",
                f"{_paired_ratio(runs, subset, 'loss_side_s', None, 'predicted_s'):.2f}",
                f"{_paired_ratio(runs, subset, 'loss_side_s', None, 'predicted_padded_s'):.2f}"
                if "predicted_padded_s" in runs[0]["series"][subset] else "n/a",
                _optional_ratio(runs, subset, "predicted_by_length_s"),
                _optional_ratio(runs, subset, "predicted_by_length_padded_s"),
                f"{_pooled(runs, subset, 'step_peak_mib', max):.0f}",
                f"{_pooled(runs, subset, 'step_peak_mib', max) / max(_pooled(runs, 'none', 'step_peak_mib', max), 1e-9):.2f}",
                f"{_pooled(runs, subset, 'loss_peak_mib', max):.0f}",
                f"{count['student']}/{count['teacher_side']}",
                f"{count.get('student_padded', 0)}/{count.get('teacher_side_padded', 0)}",
            ])
    headers = ["family", "subset", "step s (gen incl.)", "step / empty", "gen s", "loss side s",
               "loss / empty", "token-count prediction s", "loss / prediction", "loss / prediction on padded tokens",
               "loss / length-aware prediction", "loss / length-aware prediction on padded tokens",
               "step peak MiB", "step peak / empty", "loss peak MiB", "tokens student/teacher-side",
               "padded tokens student/teacher-side"]
    return table(headers, rows)


def driver(args) -> int:
    print(f"# step cost: families {args.families}, {args.records} CoS-E records, batch {args.batch} x accum 2, "
          f"{args.new_tokens} new tokens, LoRA r 64, loss path {args.loss_path}, group by length {args.group_by_length}, threads={args.threads}; per family {args.repeats} fresh "
          f"process(es), each timing all subsets in {args.rounds} interleaved rounds; times = medians, "
          f"ratios = medians of same-round ratios")
    print(f"# machine: {machine_line()}")
    results: dict[str, list[dict]] = {}
    for repeat in range(args.repeats):
        for family in args.families:
            worker_args = ["--family", family, "--subsets", *args.subsets, "--records", str(args.records),
                           "--new-tokens", str(args.new_tokens), "--rounds", str(args.rounds),
                           "--batch", str(args.batch), "--threads", str(args.threads),
                           "--loss-path", args.loss_path, *(["--group-by-length"] if args.group_by_length else [])]
            result = run_worker(SCRIPT, worker_args, timeout_s=1800)
            results.setdefault(family, []).append(result)
            if "error" in result:
                print(f"  run {repeat + 1}: {family}: {result['error']} {result.get('stderr_tail', '')[-600:]}")
                continue
            print(f"  run {repeat + 1}: {family}", flush=True)
            for subset, series in result["series"].items():
                lengths = series["completion_length"]
                print(f"    {subset}: step {median(series['step_s']):.2f}s loss {median(series['loss_side_s']):.3f}s "
                      f"pred {median(series['predicted_s']):.3f}s "
                      f"length-aware {median(series['predicted_by_length_s']):.3f}s peak {max(series['step_peak_mib']):.0f} MiB, "
                      f"step completion length {min(lengths):.0f}-{max(lengths):.0f}", flush=True)
    print()
    print(summary(results, args.subsets))
    print("\npeak memory: extra resident memory over the state before the step (VmHWM reset; all "
          "subsets of a family share the process, so this is each step's own extra memory)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--families", nargs="+", default=["tiny-qwen2", "tiny-llama", "tiny-gemma3"])
    parser.add_argument("--subsets", nargs="+", default=list(SUBSETS), choices=SUBSETS)
    parser.add_argument("--family", default="tiny-qwen2")
    parser.add_argument("--records", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4, help="per-device batch (grad_accum is 2)")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--loss-path", choices=["plain", "chunked"], default="chunked",
                        help="TrainConfig.loss_path of every subset (the loop's default: chunked)")
    parser.add_argument("--group-by-length", action="store_true",
                        help="TrainConfig.group_by_length of every subset (default: off, as the loop)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
