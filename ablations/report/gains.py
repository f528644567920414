"""The "gains over base" table: each method's score, its gain over the base model and a 95%
interval, per (model, training set, benchmark).

The interval is the one of ``ablations.analysis.intervals`` (seed-level t-interval plus an item
term; calibrated in the planted simulation, benchmarks/RESULTS.md): per seed s of a method the
item contrasts ``x_method[s, i] - x_base[i]`` (the base is one greedy run), paired on the items
scored by every kept run of the group, so score, gain and interval come from the same numbers.
With one seed the interval is ``-`` (training noise cannot be estimated). Gaps (failed runs, NaN
scores, items missing in some runs) are named in ``gap`` and counted in ``seeds``/``items``.
A pure function of the record frames, row order fixed: byte-identical output for identical
records. Departure from the paper: the paper reports gains without intervals; this is ours.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablations.analysis.intervals import contrast_intervals
from ablations.analysis.layout import run_matrices
from ablations.report.render import MISSING, fmt
from ablations.report.tables import METHOD_NAMES, _row_order, with_labels

BASE_LABEL = METHOD_NAMES["base"]
GROUP = ["model", "training_set", "benchmark"]
COLUMNS = GROUP + ["method", "seeds", "seeds_expected", "items", "score", "gain", "gain_low",
                   "gain_high", "excludes_zero", "gap"]
PAIR_WEIGHTS = np.array([[1.0], [-1.0]])


def gains_table(scores: pd.DataFrame, items: pd.DataFrame, *, level: float = 0.95
                ) -> pd.DataFrame:
    """One row per (model, training set, benchmark, method): base first, then by method order.

    ``score``/``gain`` are fractions (mean over seeds and common items); ``gain_low/high`` the
    interval of the gain; ``excludes_zero`` True when the interval lies on one side of zero.
    The base row carries its score only. A group without a finished base run gets no gains.
    """
    rows: list[dict] = []
    for key, group in with_labels(scores).groupby(GROUP, sort=True):
        rows += _group_rows(dict(zip(GROUP, key)), group, items, level)
    return pd.DataFrame(rows, columns=COLUMNS)


def _group_rows(key: dict, group: pd.DataFrame, items: pd.DataFrame, level: float) -> list[dict]:
    runs = group.rename(columns={"row": "label"})[["label", "seed", "run_key", "status",
                                                   "score"]]
    layout = run_matrices(runs, items, key["benchmark"])
    gap = "; ".join(layout.gaps)
    expected = runs.groupby("label")["seed"].nunique()
    labels = sorted(expected.index, key=_row_order)
    base = layout.matrices.get(BASE_LABEL)
    rows = []
    for label in labels:
        matrix = layout.matrices.get(label, np.empty((0, layout.n_items)))
        row = {**key, "method": label, "seeds": matrix.shape[0],
               "seeds_expected": int(expected[label]), "items": layout.n_items,
               "score": matrix.mean() if matrix.size else np.nan, "gain": np.nan,
               "gain_low": np.nan, "gain_high": np.nan, "excludes_zero": False, "gap": gap}
        if base is not None and label != BASE_LABEL and matrix.size:
            paired = np.stack([matrix, np.repeat(base[:1], matrix.shape[0], axis=0)])
            result = contrast_intervals(paired, PAIR_WEIGHTS, level)
            low, high = result.low[0], result.high[0]
            row.update(gain=result.estimate[0], gain_low=low, gain_high=high,
                       excludes_zero=bool(low > 0 or high < 0))
        rows.append(row)
    return rows


def signed(value: object, digits: int = 2, scale: float = 100.0) -> str:
    """Points with an explicit sign (``+5.10``), ``–`` when missing."""
    text = fmt(value, digits, scale)
    return text if text == MISSING or text.startswith("-") or float(text) == 0 else "+" + text


def gains_table_display(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Score in percent, gain in points, interval marked ``*`` when it excludes zero."""
    from ablations.report.display import (FEWER, NO_INTERVAL, NOTE_FEWER, NOTE_NO_INTERVAL)

    rows, marks = [], set()
    for r in table.itertuples(index=False):
        interval = MISSING if pd.isna(r.gain_low) else (
            f"[{signed(r.gain_low)}, {signed(r.gain_high)}]" + ("*" if r.excludes_zero else ""))
        if interval == MISSING and pd.notna(r.gain) and r.seeds < 2:
            interval, marks = NO_INTERVAL, marks | {NO_INTERVAL}
        fewer = r.seeds < r.seeds_expected or bool(r.gap)
        marks |= {FEWER} if fewer else set()
        rows.append({"Model": r.model, "Train": r.training_set, "Benchmark": r.benchmark,
                     "Method": r.method, "Seeds": str(r.seeds) + (FEWER if fewer else ""),
                     "Items": str(r.items), "Score (%)": fmt(r.score, 1, 100),
                     "Gain (points)": signed(r.gain), "95% CI": interval})
    notes = ["95% interval over training seeds and items (seed-level t, df = seeds - 1, plus the "
             "shared item term), paired "
             "on the items every run scored; * = excludes zero (one test per row, unadjusted)"]
    notes += [note for mark, note in ((FEWER, NOTE_FEWER), (NO_INTERVAL, NOTE_NO_INTERVAL))
              if mark in marks]
    frame = pd.DataFrame(rows, columns=["Model", "Train", "Benchmark", "Method", "Seeds",
                                        "Items", "Score (%)", "Gain (points)", "95% CI"])
    return frame, notes
