"""The shared float tolerance (tests/tolerances.py): passes reordering noise, fails real changes."""

from __future__ import annotations

import math

import pytest
import torch

from tolerances import assert_close_scaled, close_ratio, scaled_atol


def test_reordered_float32_sums_pass_and_a_real_change_fails() -> None:
    generator = torch.Generator().manual_seed(0)
    terms_NV = torch.randn(64, 4096, generator=generator)
    exact = terms_NV.double().sum(-1)
    blocked = terms_NV.view(64, 64, 64).sum(-1).sum(-1)  # another order, as another kernel would
    assert not torch.equal(blocked, terms_NV.sum(-1))  # the orders do round differently
    assert_close_scaled(blocked, exact, terms=4096)
    assert_close_scaled(terms_NV.sum(-1), blocked, terms=4096)
    assert close_ratio(blocked * 1.001, exact, terms=4096) > 3  # a gradient scaled by 1.001
    with pytest.raises(AssertionError, match="x the tolerance"):
        assert_close_scaled(blocked * 1.001, exact, terms=4096, msg="scaled")


def test_a_near_zero_entry_is_judged_against_the_tensor_scale() -> None:
    # issue 13: an entry of 7e-4 off by 2e-7 (relative 2.7e-4) in a tensor whose largest entry is
    # large: rounding, not a bug. A purely relative tolerance fails it; the scaled one does not.
    expected = torch.tensor([0.3, -0.2, 7.3e-4])
    got = expected + torch.tensor([0.0, 0.0, 1.98e-7])
    assert_close_scaled(got, expected, terms=2048)
    assert not torch.allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_special_values_and_shapes_must_match() -> None:
    assert_close_scaled(torch.tensor([1.0, math.nan, math.inf]), torch.tensor([1.0, math.nan, math.inf]), terms=1)
    with pytest.raises(AssertionError):
        assert_close_scaled(torch.tensor([1.0, math.nan]), torch.tensor([1.0, 2.0]), terms=1)
    with pytest.raises(AssertionError):
        assert_close_scaled(torch.tensor([1.0, math.inf]), torch.tensor([1.0, -math.inf]), terms=1)
    with pytest.raises(AssertionError, match="shapes"):
        assert_close_scaled(torch.zeros(2), torch.zeros(3), terms=1)
    assert_close_scaled(0.0, 0.0, terms=1)  # both zero: exact
    with pytest.raises(AssertionError):
        assert_close_scaled(torch.zeros(2), torch.tensor([0.0, 1e-30]), terms=1, scale=0.0)


def test_the_bound_is_k_eps_scale_sqrt_terms() -> None:
    eps = torch.finfo(torch.float32).eps
    assert scaled_atol([2.0, -4.0], [0.0, 1.0], terms=100) == pytest.approx(16 * eps * 4.0 * 10)
    assert scaled_atol(1.0, 1.0, terms=4, k=2, dtype=torch.bfloat16) == pytest.approx(2 * 2**-7 * 2)
    with pytest.raises(ValueError):
        scaled_atol(1.0, 1.0, terms=0)
