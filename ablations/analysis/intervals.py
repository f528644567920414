"""Confidence intervals for linear contrasts of run scores: seeds x items, both sources of noise.

What is estimated. Every number the report puts an interval on (a main effect, a Shapley value,
an interaction index, a gain over the base) is a linear contrast ``sum_S w_S v(S)`` of subset
values, and the truth it targets is defined over the POPULATION of training seeds and test items:
a new seed, a new draw of items, the same contrast. Two sources of noise therefore enter: the
run-to-run noise of training (a seed moves every item of a run together) and the sampling of
items (a component may help some items more than others).

Method: a t-interval over seed-level contrasts, plus an item term. Per seed s the contrast of
the item scores is ``C[s, i] = sum_S w_S x[S, s, i]``; the estimate is the mean of C over seeds
and items (so estimate and interval come from the same data). Reading C as a crossed seeds x
items layout ``C = theta + a_s + b_i + e_si`` (a: run noise, b: item heterogeneity of the
contrast, e: per-run item noise such as a correct/incorrect flip), the variance of the grand mean
is ``s_a^2/S + s_b^2/I + s_e^2/(S I)``, estimated by two terms:

    seed_term = var_s(mean_i C[s, i]) / S                      (S - 1 df)
    item_term = max(0, MS_items - MS_resid) / (S I)            (about I - 1 df)

The seed term is the classic seed-level t statistic: it estimates ``s_a^2/S + s_e^2/(S I)``
without bias, and alone it gives an exact t-interval with S - 1 df under normality. The item
term is the ANOVA estimate of ``s_b^2/I``, which the seed term misses because every seed sees
the same items (it matters for a gain over the single base run, whose item noise every seed
shares). The half-width combines each term at its own t quantile in quadrature,
``sqrt(t_{S-1}^2 seed_term + t_{I-1}^2 item_term)`` (the modified large-sample method of
Graybill and Wang for sums of variance components): exactly the seed-level t-interval when the
item term vanishes, the large-sample interval when it dominates, and conservative in between.
(Welch-Satterthwaite df were tried first: 92% coverage for gains at run-level sd 4.) The
p-value is the smallest 1 - level whose interval excludes zero, so p < 0.05 exactly when the
95% interval excludes zero; Holm's adjustment uses these.

Why not a bootstrap. Resampling 3 seeds has only 10 distinct multisets: the percentile interval
of that distribution is too narrow by construction (it has no t-like small-sample correction),
and item-only resampling ignores run noise altogether. Measured with the planted simulation
(``ablations/analysis/simulation.py``, ``benchmarks/coverage.py``, table in
benchmarks/RESULTS.md): the item-only and seed-only bootstraps fall well below 95% once runs
carry training noise; this interval reaches the target at run-level sd 0, 2 and 4 points with
2 and 3 seeds. The price of honesty with 3 seeds is width (t_{0.975, 2} = 4.30); with 2 seeds
(t_{0.975, 1} = 12.7) intervals are calibrated but so wide that they rarely exclude zero.

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
NO_COMMON_REASON = "no seed or item scored by every run the estimate needs"


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
    nan = np.full(weights_KP.shape[1], np.nan)
    if n_seeds == 0 or n_items == 0:
        return ContrastIntervals(nan, nan.copy(), nan.copy(), nan.copy(), nan.copy(), 0,
                                 NO_COMMON_REASON)
    unusable = np.isnan(weights_KP).any(axis=0)
    contrasts_PSI = np.einsum("ksi,kp->psi", scores_KSI, np.nan_to_num(weights_KP))
    estimate = contrasts_PSI.mean(axis=(1, 2))
    estimate[unusable] = np.nan
    if n_seeds < 2:
        return ContrastIntervals(estimate, nan, nan.copy(), nan.copy(), nan.copy(), 0,
                                 ONE_SEED_REASON)
    seed_term, item_term = variance_terms(contrasts_PSI)
    half = half_width(seed_term, item_term, n_seeds, n_items, level)
    p_value = _p_values(np.nan_to_num(estimate), seed_term, item_term, n_seeds, n_items)
    p_value[unusable] = np.nan
    std_error = np.where(unusable, np.nan, np.sqrt(seed_term + item_term))
    return ContrastIntervals(estimate, estimate - half, estimate + half, p_value, std_error,
                             n_seeds - 1, "")


def variance_terms(contrasts_PSI: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two variance terms of the grand mean of each (seeds x items) contrast matrix:
    ``seed_term`` (S - 1 df) and ``item_term`` (I - 1 df, zero when not estimable); see the
    module docstring. Needs >= 2 seeds."""
    _, n_seeds, n_items = contrasts_PSI.shape
    seed_means_PS = contrasts_PSI.mean(axis=2)
    item_means_PI = contrasts_PSI.mean(axis=1)
    grand_P = contrasts_PSI.mean(axis=(1, 2))
    seed_term = seed_means_PS.var(axis=1, ddof=1) / n_seeds
    if n_items < 2:  # run means only: no item heterogeneity to add
        return seed_term, np.zeros_like(seed_term)
    residual = (contrasts_PSI - seed_means_PS[:, :, None] - item_means_PI[:, None, :]
                + grand_P[:, None, None])
    ms_resid = (residual ** 2).sum(axis=(1, 2)) / ((n_seeds - 1) * (n_items - 1))
    ms_items = n_seeds * item_means_PI.var(axis=1, ddof=1)
    return seed_term, np.maximum(ms_items - ms_resid, 0.0) / (n_seeds * n_items)


def half_width(seed_term: np.ndarray, item_term: np.ndarray, n_seeds: int, n_items: int,
               level: np.ndarray | float) -> np.ndarray:
    """Each term at its own t quantile, combined in quadrature (modified large-sample)."""
    quantile = 0.5 + np.asarray(level) / 2.0
    seed_part = stats.t.ppf(quantile, n_seeds - 1) ** 2 * seed_term
    item_part = stats.t.ppf(quantile, max(n_items - 1, 1)) ** 2 * item_term
    return np.sqrt(seed_part + item_part)


P_GRID = np.unique(np.concatenate([np.logspace(-12, 0, 481), [0.05]]))


def _p_values(estimate: np.ndarray, seed_term: np.ndarray, item_term: np.ndarray,
              n_seeds: int, n_items: int) -> np.ndarray:
    """The smallest 1 - level whose interval excludes 0, interpolated (in log p) on a grid
    that contains 0.05: p < 0.05 exactly when the 95% interval excludes zero."""
    half_GP = half_width(seed_term[None, :], item_term[None, :], n_seeds, n_items,
                         1.0 - P_GRID[:, None])  # decreasing in p along the grid
    target = np.abs(estimate)
    log_p = np.log(P_GRID)
    p_value = np.empty(len(target))
    for index, (column, value) in enumerate(zip(half_GP.T, target)):
        # np.interp needs increasing x: half widths fall as p grows.
        p_value[index] = np.exp(np.interp(value, column[::-1], log_p[::-1]))
    return np.where(target == 0, 1.0, p_value)


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
