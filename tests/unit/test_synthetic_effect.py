"""The gain interval of benchmarks/synthetic_effect.py: the report's calibrated interval (seeds x items)."""

from __future__ import annotations

import numpy as np

from benchmarks.synthetic_effect import gain_interval, pooled_gain, pooled_table, table


def test_gain_interval_mean_and_coverage() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, size=200).astype(float)
    better = np.stack([np.maximum(base, rng.integers(0, 2, size=200)) for _ in range(3)])
    gain, low, high = gain_interval(better, base)
    assert np.isclose(gain, (better - base).mean()) and 0 < low < gain < high
    same = np.stack([base, base, base])
    assert gain_interval(same, base) == (0.0, 0.0, 0.0)
    noisy = np.stack([rng.permutation(base) for _ in range(3)])
    _, low, high = gain_interval(noisy, base)
    assert low < 0 < high


def test_table_lists_base_teacher_and_each_method() -> None:
    results = {"base": [0, 1, 0, 1], "base_with_demonstration": [1, 1, 0, 1],
               "methods": {"sdft": [[1, 1, 0, 1], [0, 1, 1, 1]]}}
    text = table(results)
    assert "| base (no demonstration) | 0.500 |" in text
    assert "| base + demonstration (teacher prompt) | 0.750 |" in text
    assert "| sdft (2 seeds) | 0.750 | +0.250 [" in text


def _base_results(rng, name: str, base_rate: float, gain: float, seeds: int = 3, items: int = 300) -> dict:
    base = (rng.random(items) < base_rate).astype(float)
    trained = [(rng.random(items) < base_rate + gain).astype(float) for _ in range(seeds)]
    return {"base_name": name, "base": base.tolist(), "methods": {"sdft": [t.tolist() for t in trained]}}


def test_pooled_gain_is_the_mean_of_base_gains_and_widens_when_bases_disagree() -> None:
    """Planted truth: three bases with gains +0.30 each; then gains +0.05, +0.30, +0.55 (same
    mean). The pooled estimate is the mean of the per-base gains both times; the interval treats
    the base as a random factor, so the disagreeing bases give a wider one."""
    rng = np.random.default_rng(1)
    agree = [_base_results(rng, f"b{k}", 0.4, 0.30) for k in range(3)]
    gain, low, high = pooled_gain(agree, "sdft")
    per_base = [np.mean(r["methods"]["sdft"]) - np.mean(r["base"]) for r in agree]
    assert np.isclose(gain, np.mean(per_base))
    assert 0 < low < 0.30 < high
    disagree = [_base_results(rng, f"b{k}", 0.4, g) for k, g in enumerate((0.05, 0.30, 0.55))]
    _, low2, high2 = pooled_gain(disagree, "sdft")
    assert high2 - low2 > 2 * (high - low)
    text = pooled_table(agree)
    assert "| sdft | " in text and text.count("+0.") >= 4
