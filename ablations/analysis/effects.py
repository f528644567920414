"""Component effects per (model, training set, benchmark), from the ``scores``/``items`` frames.

For each group: main effects (Banzhaf), exact Shapley values (v(S) = score(S) - score(empty);
only with all 32 subsets, else refused and the missing subsets named), and one pairwise
interaction index per pair, each with ONE 95% interval that carries both training-seed and item
noise (``ablations.analysis.intervals``: seed-level t-interval plus an item term; calibrated in
the planted simulation, benchmarks/RESULTS.md). Interactions get a Holm-adjusted p-value over the
pairs of their group and a ``flagged`` mark (adjusted p < 0.05).

Designs: a complete grid gives Banzhaf, Shapley and the Shapley interaction index. The half
fraction gives main effects (mean with minus mean without) and the factorial two-way interaction
(2 x the +/-1 contrast, equal to the Banzhaf interaction when higher orders vanish). Any other
incomplete grid: main effects and Banzhaf interactions over the complete pairs / quadruples that
exist; nothing is imputed.

Gaps: estimates and intervals use the seeds finished for every present subset and the items
scored in every kept run (``ablations.analysis.layout``); what was left out is counted
(``n_seeds``/``n_items`` against ``seeds_expected``) and named in the group's notes. With one
seed the interval is NaN (``reason``). Departure from the paper: none beyond naming these choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ablations.analysis import games
from ablations.analysis.intervals import contrast_intervals, holm
from ablations.analysis.layout import OK_STATUS, run_matrices
from ablations.grid import cell_label
from unisd_core.config import COMPONENT_NAMES

PLAYERS: tuple[str, ...] = COMPONENT_NAMES
GROUP = ["model", "training_set", "benchmark"]
LEVEL = 0.95
MULTIPLICITY = "Holm"


@dataclass
class ComponentAnalysis:
    """Tidy results: ``effects`` (main/shapley rows), ``interactions``, ``missing``, ``notes``.

    ``gaps`` maps a group key (model, training set, benchmark) to its gap notes.
    """

    effects: pd.DataFrame
    interactions: pd.DataFrame
    missing: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    gaps: dict[tuple, list[str]] = field(default_factory=dict)


def grid_cells(scores: pd.DataFrame) -> pd.DataFrame:
    """Rows of the component grid in any state (the sdft preset counts as the empty subset).

    UniSD* and other presets are excluded: their hyperparameters differ from the grid's.
    """
    rows = scores[scores["method"].isin(["sdft", "unisd"])].copy()
    labels = rows["cell"].astype(str).map(cell_label)
    rows = rows[(labels == rows["subset"]) | (labels == "sdft") | (labels == rows["cell"])]
    rows["mask"] = [games.mask_of([p for p in PLAYERS if bool(r[p])], PLAYERS)
                    for _, r in rows.iterrows()]
    return rows


def grid_rows(scores: pd.DataFrame) -> pd.DataFrame:
    """Finished rows of the component grid, one per run key and benchmark."""
    rows = grid_cells(scores)
    rows = rows[(rows["status"] == OK_STATUS) & rows["score"].notna()]
    return rows.drop_duplicates(subset=["run_key", "benchmark"])


def design_of(present: set[int]) -> str:
    """``full``, ``half_fraction`` or ``partial``."""
    if len(present) == 2 ** len(PLAYERS):
        return "full"
    odd = {m for m in range(2 ** len(PLAYERS)) if bin(m).count("1") % 2 == 1}
    if present in (odd, set(range(2 ** len(PLAYERS))) - odd):
        return "half_fraction"
    return "partial"


def analyse_components(scores: pd.DataFrame, items: pd.DataFrame) -> ComponentAnalysis:
    """Effects and interactions for every group of the grid (see the module docstring)."""
    rows = grid_cells(scores)
    effects, interactions, missing, notes, gaps = [], [], [], [], {}
    for key, group in rows.groupby(GROUP, sort=True):
        keys = dict(zip(GROUP, key))
        result = _analyse_group(group, items)
        effects += [{**keys, **row} for row in result["effects"]]
        interactions += [{**keys, **row} for row in result["interactions"]]
        missing += [{**keys, "subset": "+".join(games.subset_of(m, PLAYERS)) or "none"}
                    for m in result["missing"]]
        notes += [f"{'/'.join(map(str, key))}: {note}" for note in result["notes"]]
        if result["gaps"]:
            gaps[tuple(key)] = result["gaps"]
    return ComponentAnalysis(
        effects=pd.DataFrame(effects, columns=[*GROUP, *EFFECT_COLUMNS]),
        interactions=pd.DataFrame(interactions, columns=[*GROUP, *INTERACTION_COLUMNS]),
        missing=pd.DataFrame(missing, columns=[*GROUP, "subset"]),
        notes=notes, gaps=gaps,
    )


STAT_COLUMNS = ["estimate", "low", "high", "p_value", "n_seeds", "seeds_expected", "n_items",
                "reason"]
EFFECT_COLUMNS = ["component", "kind", "design", *STAT_COLUMNS]
INTERACTION_COLUMNS = ["component_a", "component_b", "index", "design", *STAT_COLUMNS,
                       "p_holm", "flagged"]


def _subset_name(mask: int) -> str:
    return "+".join(games.subset_of(mask, PLAYERS)) or "none"


def _analyse_group(group: pd.DataFrame, items: pd.DataFrame) -> dict[str, list]:
    n_players = len(PLAYERS)
    runs = group.rename(columns={"mask": "label"})[["label", "seed", "run_key", "status",
                                                     "score"]]
    layout = run_matrices(runs, items, str(group["benchmark"].iloc[0]), describe=_subset_name)
    present = set(int(m) for m in layout.matrices)
    if not present:
        return {"effects": [], "interactions": [], "missing": [], "gaps": layout.gaps,
                "notes": ["no finished run of the component grid"]}
    expected = sorted(set(int(s) for s in group["seed"]))
    kept = sorted(set.intersection(*(set(s) for s in layout.seeds.values())))
    gaps = list(layout.gaps)
    for seed in sorted(set(expected) - set(kept)):
        lacking = [_subset_name(m) for m in sorted(present) if seed not in layout.seeds[m]]
        gaps.append(f"seed {seed} left out of every estimate: not finished for "
                    + ", ".join(lacking[:4]) + (" ..." if len(lacking) > 4 else ""))
    layout = layout.restrict_seeds(kept)
    design = design_of(present)
    order = sorted(present)
    scores_KSI = np.stack([layout.matrices[m] for m in order])
    out: dict[str, list] = {"effects": [], "interactions": [], "notes": [], "gaps": gaps,
                            "missing": sorted(set(range(2 ** n_players)) - present)}
    estimators = _estimators(design, present)
    if "shapley" not in estimators:
        missing = games.IncompleteGridError(out["missing"], PLAYERS)
        detail = str(missing) if len(out["missing"]) <= 8 else (
            f"{len(out['missing'])} of {2 ** n_players} subsets missing (see missing_subsets)")
        out["notes"].append(f"exact Shapley refused ({design} design): {detail}")
    counts = {"n_seeds": len(kept), "seeds_expected": len(expected), "n_items": layout.n_items}
    for kind, weights in estimators.items():
        result = contrast_intervals(scores_KSI, weights[order], LEVEL)
        stats = [{"design": design, "estimate": result.estimate[i], "low": result.low[i],
                  "high": result.high[i], "p_value": result.p_value[i], **counts,
                  "reason": result.reason} for i in range(weights.shape[1])]
        if kind in ("main", "shapley"):
            out["effects"] += [{"component": PLAYERS[i], "kind": kind, **row}
                               for i, row in enumerate(stats)]
            continue
        adjusted = holm(result.p_value)
        for (first, second), row, p_holm in zip(games.pairs_of(n_players), stats, adjusted):
            out["interactions"].append({"component_a": PLAYERS[first],
                                        "component_b": PLAYERS[second], "index": kind, **row,
                                        "p_holm": p_holm, "flagged": bool(p_holm < 1 - LEVEL)})
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
