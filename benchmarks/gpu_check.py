"""GPU check (issue 8): one bf16 self-distillation optimizer step on a random-weight model shaped
like Qwen2.5-0.5B with the real vocabulary (151936), plain loss path against chunked, side by side.

Usage on a CUDA machine: ``python benchmarks/gpu_check.py [--batches 8 16] [--steps 5]``.
Without CUDA it prints why it skips and exits 0 (``--cpu-smoke`` runs a tiny shape on the CPU
only to exercise the code; its numbers mean nothing). No downloads: the config is written here
(24 layers, hidden 896, MLP 4864, 14 heads, 2 KV heads, tied embeddings) and weights are random.

One step = LoRA student (r 64, alpha 128, on all projections, as in method.md 4; gradient
checkpointing on) forward on [prompt; completion], teacher = same weights with the adapter
disabled, forward without gradient on [teacher prompt; completion], distillation loss (forward
KL, tau 0.7, empty component set), backward, AdamW step. Random token ids stand in for sampled
completions; generation is not part of this check (the CPU step-cost benchmark covers it).
Plain path: the model's LM head gives [B,T,V] bf16 logits (only the completion positions, via
``logits_to_keep``) -> :func:`distillation_loss`. Chunked: last hidden states + head weight ->
:func:`chunked_distillation_loss`. Peak memory is ``torch.cuda.max_memory_allocated`` over the
timed steps (model, adapter and optimizer state included).

MFU counts the work the step must do, not recomputation: student forward 2 N_body + backward
(activation gradients only, the base weights are frozen) 2 N_body per token, teacher forward
2 N_body, causal attention 2 * layers * L * d per token and pass, the LM head 2 V d per completion
position and pass (student x2 for its backward); peak bf16 dense of H100/H200 SXM = 989 TFLOP/s
(``--peak-tflops`` overrides).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QWEN25_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                  rms_norm_eps=1e-6, tie_word_embeddings=True)
SMOKE = dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
             rms_norm_eps=1e-6, tie_word_embeddings=True)
PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


def build_model(shape: dict, device, seed: int):
    """Random-weight Qwen2 LM in bf16 with a LoRA adapter (r 64) on every projection."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(**shape)
    config._attn_implementation = "sdpa"
    config.use_cache = False  # training: no KV cache (gradient checkpointing refuses it anyway)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(r=64, lora_alpha=128, lora_dropout=0.05,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, lora)
    model.train()
    return model


def body_parameters(model) -> int:
    """Parameters of the transformer blocks (no embeddings, no LoRA), the N of the FLOP count."""
    return sum(p.numel() for n, p in model.named_parameters() if ".layers." in n and "lora_" not in n)


def step_flops(shape: dict, n_body: int, batch: int, student_len: int, teacher_len: int, completion: int) -> float:
    layers, d, vocab = shape["num_hidden_layers"], shape["hidden_size"], shape["vocab_size"]

    def forward(length: int) -> float:  # one forward of one sequence
        return length * (2 * n_body + 2 * layers * length * d) + completion * 2 * vocab * d

    return batch * (2 * forward(student_len) + forward(teacher_len))  # student fwd + bwd, teacher fwd


def _loss(path: str, model, student_ids, teacher_ids, completion_ids, mask, chunk_size: int):
    import torch

    from unisd_core.config import ComponentsConfig
    from unisd_core.losses.chunked import chunked_distillation_loss
    from unisd_core.losses.objective import distillation_loss

    T = completion_ids.shape[1]
    kwargs = dict(components=ComponentsConfig(), alpha=0.0, temperature=0.7)
    base = model.get_base_model()
    if path == "plain":
        student_BTV = model(input_ids=student_ids, logits_to_keep=T + 1).logits[:, :-1]
        with torch.no_grad(), model.disable_adapter():
            teacher_BTV = model(input_ids=teacher_ids, logits_to_keep=T + 1).logits[:, :-1]
        return distillation_loss(student_BTV, teacher_BTV, completion_ids, mask, **kwargs).loss
    student_BTH = base.model(input_ids=student_ids).last_hidden_state[:, -T - 1:-1]
    with torch.no_grad(), model.disable_adapter():
        teacher_BTH = base.model(input_ids=teacher_ids).last_hidden_state[:, -T - 1:-1]
    weight_VH = base.lm_head.weight
    return chunked_distillation_loss(student_BTH, weight_VH, teacher_BTH, weight_VH, completion_ids, mask,
                                     chunk_size=chunk_size, **kwargs).loss


def measure(path: str, model, initial_adapter: dict, args, batch: int, device) -> dict:
    """Warm-up then timed optimizer steps of one path, from the same adapter state and data."""
    import torch

    model.load_state_dict(initial_adapter, strict=False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-5)
    generator = torch.Generator().manual_seed(1)
    V, T = model.config.vocab_size, args.completion
    completion = torch.randint(0, V, (batch, T), generator=generator)
    student_ids = torch.cat([torch.randint(0, V, (batch, args.prompt), generator=generator), completion], 1).to(device)
    teacher_ids = torch.cat([torch.randint(0, V, (batch, args.teacher_prompt), generator=generator), completion], 1).to(device)
    completion, mask = completion.to(device), torch.ones(batch, T, dtype=torch.bool, device=device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    losses, times = [], []
    for step in range(args.warmup + args.steps):
        if step == args.warmup and device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        synchronize()
        start = time.perf_counter()
        loss = _loss(path, model, student_ids, teacher_ids, completion, mask, args.chunk_size)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
        losses.append(float(loss.detach()))
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else float("nan")
    return {"seconds": sorted(times)[len(times) // 2], "peak_gib": peak, "first_loss": losses[0]}


def _peak_tflops(args, device) -> float:
    if args.peak_tflops:
        return args.peak_tflops
    if device.type != "cuda":
        return float("nan")
    import torch

    name = torch.cuda.get_device_name(device)
    return next((value for key, value in PEAK_TFLOPS.items() if key in name), float("nan"))


def run(args) -> int:
    import torch

    from benchmarks.measure import machine_line, table

    if args.cpu_smoke:
        device, shape = torch.device("cpu"), SMOKE
    elif not torch.cuda.is_available():
        print("SKIP: CUDA is not available on this machine; gpu_check.py needs an NVIDIA GPU "
              "(use --cpu-smoke to exercise the code path on a tiny CPU shape).")
        return 0
    else:
        device, shape = torch.device("cuda"), QWEN25_05B
        torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (smoke: numbers meaningless)"
    print(f"# gpu check: {name} | torch {torch.__version__} | {machine_line()}")
    model = build_model(shape, device, args.seed)
    if args.chunk_size == 0:
        from unisd_core.losses.chunked import chunk_tokens_for_vocab

        args.chunk_size = chunk_tokens_for_vocab(shape["vocab_size"])
    initial_adapter = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
    n_body, peak = body_parameters(model), _peak_tflops(args, device)
    print(f"# body parameters {n_body / 1e6:.1f}M, vocab {shape['vocab_size']}, prompt {args.prompt}, "
          f"teacher prompt {args.teacher_prompt}, completion {args.completion}, chunk {args.chunk_size}, "
          f"peak {peak} TFLOP/s")
    rows = []
    for batch in args.batches:
        flops = step_flops(shape, n_body, batch, args.prompt + args.completion,
                           args.teacher_prompt + args.completion, args.completion)
        results = {}
        for path in args.paths:
            try:
                results[path] = measure(path, model, initial_adapter, args, batch, device)
            except torch.OutOfMemoryError as error:
                results[path] = {"error": f"OOM: {str(error)[:80]}"}
                torch.cuda.empty_cache()
        base = results.get("plain", {})
        for path, result in results.items():
            if "error" in result:
                rows.append([batch, path, result["error"], "", "", "", "", "", ""])
                continue
            tokens = batch * (args.prompt + args.completion)
            tflops = flops / result["seconds"] / 1e12
            ratio = (lambda key: result[key] / base[key] if "error" not in base and base else float("nan"))
            rows.append([batch, path, f"{result['seconds'] * 1e3:.0f}", f"{ratio('seconds'):.2f}",
                         f"{tokens / result['seconds']:.0f}", f"{tflops:.0f}", f"{tflops / peak:.3f}",
                         f"{result['peak_gib']:.2f}", f"{ratio('peak_gib'):.3f}", f"{result['first_loss']:.5f}"])
    headers = ["B", "path", "step ms (median)", "time / plain", "student tokens/s", "TFLOP/s", "MFU",
               "peak GiB", "peak / plain", "first loss"]
    print(table(headers, rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--teacher-prompt", type=int, default=384)
    parser.add_argument("--completion", type=int, default=1024)
    parser.add_argument("--paths", nargs="+", default=["plain", "chunked"], choices=["plain", "chunked"])
    parser.add_argument("--chunk-size", type=int, default=0,
                        help="tokens per chunk of the chunked path; 0: the training loop's default for the vocabulary")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peak-tflops", type=float, default=0.0)
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny shape on the CPU, only to check that the script runs")
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        args.batches, args.prompt, args.teacher_prompt, args.completion = [2], 8, 12, 16
        args.warmup, args.steps, args.chunk_size = 1, 2, 8
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
