"""Paired bootstrap of subset values: over items and over seeds, seeded, shared across subsets.

Pairing is what makes component differences precise: every replicate draws ONE multiset of items
(or seeds) and recomputes every subset's value on it, so all subsets see the same items. A
replicate is a vector of counts; values = counts @ scores / n, one matrix product for all
replicates. Percentile intervals.

The report no longer uses these (issue 12): with 2-3 seeds a percentile bootstrap has no
small-sample correction and covered 49-90% in the planted simulation (benchmarks/RESULTS.md,
section 5); the report's intervals come from ``ablations.analysis.intervals``. They remain as the baseline rows of
``benchmarks/coverage.py`` (what the old intervals covered).
Departure from the paper: none (it names no interval method).
"""

from __future__ import annotations

import numpy as np


def resample_counts(n_units: int, n_replicates: int, seed: int) -> np.ndarray:
    """Multinomial resampling counts (replicates x units), each row summing to ``n_units``."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_replicates)


def bootstrap_values(scores_SU: np.ndarray, n_replicates: int, seed: int) -> np.ndarray:
    """Replicates of the mean over units for every subset: (subsets x units) -> (R x subsets).

    Units are items (or seeds) present for every subset; the same resample is used for all
    subsets (paired). Returns an empty (0 x subsets) array with fewer than 2 units.
    """
    n_subsets, n_units = scores_SU.shape
    if n_units < 2:
        return np.empty((0, n_subsets))
    counts_RU = resample_counts(n_units, n_replicates, seed)
    return counts_RU @ scores_SU.T / n_units


def percentile_interval(replicates_RK: np.ndarray, level: float = 0.95) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
    """Lower and upper percentile bounds per column (NaN when there are no replicates)."""
    n_columns = replicates_RK.shape[1]
    if replicates_RK.shape[0] == 0:
        return np.full(n_columns, np.nan), np.full(n_columns, np.nan)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(replicates_RK, [tail, 100.0 - tail], axis=0)
    return low, high
