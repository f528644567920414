"""Component effects per (model, training set, benchmark), from the ``scores``/``items`` frames.

For each group: the value of every present subset (seeds averaged), main effects (Banzhaf),
exact Shapley values (v(S) = score(S) - score(empty); only with all 32 subsets, else refused and
the missing subsets named), and one pairwise interaction index per pair, each with paired
bootstrap 95% intervals over items and over seeds.

Designs: a complete grid gives Banzhaf, Shapley and the Shapley interaction index. The half
fraction gives main effects (mean with minus mean without) and the factorial two-way interaction
(2 x the +/-1 contrast, equal to the Banzhaf interaction when higher orders vanish). Any other
incomplete grid: main effects and Banzhaf interactions over the complete pairs / quadruples that
exist; nothing is imputed. Departure from the paper: none beyond naming these choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ablations.analysis import games
from ablations.analysis.bootstrap import bootstrap_values, percentile_interval
from ablations.grid import cell_label
from unisd_core.config import COMPONENT_NAMES

PLAYERS: tuple[str, ...] = COMPONENT_NAMES
GROUP = ["model", "training_set", "benchmark"]
OK_STATUS = "done"


@dataclass
class ComponentAnalysis:
    """Tidy results: ``effects`` (main/shapley rows), ``interactions``, ``missing``, ``notes``."""

    effects: pd.DataFrame
    interactions: pd.DataFrame
    missing: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def grid_rows(scores: pd.DataFrame) -> pd.DataFrame:
    """Finished rows of the component grid (the sdft preset counts as the empty subset).

    UniSD* and other presets are excluded: their hyperparameters differ from the grid's.
    """
    finished = scores[(scores["status"] == OK_STATUS) & scores["score"].notna()]
    rows = finished[finished["method"].isin(["sdft", "unisd"])].copy()
    labels = rows["cell"].astype(str).map(cell_label)
    in_grid = (labels == rows["subset"]) | (labels == "sdft") | (labels == rows["cell"])
    rows = rows[in_grid]
    rows["mask"] = [games.mask_of([p for p in PLAYERS if bool(r[p])], PLAYERS)
                    for _, r in rows.iterrows()]
    return rows


def design_of(present: set[int]) -> str:
    """``full``, ``half_fraction`` or ``partial``."""
    if len(present) == 2 ** len(PLAYERS):
        return "full"
    odd = {m for m in range(2 ** len(PLAYERS)) if bin(m).count("1") % 2 == 1}
    if present in (odd, set(range(2 ** len(PLAYERS))) - odd):
        return "half_fraction"
    return "partial"


def analyse_components(scores: pd.DataFrame, items: pd.DataFrame, *, n_replicates: int = 2000,
                       seed: int = 0) -> ComponentAnalysis:
    """Effects and interactions for every group of the grid (see the module docstring)."""
    rows = grid_rows(scores)
    effects, interactions, missing, notes = [], [], [], []
    for key, group in rows.groupby(GROUP, sort=True):
        keys = dict(zip(GROUP, key))
        result = _analyse_group(group, items, n_replicates, seed)
        effects += [{**keys, **row} for row in result["effects"]]
        interactions += [{**keys, **row} for row in result["interactions"]]
        missing += [{**keys, "subset": "+".join(games.subset_of(m, PLAYERS)) or "none"}
                    for m in result["missing"]]
        notes += [f"{'/'.join(map(str, key))}: {note}" for note in result["notes"]]
    return ComponentAnalysis(
        effects=pd.DataFrame(effects, columns=[*GROUP, *EFFECT_COLUMNS]),
        interactions=pd.DataFrame(interactions, columns=[*GROUP, *INTERACTION_COLUMNS]),
        missing=pd.DataFrame(missing, columns=[*GROUP, "subset"]),
        notes=notes,
    )


EFFECT_COLUMNS = ["component", "kind", "design", "estimate", "item_low", "item_high",
                  "seed_low", "seed_high", "n_items", "n_seeds"]
INTERACTION_COLUMNS = ["component_a", "component_b", "index", "design", "estimate", "item_low",
                       "item_high", "seed_low", "seed_high"]


def _analyse_group(group: pd.DataFrame, items: pd.DataFrame, n_replicates: int,
                   seed: int) -> dict[str, list]:
    n_players = len(PLAYERS)
    values = group.groupby("mask")["score"].mean()
    present = set(int(m) for m in values.index)
    design = design_of(present)
    value_S = np.zeros(2 ** n_players)
    value_S[list(values.index)] = values.to_numpy()
    estimators = _estimators(design, present)
    item_matrix, n_items = _item_matrix(group, items, present)
    seed_matrix, n_seeds = _seed_matrix(group, present)
    item_reps = _expand(bootstrap_values(item_matrix, n_replicates, seed), present)
    seed_reps = _expand(bootstrap_values(seed_matrix, n_replicates, seed), present)
    out: dict[str, list] = {"effects": [], "interactions": [], "notes": [],
                            "missing": sorted(set(range(2 ** n_players)) - present)}
    if "shapley" not in estimators:
        missing = games.IncompleteGridError(out["missing"], PLAYERS)
        detail = str(missing) if len(out["missing"]) <= 8 else (
            f"{len(out['missing'])} of {2 ** n_players} subsets missing (see missing_subsets)")
        out["notes"].append(f"exact Shapley refused ({design} design): {detail}")
    for kind, weights in estimators.items():
        unusable = _nan_columns(weights)  # NaN where the design cannot estimate the index
        estimate = value_S @ np.nan_to_num(weights) + unusable
        item_low, item_high = percentile_interval(item_reps @ np.nan_to_num(weights) + unusable)
        seed_low, seed_high = percentile_interval(seed_reps @ np.nan_to_num(weights) + unusable)
        for index in range(weights.shape[1]):
            stats = {"design": design, "estimate": estimate[index],
                     "item_low": item_low[index], "item_high": item_high[index],
                     "seed_low": seed_low[index], "seed_high": seed_high[index]}
            if kind in ("main", "shapley"):
                out["effects"].append({"component": PLAYERS[index], "kind": kind, **stats,
                                       "n_items": n_items, "n_seeds": n_seeds})
            else:
                first, second = games.pairs_of(n_players)[index]
                out["interactions"].append({"component_a": PLAYERS[first],
                                            "component_b": PLAYERS[second], "index": kind,
                                            **stats})
    return out


def _estimators(design: str, present: set[int]) -> dict[str, np.ndarray]:
    n_players = len(PLAYERS)
    if design == "full":
        return {"main": games.banzhaf_weights(n_players),
                "shapley": games.shapley_weights(n_players),
                "shapley_interaction": games.shapley_interaction_weights(n_players)}
    if design == "half_fraction":
        return {"main": games.contrast_weights(n_players, present),
                "factorial_interaction": games.factorial_interaction_weights(n_players, present)}
    return {"main": games.banzhaf_weights(n_players, present),
            "banzhaf_interaction": games.banzhaf_interaction_weights(n_players, present)}


def _nan_columns(weights: np.ndarray) -> np.ndarray:
    """0 for estimable columns, NaN for columns the design cannot estimate."""
    return np.where(np.isnan(weights).any(axis=0), np.nan, 0.0)


def _item_matrix(group: pd.DataFrame, items: pd.DataFrame,
                 present: set[int]) -> tuple[np.ndarray, int]:
    """Subsets x items (seeds averaged per item), only items scored for every subset."""
    benchmark = group["benchmark"].iloc[0]
    runs = group[["run_key", "mask"]].drop_duplicates()
    chosen = items[(items["benchmark"] == benchmark) & items["run_key"].isin(runs["run_key"])]
    if chosen.empty:
        return np.empty((len(present), 0)), 0
    merged = chosen.merge(runs, on="run_key")
    table = merged.pivot_table(index="mask", columns="item_id", values="score", aggfunc="mean")
    table = table.reindex(sorted(present)).dropna(axis=1)
    return table.to_numpy(dtype=float), table.shape[1]


def _seed_matrix(group: pd.DataFrame, present: set[int]) -> tuple[np.ndarray, int]:
    """Subsets x seeds, only seeds run for every subset."""
    table = group.pivot_table(index="mask", columns="seed", values="score", aggfunc="mean")
    table = table.reindex(sorted(present)).dropna(axis=1)
    return table.to_numpy(dtype=float), table.shape[1]


def _expand(replicates_RP: np.ndarray, present: set[int]) -> np.ndarray:
    """Replicates over the present subsets -> over all 2^n masks (zeros where absent)."""
    full = np.zeros((replicates_RP.shape[0], 2 ** len(PLAYERS)))
    full[:, sorted(present)] = replicates_RP
    return full
