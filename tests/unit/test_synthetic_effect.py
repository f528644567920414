"""The gain interval of benchmarks/synthetic_effect.py: the report's calibrated interval (seeds x items)."""

from __future__ import annotations

import numpy as np

from benchmarks.synthetic_effect import gain_interval, table


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
