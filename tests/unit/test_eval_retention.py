"""Retention metrics on cases with known answers: hand-computed JSD and log-probs, the bounds of
JSD, PPLret, paired comparisons, and a real tiny model against itself (JSD 0)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tolerances import assert_close_scaled
from evaluation.retention import (
    LN2,
    completion_logprobs,
    fraction_higher,
    fraction_lower,
    gold_fit,
    jsd_to_base,
    masked_mean,
    pplret,
    retention,
    token_jsd,
    token_logprobs,
)


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def test_two_token_jsd_matches_hand_computation() -> None:
    # Position 1: p = (1/2, 1/2), q = (1, 0); position 2: p = q = (0.9, 0.1).
    p = [[0.5, 0.5], [0.9, 0.1]]
    q = [[1.0, 0.0], [0.9, 0.1]]
    m = [[0.75, 0.25], [0.9, 0.1]]
    expected = [0.5 * kl(p[t], m[t]) + 0.5 * kl(q[t], m[t]) for t in range(2)]
    log_p = torch.tensor(p).log().unsqueeze(0)
    log_q = torch.tensor(q).log().unsqueeze(0)
    got = token_jsd(log_p, log_q)[0]
    assert got.tolist() == pytest.approx(expected, abs=1e-6)
    assert expected[0] > 0.2 and expected[1] == 0.0  # the example is not degenerate


def test_jsd_bounds_and_symmetry() -> None:
    generator = torch.Generator().manual_seed(0)
    log_p = torch.log_softmax(torch.randn(3, 5, 11, generator=generator) * 4, dim=-1)
    log_q = torch.log_softmax(torch.randn(3, 5, 11, generator=generator) * 4, dim=-1)
    values = token_jsd(log_p, log_q)
    assert values.shape == (3, 5)
    assert bool((values >= 0).all()) and bool((values <= LN2 + 1e-7).all())
    # 11-way sums of O(ln 2) terms that cancel: scaled to ln 2, not to the (small) result
    assert_close_scaled(values, token_jsd(log_q, log_p), terms=11, scale=LN2, msg="JSD symmetry")
    assert_close_scaled(token_jsd(log_p, log_p), torch.zeros(3, 5), terms=11, scale=LN2, msg="JSD(p, p)")
    disjoint_p = torch.tensor([[[0.0, -1e30]]])
    disjoint_q = torch.tensor([[[-1e30, 0.0]]])
    assert float(token_jsd(disjoint_p, disjoint_q)) == pytest.approx(LN2, abs=1e-6)


def test_token_logprobs_and_masked_mean_by_hand() -> None:
    logits = torch.tensor([[[0.0, math.log(3.0)], [math.log(4.0), 0.0]]])  # probs (1/4,3/4),(4/5,1/5)
    targets = torch.tensor([[1, 1]])
    got = token_logprobs(logits, targets)[0].tolist()
    assert got == pytest.approx([math.log(0.75), math.log(0.2)])
    mask = torch.tensor([[1, 0]])
    assert float(masked_mean(token_logprobs(logits, targets), mask)[0]) == pytest.approx(
        math.log(0.75)
    )
    assert math.isnan(float(masked_mean(torch.ones(1, 2), torch.zeros(1, 2))[0]))


def test_pplret_and_paired_fractions() -> None:
    assert pplret([-1.0, -2.0, math.nan]) == pytest.approx((math.e + math.e**2) / 2)
    a = {"x": 0.1, "y": 0.5, "z": 0.2, "only_a": 0.0}
    b = {"x": 0.2, "y": 0.4, "z": 0.2, "only_b": 9.0}
    assert fraction_lower(a, b) == pytest.approx(1 / 3)  # x lower; y higher; z tied
    assert fraction_higher(a, b) == pytest.approx(1 / 3)
    assert math.isnan(fraction_lower({"p": 1.0}, {"q": 1.0}))


@pytest.fixture(scope="module")
def tiny_model():
    from unisd_core.models.zoo import load_model_and_tokenizer

    torch.set_num_threads(1)
    return load_model_and_tokenizer("tiny-qwen2")


TERMS = 2048 + 3 * 64  # tiny-qwen2: the vocabulary's log-sum-exp after the decoder's matmuls
PROMPTS = ["What is 2 + 2?", "Name a gas at room temperature, please, briefly."]
OUTPUTS = ["Answer: 4", "Reasoning: oxygen is a gas.\nAnswer: B"]


def test_model_against_itself_has_zero_jsd(tiny_model) -> None:
    model, tokenizer = tiny_model
    values = jsd_to_base(model, model, tokenizer, PROMPTS, OUTPUTS, batch_size=2)
    assert values == pytest.approx([0.0, 0.0], abs=1e-6)
    perturbed = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in perturbed.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    moved = jsd_to_base(model, perturbed, tokenizer, PROMPTS, OUTPUTS)
    assert all(0.0 < value <= LN2 for value in moved)


def test_batched_log_probs_equal_one_by_one_and_feed_the_aggregates(tiny_model) -> None:
    model, tokenizer = tiny_model
    batched = completion_logprobs(model, tokenizer, PROMPTS, OUTPUTS, batch_size=2)
    single = [completion_logprobs(model, tokenizer, [p], [o])[0] for p, o in zip(PROMPTS, OUTPUTS)]
    for left, right in zip(batched, single):
        assert left.shape == right.shape and left.numel() > 0
        # batched (padded) vs one row: terms 2048-way log-softmax after the 64/128-wide matmuls
        assert_close_scaled(left, right, terms=TERMS, msg="batched vs single log-probs")
    kept = retention(model, tokenizer, PROMPTS, OUTPUTS)
    item_means = [float(item.mean()) for item in single]
    assert_close_scaled(kept.item_mean_logprobs, item_means, terms=TERMS, msg="item means")
    # exp(-x) carries x's absolute error as a relative one: scale by |x| * exp(-x)
    expected_perplexity = sum(math.exp(-v) for v in item_means) / 2
    assert_close_scaled(kept.perplexity, expected_perplexity, terms=TERMS,
                        scale=max(abs(v) * math.exp(-v) for v in item_means), msg="perplexity")
    fit = gold_fit(model, tokenizer, PROMPTS, OUTPUTS)
    pooled = float(torch.cat(single).mean())
    assert_close_scaled(fit.mean_logprob, pooled, terms=TERMS, msg="pooled log-prob")
    assert_close_scaled(fit.perplexity, math.exp(-pooled), terms=TERMS, scale=abs(pooled) * math.exp(-pooled),
                        msg="gold perplexity")


def test_jsd_with_a_masked_vocabulary_entry_is_finite_and_matches_the_renormalised_case() -> None:
    # p puts zero mass on the last entry (log p = -inf): 0 log 0 must count as 0, not NaN.
    log_p = torch.log(torch.tensor([[[0.5, 0.5, 0.0]]]))
    log_q = torch.log(torch.tensor([[[0.25, 0.25, 0.5]]]))
    value = token_jsd(log_p, log_q)
    expected = 0.5 * (2 * 0.5 * math.log(0.5 / 0.375)) + 0.5 * (
        2 * 0.25 * math.log(0.25 / 0.375) + 0.5 * math.log(0.5 / 0.25)
    )
    assert torch.isfinite(value).all()
    assert value.item() == pytest.approx(expected, rel=1e-6)
