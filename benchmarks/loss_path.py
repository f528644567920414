"""Loss-path benchmark (issue 8): peak memory and time of one forward + backward of the
distillation loss, chunked (:func:`chunked_distillation_loss`) against plain (LM head -> full
[B,T,V] logits -> :func:`distillation_loss`), at several vocabulary sizes, side by side in one run.

Usage: ``python benchmarks/loss_path.py [--vocab 32000 151936 262144] [--repeats 2]
[--chunk-sizes 0 1024]``; chunk 0 ("auto") is the training loop's default, chosen from the
vocabulary by :func:`chunk_tokens_for_vocab`.
Each (vocabulary, path, repeat) runs in a fresh interpreter (see ``measure.py`` for the memory
method). Inside a worker: inputs are built (student hidden states and LM head weight with
``requires_grad``, detached teacher hidden states and head weight, sampled ids, a full mask), the
peak mark is reset, then the loss and its backward run; ``--iterations`` passes are made and the
fastest is kept as the time, the largest peak as the memory. What is measured is exactly the part
of a micro-step that differs between the paths: LM head matmuls, log-softmaxes, divergence,
reduction and their gradients into the hidden states and the head weight (the [V,H] weight
gradient is counted in both). The transformer body is identical and left out.
``--device cuda`` runs the same comparison on a GPU (peak = ``torch.cuda.max_memory_allocated``).

Departures from the issue: none in the shape (B = 2, T = 1024); the hidden size is small (256 by
default) so that it runs on a CPU; the mask is all ones (worst case for the chunked path, which
only processes masked tokens).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measure import CudaPeakMemory, PeakMemory, emit, machine_line, median, run_worker, table, timed  # noqa: E402

SCRIPT = Path(__file__).resolve()


def _components(name: str):
    from unisd_core.config import ComponentsConfig
    from unisd_core.presets import UNISD_STAR

    return {"none": ComponentsConfig(), "unisd_star": UNISD_STAR}[name]


def _inputs(args):
    import torch

    generator = torch.Generator().manual_seed(0)
    B, T, H, V = args.batch, args.tokens, args.hidden, args.vocab

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=generator) * scale

    student_hidden = randn(B, T, H).requires_grad_(True)
    weight = randn(V, H, scale=H ** -0.5).requires_grad_(True)
    teacher_hidden = (student_hidden.detach() + randn(B, T, H, scale=0.3))
    teacher_weight = weight.detach().clone()
    ids = torch.randint(0, V, (B, T), generator=generator)
    mask = torch.ones(B, T, dtype=torch.bool)
    extras = {}
    if args.components == "unisd_star":
        extras["agreement_logprobs_KBT"] = -torch.rand(3, B, T, generator=generator) * 5
        extras["bad_teacher_logprobs_BT"] = -torch.rand(B, T, generator=generator) * 5
        extras["contrastive_usable_B"] = torch.ones(B, dtype=torch.bool)
    return student_hidden, weight, teacher_hidden, teacher_weight, ids, mask, extras


def _plain(student_hidden, weight, teacher_hidden, teacher_weight, ids, mask, extras, components):
    import torch
    import torch.nn.functional as F

    from unisd_core.losses.objective import distillation_loss

    student_logits_BTV = F.linear(student_hidden, weight)
    with torch.no_grad():
        teacher_logits_BTV = F.linear(teacher_hidden, teacher_weight)
    fm = {}
    if components.feature_matching is not None:
        fm = {"student_hidden_BTH": student_hidden, "teacher_hidden_BTH": teacher_hidden}
    return distillation_loss(student_logits_BTV, teacher_logits_BTV, ids, mask, components=components,
                             alpha=0.0, temperature=0.7, **extras, **fm)


def _chunked(student_hidden, weight, teacher_hidden, teacher_weight, ids, mask, extras, components, chunk_size):
    from unisd_core.losses.chunked import chunked_distillation_loss

    return chunked_distillation_loss(student_hidden, weight, teacher_hidden, teacher_weight, ids, mask,
                                     components=components, alpha=0.0, temperature=0.7,
                                     chunk_size=chunk_size, **extras)


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    student_hidden, weight, teacher_hidden, teacher_weight, ids, mask, extras = _inputs(args)
    Peak, synchronize = PeakMemory, None
    if args.device == "cuda":
        student_hidden, weight = (t.detach().cuda().requires_grad_(True) for t in (student_hidden, weight))
        teacher_hidden, teacher_weight, ids, mask = (t.cuda() for t in (teacher_hidden, teacher_weight, ids, mask))
        extras = {k: v.cuda() for k, v in extras.items()}
        Peak, synchronize = CudaPeakMemory, torch.cuda.synchronize
    components = _components(args.components)
    times: dict[str, list[float]] = {}
    peaks, method, loss, grad_norm = [], "", 0.0, 0.0
    for _ in range(args.iterations):
        student_hidden.grad, weight.grad = None, None
        with Peak() as peak, timed(times, "step", synchronize):
            if args.path == "plain":
                out = _plain(student_hidden, weight, teacher_hidden, teacher_weight, ids, mask, extras, components)
            else:
                out = _chunked(student_hidden, weight, teacher_hidden, teacher_weight, ids, mask, extras,
                               components, resolved_chunk(args.chunk_size, args.vocab))
            out.loss.backward()
            loss = float(out.loss.detach())
            del out
        peaks.append(peak.mib)
        method = peak.method
        grad_norm = float(torch.linalg.vector_norm(weight.grad)) + float(torch.linalg.vector_norm(student_hidden.grad))
    emit({"seconds": min(times["step"]), "peak_mib": max(peaks), "memory_method": method,
          "loss": loss, "grad_norm": grad_norm})


def resolved_chunk(chunk_size: int, vocab: int) -> int:
    """``chunk_size``, or for 0 the training loop's default (chosen from the 1 GiB budget)."""
    from unisd_core.losses.chunked import chunk_tokens_for_vocab

    return chunk_size if chunk_size > 0 else chunk_tokens_for_vocab(vocab)


def _variants(args) -> list[tuple[int, str, str, int]]:
    """(vocab, components, path, chunk_size) in the order they are run."""
    variants = []
    for vocab in args.vocab:
        for components in args.components_list:
            if components != "none" and vocab not in args.star_vocab:
                continue
            variants.append((vocab, components, "plain", None))
            variants += [(vocab, components, "chunked", size) for size in args.chunk_sizes]
    return variants


def driver(args) -> int:
    print(f"# loss path on {args.device}: B={args.batch} T={args.tokens} H={args.hidden}, forward + backward, "
          f"threads={args.threads}, repeats={args.repeats} fresh processes x {args.iterations} iterations")
    print(f"# machine: {machine_line()}")
    results: dict[tuple, list[dict]] = {}
    for repeat in range(args.repeats):
        for vocab, components, path, chunk_size in _variants(args):
            worker_args = ["--vocab", str(vocab), "--path", path, "--components", components,
                           "--chunk-size", str(chunk_size or 0), "--batch", str(args.batch),
                           "--tokens", str(args.tokens), "--hidden", str(args.hidden),
                           "--threads", str(args.threads), "--iterations", str(args.iterations),
                           "--device", args.device]
            result = run_worker(SCRIPT, worker_args)
            results.setdefault((vocab, components, path, chunk_size), []).append(result)
            status = (result["error"] + " " + result.get("stderr_tail", "")[-300:] if "error" in result
                      else f"{result['seconds']:.2f}s {result['peak_mib']:.0f} MiB")
            chunk = "-" if chunk_size is None else resolved_chunk(chunk_size, vocab)
            print(f"  run {repeat + 1}: V={vocab} {components} {path} chunk={chunk}: {status}", flush=True)
    print()
    print(_summary(args, results))
    return 0


def _summary(args, results) -> str:
    rows = []
    for (vocab, components, path, chunk_size), runs in results.items():
        good = [r for r in runs if "error" not in r]
        chunk_label = "-" if chunk_size is None else (
            f"auto {resolved_chunk(0, vocab)}" if chunk_size == 0 else chunk_size)
        if not good:
            rows.append([vocab, components, path, chunk_label, "failed: " + runs[0]["error"],
                         "", "", "", "", ""])
            continue
        plain_runs = [r for r in results.get((vocab, components, "plain", None), []) if "error" not in r]
        peak, seconds = max(r["peak_mib"] for r in good), median([r["seconds"] for r in good])
        logits_mib = args.batch * args.tokens * vocab * 4 / 2 ** 20
        if plain_runs:
            plain_peak = max(r["peak_mib"] for r in plain_runs)
            plain_seconds = median([r["seconds"] for r in plain_runs])
            memory_ratio, time_ratio = peak / plain_peak, seconds / plain_seconds
        else:
            memory_ratio = time_ratio = float("nan")
        rows.append([vocab, components, path, chunk_label, f"{peak:.0f}", f"{memory_ratio:.3f}",
                     f"{seconds:.2f}", f"{time_ratio:.2f}", f"{good[0]['loss']:.6g}", f"{logits_mib:.0f}"])
    headers = ["V", "components", "path", "chunk", "peak MiB", "peak / plain", "s (median)", "time / plain",
               "loss", "one [B,T,V] fp32 MiB"]
    method = next((r["memory_method"] for runs in results.values() for r in runs if "memory_method" in r), "?")
    return table(headers, rows) + f"\n\npeak memory method: {method} (extra resident memory over the inputs)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--vocab", type=int, nargs="+", default=[32000, 151936, 262144])
    parser.add_argument("--path", choices=["plain", "chunked"], default="plain")
    parser.add_argument("--components", default="none", choices=["none", "unisd_star"])
    parser.add_argument("--components-list", nargs="+", default=["none", "unisd_star"],
                        choices=["none", "unisd_star"])
    parser.add_argument("--star-vocab", type=int, nargs="+", default=[151936],
                        help="vocabularies at which the UniSD* loss (agreement, contrastive, FM) is also run")
    parser.add_argument("--chunk-size", type=int, default=0, help="0: the training loop's default")
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[0, 1024],
                        help="0 = the training loop's default, chosen from the vocabulary (chunk_tokens_for_vocab)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: same comparison on a GPU, peak = torch.cuda.max_memory_allocated")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if args.worker:
        args.vocab = args.vocab[0]
        worker(args)
        return 0
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
