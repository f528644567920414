"""Record frames -> per-label (seeds x items) score matrices on common items, gaps named.

One implementation serves the component analysis (labels = subset masks) and the gains table
(labels = method rows). Rules, so that no group shrinks silently and estimate and interval come
from the same numbers:
- a run that is not finished, or whose score is NaN, is left out and named in ``gaps``;
- one run key counts once (an exactly duplicated record is not double-weighted);
- items: only items scored (not NaN) by every kept run enter; the number left out is a gap;
- a kept run without per-item scores makes the whole label set fall back to run means (one
  "item" per run; the interval then carries no item-heterogeneity term), named in ``gaps``.
Departure from the paper: none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

OK_STATUS = "done"


@dataclass
class RunMatrices:
    """``matrices[label]`` is (seeds x items), rows in the order of ``seeds[label]``."""

    matrices: dict[object, np.ndarray]
    seeds: dict[object, list[int]]
    n_items: int
    gaps: list[str] = field(default_factory=list)

    def restrict_seeds(self, keep: list[int]) -> "RunMatrices":
        """The same labels on the seeds ``keep`` only (every label must have them)."""
        chosen = {label: matrix[[self.seeds[label].index(s) for s in keep]]
                  for label, matrix in self.matrices.items()}
        return RunMatrices(chosen, {label: list(keep) for label in chosen}, self.n_items,
                           list(self.gaps))


def run_matrices(runs: pd.DataFrame, items: pd.DataFrame, benchmark: str,
                 describe=str) -> RunMatrices:
    """``runs``: one row per (label, seed) with ``label, seed, run_key, status, score``.

    ``describe(label)`` names a label in the gap notes.
    """
    runs = runs.drop_duplicates(subset=["run_key"])
    gaps = []
    finished = runs[(runs["status"] == OK_STATUS) & runs["score"].notna()]
    for row in runs.drop(finished.index).itertuples(index=False):
        why = row.status if row.status != OK_STATUS else "score NaN"
        gaps.append(f"{describe(row.label)} seed {row.seed}: {why}")
    finished = finished.sort_values(["seed", "run_key"], kind="mergesort")
    finished = finished.drop_duplicates(subset=["label", "seed"])
    per_run = _item_scores(items, benchmark, set(finished["run_key"]))
    lacking = [key for key in finished["run_key"] if key not in per_run]
    if lacking or finished.empty:
        if lacking:
            gaps.append(f"{len(lacking)} run(s) without per-item scores: intervals from run "
                        "means")
        per_run = {key: {"run": score} for key, score in
                   zip(finished["run_key"], finished["score"])}
    all_items = set().union(*per_run.values()) if per_run else set()
    common = sorted(set.intersection(*(set(v) for v in per_run.values()))) if per_run else []
    if len(common) < len(all_items):
        gaps.append(f"{len(all_items) - len(common)} of {len(all_items)} items missing or NaN "
                    f"in some runs (left out)")
    matrices, seeds = {}, {}
    for label, part in finished.groupby("label", sort=False):
        seeds[label] = [int(s) for s in part["seed"]]
        matrices[label] = np.array([[per_run[key][item] for item in common]
                                    for key in part["run_key"]], dtype=float).reshape(
                                        len(part), len(common))
    return RunMatrices(matrices, seeds, len(common), gaps)


def _item_scores(items: pd.DataFrame, benchmark: str, keys: set[str]) -> dict[str, dict]:
    mine = items[(items["benchmark"] == benchmark) & items["run_key"].isin(keys)]
    mine = mine.dropna(subset=["score"]).drop_duplicates(subset=["run_key", "item_id"])
    return {key: dict(zip(part["item_id"].astype(str), part["score"].astype(float)))
            for key, part in mine.groupby("run_key", sort=False)}
