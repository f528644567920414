"""The training loop's memory-lean loss path (issue 8): teacher-side sampled-token scores are
gathered chunk by chunk, and ``loss_path="chunked"`` gives the plain path's loss and gradients
(every component on, LoRA and full fine-tuning, a soft-capped head) without any [rows,T,V] tensor.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from tolerances import assert_close_scaled
from unisd_core.config import (
    AgreementConfig,
    ClippingConfig,
    ComponentsConfig,
    ContrastiveConfig,
    EmaConfig,
    FeatureMatchingConfig,
)
from unisd_core.losses import sampled_token_logprobs
from unisd_core.losses.chunked import chunk_tokens_for_vocab, chunked_sampled_token_logprobs
from unisd_core.losses.divergences import softcap_logits

EVERYTHING = ComponentsConfig(
    agreement=AgreementConfig(num_contexts=2, gamma=1.0), contrastive=ContrastiveConfig(weight=0.5),
    feature_matching=FeatureMatchingConfig(weight=0.1), ema=EmaConfig(every_steps=1, beta=0.5),
    clipping=ClippingConfig(mode="quantile", quantile=0.8),
)


@pytest.mark.parametrize("temperature,softcap,chunk", [(1.0, None, 5), (0.7, 3.0, 4), (0.7, None, 64)])
def test_chunked_sampled_token_logprobs_equal_the_plain_log_softmax(temperature, softcap, chunk):
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(3, 7, 8, generator=generator)
    weight = torch.randn(29, 8, generator=generator)
    ids = torch.randint(0, 29, (3, 7), generator=generator)
    expected = sampled_token_logprobs(softcap_logits(F.linear(hidden, weight), softcap), ids,
                                      temperature=temperature)
    got = chunked_sampled_token_logprobs(hidden, weight, ids, temperature=temperature, chunk_size=chunk,
                                         logit_softcap=softcap)
    # terms: the 29-way log-sum-exp after the 8-term matmul of each logit
    assert_close_scaled(got, expected, terms=29 + 8, msg="sampled-token log-probs")
    if softcap is not None:  # the cap is applied, not ignored
        uncapped = chunked_sampled_token_logprobs(hidden, weight, ids, temperature=temperature, chunk_size=chunk)
        assert (uncapped - got).abs().max() > 1e-3


def test_chunk_size_follows_the_memory_budget():
    assert chunk_tokens_for_vocab(151936) == 440  # 4 float32 [C,V] buffers in 1 GiB (closed form: 3.5 measured)
    assert chunk_tokens_for_vocab(32000) == 1024  # capped
    assert chunk_tokens_for_vocab(262144) == 256
    assert chunk_tokens_for_vocab(10**9) == 16  # floor
    assert chunk_tokens_for_vocab(151936, budget_mib=512) < chunk_tokens_for_vocab(151936)
    with pytest.raises(ValueError):
        chunk_tokens_for_vocab(0)


def _run(tiny_train_config, tiny_train_records, tiny_prepared_caches, *, model, lora, softcap=None, **over):
    from unisd_core.training.loop import prepare_run

    records = tiny_train_records(4)
    settings = dict(model=model, components=EVERYTHING, per_device_batch=2, grad_accum=2, **over)
    if not lora:
        settings["lora"] = None
    run = prepare_run(tiny_train_config(**settings), records, caches=tiny_prepared_caches(records, k=2))
    if softcap is not None:  # tiny-gemma3 is built without one; exercise the family's cap
        for module in (run.model, getattr(run.teachers, "frozen_base", None),
                       getattr(run.teachers.ema, "model", None)):
            if module is not None:
                from unisd_core.training.forward import causal_lm

                causal_lm(module).config.final_logit_softcapping = softcap
    return run


def _completions(run, generator):
    """Fixed completions of different lengths, each ending in the end-of-turn id."""
    vocab = run.model.get_output_embeddings().weight.shape[0] if not hasattr(run.model, "get_base_model") \
        else run.model.get_base_model().get_output_embeddings().weight.shape[0]
    lengths = [6, 3, 5, 4]
    return [torch.randint(10, vocab, (n - 1,), generator=generator).tolist() + [run.end_id] for n in lengths]


def _loss_and_grads(run, loss_path, completions, **config_overrides):
    from unisd_core.training.loop import accumulate_gradients
    from unisd_core.training.model_setup import trainable_parameters

    config = run.config.model_copy(update={"loss_path": loss_path, **config_overrides})
    variant = dataclasses.replace(run, config=config)
    run.optimizer.zero_grad(set_to_none=True)
    metrics = accumulate_gradients(variant, 1, run.examples[:4], completions)
    grads = [p.grad.detach().clone() for p in trainable_parameters(run.model)]
    run.optimizer.zero_grad(set_to_none=True)
    return metrics, grads


@pytest.mark.parametrize("model,lora,softcap,alpha", [
    ("tiny-qwen2", True, None, 0.0), ("tiny-qwen2", False, None, 0.0), ("tiny-gemma3", True, 5.0, 0.0),
    ("tiny-qwen2", True, None, 0.5),  # JSD: the logged forward KL is computed separately
])
def test_chunked_loop_matches_plain_loss_and_gradients(model, lora, softcap, alpha, tiny_train_config,
                                                       tiny_train_records, tiny_prepared_caches):
    run = _run(tiny_train_config, tiny_train_records, tiny_prepared_caches, model=model, lora=lora,
               softcap=softcap, alpha=alpha)
    completions = _completions(run, torch.Generator().manual_seed(0))
    plain, plain_grads = _loss_and_grads(run, "plain", completions)
    # 3 tokens per chunk: several chunks per micro-batch, one of them partial.
    chunked, chunked_grads = _loss_and_grads(run, "chunked", completions, loss_chunk_tokens=3)
    # terms: the chain of float reductions behind one gradient entry: the V-way softmax, the sum
    # over the micro-batch's tokens, and the backward through the decoder (H- and 2H-wide matmuls).
    # A tensor's tolerance scales with its own largest entry (tests/tolerances.py): a fixed
    # atol=1e-7 failed on another CPU for a 7e-4 entry of the tied embedding (issue 13).
    vocab, hidden = run.model.get_input_embeddings().weight.shape
    terms = vocab + sum(map(len, completions)) + 3 * hidden
    assert_close_scaled(chunked["loss"], plain["loss"], terms=terms, msg="loss")
    for name in ("kl", "divergence/mean", "contrastive/loss", "feature_matching/loss", "clipping/cap",
                 "agreement/disagreement_mean", "agreement/disagreement_scale"):
        if name in plain:  # O(1) per-token quantities (nats, log-prob spreads): terms <= max(1, |value|)
            assert_close_scaled(chunked[name], plain[name], terms=terms, scale=max(1.0, abs(plain[name])),
                                msg=name)
    assert len(plain_grads) == len(chunked_grads) > 0
    assert any(g.abs().max() > 0 for g in plain_grads)
    for index, (expected, got) in enumerate(zip(plain_grads, chunked_grads)):
        assert_close_scaled(got, expected, terms=terms, msg=f"gradient of trainable tensor {index}")


class _WidestVocabTensor(TorchDispatchMode):
    """Largest leading size (numel / V) of any operator result whose last axis is the vocabulary."""

    def __init__(self, head_weight_VH: torch.Tensor) -> None:
        super().__init__()
        self.vocab, self.rows = head_weight_VH.shape[0], 0
        self.weight_storage = head_weight_VH.untyped_storage().data_ptr()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for item in result if isinstance(result, (tuple, list)) else (result,):
            if (isinstance(item, torch.Tensor) and item.dim() >= 2 and item.shape[-1] == self.vocab
                    and item.untyped_storage().data_ptr() != self.weight_storage):  # not weight.T
                self.rows = max(self.rows, item.numel() // self.vocab)
        return result


@pytest.mark.parametrize("loss_path", ["chunked", "plain"])
def test_no_full_vocabulary_tensor_on_the_chunked_path(loss_path, tiny_train_config, tiny_train_records,
                                                      tiny_prepared_caches):
    """Chunked: no tensor wider than one chunk of rows over V anywhere in the micro-steps (teacher,
    K contexts, bad teacher, student). Plain: the detector does see the full logits."""
    run = _run(tiny_train_config, tiny_train_records, tiny_prepared_caches, model="tiny-qwen2", lora=True)
    completions = _completions(run, torch.Generator().manual_seed(1))
    detector = _WidestVocabTensor(run.model.get_base_model().get_output_embeddings().weight)
    with detector:
        _loss_and_grads(run, loss_path, completions, loss_chunk_tokens=3)
    if loss_path == "chunked":
        assert 0 < detector.rows <= 3
    else:
        assert detector.rows >= 2 * 6  # a [B,T,V] logits tensor (B = 2, T = longest completion)


def test_loss_path_settings_do_not_change_the_run_fingerprint(tiny_train_config):
    """Same objective to float rounding: a run may resume on the other path."""
    base = tiny_train_config()
    assert base.loss_path == "chunked"
    for update in ({"loss_path": "plain"}, {"loss_chunk_tokens": 64}, {"loss_chunk_budget_mib": 256.0}):
        assert base.model_copy(update=update).fingerprint() == base.fingerprint()
    assert base.model_copy(update={"temperature": 0.5}).fingerprint() != base.fingerprint()
    with pytest.raises(ValueError):
        tiny_train_config(loss_path="fused")
