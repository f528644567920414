"""Classical cross-check: factorial OLS with main effects and two-way interactions (statsmodels).

Per (model, training set, benchmark), every finished run of the component grid is one
observation (seeds are replicates). Factors are coded +/-1, so in a full or half-fraction design
the columns are orthogonal and ``effect = 2 x coef`` for a main effect (= the Banzhaf value) and
``4 x coef`` for a two-way term (= the Banzhaf interaction). A type-2 ANOVA (``anova_lm``) gives
F and p per term when residual degrees of freedom remain (a saturated design has none: NaN).

Only terms the design identifies are fitted (issue 16): starting from the main effects of the
factors that vary, each term is added only if its column is not a linear combination of the
columns already in (the design matrix keeps full column rank). A term left out (e.g. FM:EMA when
no run combines feature matching and EMA) is named in a note and never printed as an effect; the
terms kept are then estimated under the assumption that the dropped ones are zero, which the note
says. Departure from the paper: none (the paper names OLS/ANOVA without a model formula).
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from statsmodels.stats.anova import anova_lm

from ablations.analysis.effects import GROUP, PLAYERS, grid_rows

OLS_COLUMNS = ["term", "effect", "std_error", "f_value", "p_value", "df_resid"]


def factorial_ols(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (group, term): identified main effects and two-way interactions."""
    return fit_factorial_ols(scores)[0]


def fit_factorial_ols(scores: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``(table, notes)``: the OLS table and one note per group naming the terms dropped."""
    rows, notes = [], []
    for key, group in grid_rows(scores).groupby(GROUP, sort=True):
        keys = dict(zip(GROUP, key))
        fitted, dropped = _fit_group(group)
        rows += [{**keys, **row} for row in fitted]
        if dropped:
            notes.append(f"{'/'.join(map(str, key))}: OLS terms not identified by the design "
                         f"(dropped, assumed zero for the terms kept): {', '.join(dropped)}")
    return pd.DataFrame(rows, columns=[*GROUP, *OLS_COLUMNS]), notes


def identified_terms(data: pd.DataFrame, candidates: list[str]) -> tuple[list[str], list[str]]:
    """Greedy: keep a term when its column raises the rank of [1, kept columns]."""
    columns = [np.ones(len(data))]
    kept, dropped = [], []
    for term in candidates:
        column = np.prod([data[name].to_numpy() for name in term.split(":")], axis=0)
        trial = np.column_stack([*columns, column])
        if np.linalg.matrix_rank(trial) == trial.shape[1]:
            columns.append(column)
            kept.append(term)
        else:
            dropped.append(term)
    return kept, dropped


def _fit_group(group: pd.DataFrame) -> tuple[list[dict[str, object]], list[str]]:
    factors = [name for name in PLAYERS if group[name].astype(bool).nunique() == 2]
    if not factors:
        return [], []
    data = pd.DataFrame({name: np.where(group[name].astype(bool), 1.0, -1.0)
                         for name in factors})
    data["score"] = group["score"].to_numpy(dtype=float)
    pairs = [f"{a}:{b}" for a, b in itertools.combinations(factors, 2)]
    terms, dropped = identified_terms(data, [*factors, *pairs])
    factors = [t for t in factors if t in terms]
    pairs = [t for t in pairs if t in terms]
    formula = "score ~ " + " + ".join([*factors, *pairs])
    with warnings.catch_warnings():
        # Saturated designs (no residual df) make statsmodels warn about division by zero.
        warnings.simplefilter("ignore")
        fit = smf.ols(formula, data=data).fit()
        anova = anova_lm(fit, typ=2) if fit.df_resid > 0 else None
    out = []
    for term in [*factors, *pairs]:
        scale = 2.0 if ":" not in term else 4.0
        has_anova = anova is not None and term in anova.index
        out.append({"term": term, "effect": scale * fit.params[term],
                    "std_error": scale * fit.bse[term] if fit.df_resid > 0 else np.nan,
                    "f_value": anova.loc[term, "F"] if has_anova else np.nan,
                    "p_value": anova.loc[term, "PR(>F)"] if has_anova else np.nan,
                    "df_resid": float(fit.df_resid)})
    return out, dropped
