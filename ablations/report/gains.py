"""The "gains over base" table: each method's score, its gain over the base model and a 95%
paired bootstrap interval, per (model, training set, benchmark).

Items and seeds are resampled jointly (``ablations.analysis.bootstrap.gain_replicates``): one
item resample per replicate, shared by every method of the group (paired), and each method's
seeds resampled within the method. Only items scored by every run of the group enter (the same
items for every method), so score and gain are over that common set. A pure function of the
record frames, seeded, row order fixed: byte-identical output for identical records.
Departure from the paper: the paper reports gains without intervals; this is ours (issue 7).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablations.analysis.bootstrap import gain_replicates, percentile_interval
from ablations.report.render import MISSING, fmt
from ablations.report.tables import METHOD_NAMES, _row_order, labelled

BASE_LABEL = METHOD_NAMES["base"]
GROUP = ["model", "training_set", "benchmark"]
COLUMNS = GROUP + ["method", "seeds", "items", "score", "gain", "gain_low", "gain_high",
                   "excludes_zero"]


def gains_table(scores: pd.DataFrame, items: pd.DataFrame, *, n_replicates: int = 2000,
                seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """One row per (model, training set, benchmark, method): base first, then by method order.

    ``score``/``gain`` are fractions (mean over seeds and common items); ``gain_low/high`` the
    percentile interval of the gain; ``excludes_zero`` True when the interval lies on one side
    of zero. The base row carries its score only. A group without a base run gets no gains.
    """
    done = labelled(scores)
    rows: list[dict] = []
    for key, group in done.groupby(GROUP, sort=True):
        rows += _group_rows(dict(zip(GROUP, key)), group, items, n_replicates, seed, level)
    return pd.DataFrame(rows, columns=COLUMNS)


def _group_rows(key: dict, group: pd.DataFrame, items: pd.DataFrame, n_replicates: int,
                seed: int, level: float) -> list[dict]:
    labels = sorted(set(group["row"]), key=_row_order)
    per_label = {label: group[group["row"] == label].sort_values("seed", kind="mergesort")
                 for label in labels}
    matrices = _item_matrices(per_label, items, key["benchmark"])
    if BASE_LABEL not in per_label or matrices is None:
        return [{**key, "method": label, "seeds": len(runs), "items": 0,
                 "score": runs["score"].mean(), "gain": np.nan, "gain_low": np.nan,
                 "gain_high": np.nan, "excludes_zero": False}
                for label, runs in per_label.items()]
    ordered = [BASE_LABEL] + [label for label in labels if label != BASE_LABEL]
    replicates_RM = gain_replicates([matrices[label] for label in ordered], n_replicates, seed)
    low, high = percentile_interval(replicates_RM - replicates_RM[:, :1], level)
    base_score = matrices[BASE_LABEL].mean()
    rows = []
    for index, label in enumerate(ordered):
        score = matrices[label].mean()
        is_base = label == BASE_LABEL
        gain_low, gain_high = (np.nan, np.nan) if is_base else (low[index], high[index])
        rows.append({**key, "method": label, "seeds": matrices[label].shape[0],
                     "items": matrices[label].shape[1], "score": score,
                     "gain": np.nan if is_base else score - base_score,
                     "gain_low": gain_low, "gain_high": gain_high,
                     "excludes_zero": bool(gain_low > 0 or gain_high < 0)})
    return rows


def _item_matrices(per_label: dict[str, pd.DataFrame], items: pd.DataFrame,
                   benchmark: str) -> dict[str, np.ndarray] | None:
    """label -> (seeds x common items) scores, items sorted by id; None if no item is common."""
    mine = items[items["benchmark"] == benchmark].dropna(subset=["score"])
    by_run = {run: dict(zip(part["item_id"].astype(str), part["score"]))
              for run, part in mine.groupby("run_key", sort=False)}
    runs = [run for frame in per_label.values() for run in frame["run_key"]]
    if not runs or any(run not in by_run for run in runs):
        return None
    common = sorted(set.intersection(*(set(by_run[run]) for run in runs)))
    if not common:
        return None
    return {label: np.array([[by_run[run][item] for item in common]
                             for run in frame["run_key"]], dtype=float)
            for label, frame in per_label.items()}


def signed(value: object, digits: int = 2, scale: float = 100.0) -> str:
    """Points with an explicit sign (``+5.10``), ``–`` when missing."""
    text = fmt(value, digits, scale)
    return text if text == MISSING or text.startswith("-") or float(text) == 0 else "+" + text


def gains_table_display(table: pd.DataFrame) -> pd.DataFrame:
    """Score in percent, gain in points, interval marked ``*`` when it excludes zero."""
    rows = []
    for r in table.itertuples(index=False):
        interval = MISSING if pd.isna(r.gain_low) else (
            f"[{signed(r.gain_low)}, {signed(r.gain_high)}]" + ("*" if r.excludes_zero else ""))
        rows.append({"Model": r.model, "Train": r.training_set, "Benchmark": r.benchmark,
                     "Method": r.method, "Seeds": str(r.seeds), "Items": str(r.items),
                     "Score (%)": fmt(r.score, 1, 100), "Gain (points)": signed(r.gain),
                     "95% CI": interval})
    return pd.DataFrame(rows, columns=["Model", "Train", "Benchmark", "Method", "Seeds", "Items",
                                       "Score (%)", "Gain (points)", "95% CI"])
