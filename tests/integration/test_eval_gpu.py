"""GPU paths of the evaluation layer (skipped without CUDA): retention metrics on a CUDA model
agree with the CPU float32 computation, a bf16 model against itself has JSD 0, and the lm-eval
adapter runs a loaded CUDA model and a folder on ``device="cuda"``.

Run on a GPU machine: ``pytest -q -m gpu tests/integration/test_eval_gpu.py``.
"""

from __future__ import annotations

import copy

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.integration,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

PROMPTS = ["What is 2 + 2?", "Name a gas at room temperature, please, briefly."]
OUTPUTS = ["Answer: 4", "Reasoning: oxygen is a gas.\nAnswer: B"]


def test_retention_on_cuda_matches_cpu() -> None:
    from evaluation.retention import LN2, jsd_to_base, retention
    from unisd_core.models.zoo import load_model_and_tokenizer

    base_cpu, tokenizer = load_model_and_tokenizer("tiny-qwen2")
    tuned_cpu = copy.deepcopy(base_cpu)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in tuned_cpu.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    base_gpu, tuned_gpu = copy.deepcopy(base_cpu).cuda(), copy.deepcopy(tuned_cpu).cuda()

    cpu_jsd = jsd_to_base(base_cpu, tuned_cpu, tokenizer, PROMPTS, OUTPUTS)
    gpu_jsd = jsd_to_base(base_gpu, tuned_gpu, tokenizer, PROMPTS, OUTPUTS)
    assert all(0.0 < value <= LN2 for value in gpu_jsd)
    assert gpu_jsd == pytest.approx(cpu_jsd, abs=2e-3)
    cpu_kept = retention(base_cpu, tokenizer, PROMPTS, OUTPUTS)
    gpu_kept = retention(base_gpu, tokenizer, PROMPTS, OUTPUTS)
    assert gpu_kept.item_mean_logprobs == pytest.approx(cpu_kept.item_mean_logprobs, abs=2e-3)

    bf16 = copy.deepcopy(base_cpu).to(device="cuda", dtype=torch.bfloat16)
    assert jsd_to_base(bf16, bf16, tokenizer, PROMPTS, OUTPUTS) == pytest.approx([0, 0], abs=1e-6)


def test_adapter_on_cuda() -> None:
    pytest.importorskip("lm_eval")
    from evaluation.lm_eval_adapter import evaluate
    from unisd_core.models.zoo import load_model_and_tokenizer, resolve_model

    model, tokenizer = load_model_and_tokenizer("tiny-llama", device="cuda")
    in_memory = evaluate(
        model, ["scienceqa", "mbpp"], tokenizer=tokenizer, limit=2, max_new_tokens=8, batch_size=2
    )
    from_folder = evaluate(
        resolve_model("tiny-llama"), ["scienceqa", "mbpp"], limit=2, max_new_tokens=8,
        batch_size=2, device="cuda",
    )
    for results in (in_memory, from_folder):
        assert [len(result.items) for result in results.values()] == [2, 2]
        assert all(item.reason for result in results.values() for item in result.items)
    # Greedy decoding: the same model gives the same predictions both ways.
    assert [i.prediction for i in in_memory["scienceqa"].items] == [
        i.prediction for i in from_folder["scienceqa"].items
    ]
