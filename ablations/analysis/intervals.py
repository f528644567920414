"""Confidence intervals for linear contrasts of run scores: seeds x items, both sources of noise.

What is estimated. Every number the report puts an interval on (a main effect, a Shapley value,
an interaction index, a gain over the base) is a linear contrast ``sum_S w_S v(S)`` of subset
values, and the truth it targets is defined over the POPULATION of training seeds and test items:
a new seed, a new draw of items, the same contrast. Two sources of noise therefore enter: the
run-to-run noise of training (a seed moves every item of a run together) and the sampling of
items (a component may help some items more than others).

Method: a t-interval over seed-level contrasts, plus an item-heterogeneity term. Per seed s the
contrast of the item scores is ``C[s, i] = sum_S w_S x[S, s, i]``; the estimate is the mean of C
over seeds and items (so estimate and interval come from the same data). Reading C as a crossed
seeds x items layout ``C = theta + a_s + b_i + e_si`` (a: run noise, b: item heterogeneity of the
contrast, e: per-run item noise such as a correct/incorrect flip), the variance of the grand mean
is ``s_a^2/S + s_b^2/I + s_e^2/(S I)``. We estimate it as

    var = var_s(mean_i C[s, i]) / S  +  max(0, MS_items - MS_resid) / (S I)

The first term is the classic seed-level t statistic: it estimates ``s_a^2/S + s_e^2/(S I)``
exactly (unbiased, and under normality its ratio is t with S - 1 df); the second is the
ANOVA estimate of ``s_b^2/I``, which the first misses because every seed sees the same items.
The critical value is t with df = S - 1 (the df of the first term). Adding a non-negative,
precisely estimated (I - 1 df) term to an exact t statistic and keeping its df can only widen the
interval, so it is conservative where item heterogeneity matters and exact where it does not.

Why not a bootstrap. Resampling 3 seeds has only 10 distinct multisets: the percentile interval
of that distribution is too narrow by construction (it has no t-like small-sample correction),
and item-only resampling ignores run noise altogether. Measured with the planted simulation
(``ablations/analysis/simulation.py``, ``benchmarks/coverage.py``): item-only and seed-only
bootstraps covered 50-89%; this interval covers >= 93% at run-level sd 0, 2 and 4 points with
2 and 3 seeds (table in benchmarks/RESULTS.md). The price of honesty with 3 seeds is width
(t_{0.975, 2} = 4.30); with 2 seeds (t_{0.975, 1} = 12.7) intervals are calibrated but so wide
that they rarely exclude zero.

Where a design cannot support a calibrated interval (one seed: no replication of training), the
interval is NaN and ``reason`` says why; tables print ``-`` with a footnote.
Multiplicity: ``holm`` adjusts a family of p-values (Holm 1979, family-wise error).
Departure from the paper: the paper reports no intervals; this is ours (issue 12).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

ONE_SEED_REASON = "one seed: training noise cannot be estimated, no calibrated interval"


@dataclass(frozen=True)
class ContrastIntervals:
    """Per contrast (length P): estimate, interval, two-sided p-value against 0, df, reason."""

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    p_value: np.ndarray
    std_error: np.ndarray
    df: int
    reason: str


def contrast_intervals(scores_KSI: np.ndarray, weights_KP: np.ndarray,
                       level: float = 0.95) -> ContrastIntervals:
    """Intervals for the contrasts ``weights_KP`` of ``scores_KSI`` (subsets x seeds x items).

    Every (subset, seed, item) cell must be present (the caller keeps the complete seeds and the
    common items and reports what it dropped). Columns of ``weights_KP`` may be NaN (a contrast
    the design cannot estimate): their results are NaN.
    """
    n_subsets, n_seeds, n_items = scores_KSI.shape
    unusable = np.isnan(weights_KP).any(axis=0)
    contrasts_PSI = np.einsum("ksi,kp->psi", scores_KSI, np.nan_to_num(weights_KP))
    estimate = contrasts_PSI.mean(axis=(1, 2))
    estimate[unusable] = np.nan
    nan = np.full(weights_KP.shape[1], np.nan)
    if n_seeds < 2 or n_items < 1:
        reason = ONE_SEED_REASON if n_seeds < 2 else "no scores in common"
        return ContrastIntervals(estimate, nan, nan.copy(), nan.copy(), nan.copy(), 0, reason)
    std_error = crossed_std_error(contrasts_PSI)
    df = n_seeds - 1
    half = stats.t.ppf(0.5 + level / 2.0, df) * std_error
    with np.errstate(divide="ignore", invalid="ignore"):
        t_stat = np.abs(estimate) / std_error
    p_value = np.where(std_error > 0, 2.0 * stats.t.sf(t_stat, df),
                       np.where(estimate == 0, 1.0, 0.0))
    p_value[unusable] = np.nan
    return ContrastIntervals(estimate, estimate - half, estimate + half, p_value,
                             np.where(unusable, np.nan, std_error), df, "")


def crossed_std_error(contrasts_PSI: np.ndarray) -> np.ndarray:
    """Standard error of the grand mean of each (seeds x items) contrast matrix (see docstring)."""
    _, n_seeds, n_items = contrasts_PSI.shape
    seed_means_PS = contrasts_PSI.mean(axis=2)
    item_means_PI = contrasts_PSI.mean(axis=1)
    grand_P = contrasts_PSI.mean(axis=(1, 2))
    seed_term = seed_means_PS.var(axis=1, ddof=1) / n_seeds
    if n_items < 2:  # run means only: no item heterogeneity to add
        return np.sqrt(seed_term)
    residual = (contrasts_PSI - seed_means_PS[:, :, None] - item_means_PI[:, None, :]
                + grand_P[:, None, None])
    ms_resid = (residual ** 2).sum(axis=(1, 2)) / ((n_seeds - 1) * (n_items - 1))
    ms_items = n_seeds * item_means_PI.var(axis=1, ddof=1)
    item_term = np.maximum(ms_items - ms_resid, 0.0) / (n_seeds * n_items)
    return np.sqrt(seed_term + item_term)


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (NaN entries stay NaN and do not count)."""
    p_values = np.asarray(p_values, dtype=float)
    adjusted = np.full(p_values.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p_values))
    order = finite[np.argsort(p_values[finite], kind="mergesort")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted
