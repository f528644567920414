"""Classical cross-check: factorial OLS with main effects and two-way interactions (statsmodels).

Per (model, training set, benchmark), every finished run of the component grid is one
observation (seeds are replicates). Factors are coded +/-1, so in a full or half-fraction design
the columns are orthogonal and ``effect = 2 x coef`` for a main effect (= the Banzhaf value) and
``4 x coef`` for a two-way term (= the Banzhaf interaction). A type-2 ANOVA (``anova_lm``) gives
F and p per term when residual degrees of freedom remain (a saturated design has none: NaN).
Departure from the paper: none (the paper names OLS/ANOVA without a model formula).
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
    """One row per (group, term): main effects and two-way interactions on the effect scale."""
    rows = []
    for key, group in grid_rows(scores).groupby(GROUP, sort=True):
        keys = dict(zip(GROUP, key))
        rows += [{**keys, **row} for row in _fit_group(group)]
    return pd.DataFrame(rows, columns=[*GROUP, *OLS_COLUMNS])


def _fit_group(group: pd.DataFrame) -> list[dict[str, object]]:
    factors = [name for name in PLAYERS if group[name].astype(bool).nunique() == 2]
    if not factors:
        return []
    data = pd.DataFrame({name: np.where(group[name].astype(bool), 1.0, -1.0)
                         for name in factors})
    data["score"] = group["score"].to_numpy(dtype=float)
    pairs = [f"{a}:{b}" for a, b in itertools.combinations(factors, 2)]
    formula = "score ~ " + " + ".join([*factors, *pairs])
    with warnings.catch_warnings():
        # Saturated designs (no residual df) make statsmodels warn about division by zero.
        warnings.simplefilter("ignore")
        fit = smf.ols(formula, data=data).fit()
        anova = anova_lm(fit, typ=2) if fit.df_resid > 0 else None
    out = []
    for term in [*factors, *pairs]:
        if term not in fit.params.index or (term in pairs and _aliased(fit, term)):
            continue
        scale = 2.0 if ":" not in term else 4.0
        has_anova = anova is not None and term in anova.index
        out.append({"term": term, "effect": scale * fit.params[term],
                    "std_error": scale * fit.bse[term] if fit.df_resid > 0 else np.nan,
                    "f_value": anova.loc[term, "F"] if has_anova else np.nan,
                    "p_value": anova.loc[term, "PR(>F)"] if has_anova else np.nan,
                    "df_resid": float(fit.df_resid)})
    return out


def _aliased(fit: object, term: str) -> bool:
    """A term the design cannot separate from others (rank-deficient column)."""
    return bool(np.isclose(fit.params[term], 0.0) and not np.isfinite(fit.bse[term]))
