"""Retention table: how far each method moved from the base model (method.md section 6).

Per (model, method row): mean PPLret and mean JSD to base over the benchmarks and seeds that
logged them (``scores`` columns), and paired win rates against SFT over items (``items``
columns): the fraction of shared items where the method's JSD to base is lower than SFT's, and
where the base model gives the method's output a higher log-prob than SFT's. Items are matched
by (training set, benchmark, item id), seeds averaged per item first; ties are not wins.
Departure from the paper: none (the paper reports these two win rates for UniSD* only).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablations.report.render import fmt
from ablations.report.tables import _row_order, labelled

RETENTION_COLUMNS = ["Model", "Method", "pplret", "jsd_to_base", "win_jsd_vs_sft",
                     "win_logprob_vs_sft", "n_items_vs_sft"]


def retention_table(scores: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, non-base method row), sorted like the main table."""
    done = labelled(scores)
    done = done[done["method"] != "base"]
    rows = []
    per_item = _per_item(done, items)
    for (model, row), group in done.groupby(["model", "row"], sort=True):
        wins = _wins_against_sft(per_item, model, row)
        rows.append({"Model": model, "Method": row,
                     "pplret": _mean(group, "pplret"), "jsd_to_base": _mean(group, "jsd_to_base"),
                     **wins})
    table = pd.DataFrame(rows, columns=RETENTION_COLUMNS)
    table["_order"] = table["Method"].map(_row_order)
    table = table.sort_values(["Model", "_order"], kind="mergesort").drop(columns="_order")
    return table.reset_index(drop=True)


def retention_table_display(table: pd.DataFrame) -> pd.DataFrame:
    """Three decimals for PPLret/JSD, percent with one decimal for win rates."""
    shown = pd.DataFrame({
        "Model": table["Model"], "Method": table["Method"],
        "PPLret": [fmt(v, 3) for v in table["pplret"]],
        "JSD to base": [fmt(v, 4) for v in table["jsd_to_base"]],
        "JSD < SFT (%)": [fmt(v, 1, 100) for v in table["win_jsd_vs_sft"]],
        "log p_base > SFT (%)": [fmt(v, 1, 100) for v in table["win_logprob_vs_sft"]],
        "items": [str(int(v)) for v in table["n_items_vs_sft"]],
    })
    return shown


def _mean(group: pd.DataFrame, column: str) -> float:
    if column not in group.columns:
        return float("nan")
    values = group[column].dropna()
    return float(values.mean()) if len(values) else float("nan")


def _per_item(done: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Item metrics joined with (model, row, training set), seeds averaged."""
    metrics = [c for c in ("jsd_to_base", "base_logprob") if c in items.columns]
    runs = done[["run_key", "model", "row", "training_set"]].drop_duplicates()
    if not metrics:
        return pd.DataFrame(columns=["model", "row", "training_set", "benchmark", "item_id"])
    joined = items[["run_key", "benchmark", "item_id", *metrics]].merge(runs, on="run_key")
    keys = ["model", "row", "training_set", "benchmark", "item_id"]
    return joined.groupby(keys, sort=True)[metrics].mean().reset_index()


def _wins_against_sft(per_item: pd.DataFrame, model: str, row: str) -> dict[str, float]:
    empty = {"win_jsd_vs_sft": np.nan, "win_logprob_vs_sft": np.nan, "n_items_vs_sft": 0}
    if row == "SFT" or per_item.empty:
        return empty
    keys = ["training_set", "benchmark", "item_id"]
    mine = per_item[(per_item["model"] == model) & (per_item["row"] == row)]
    sft = per_item[(per_item["model"] == model) & (per_item["row"] == "SFT")]
    paired = mine.merge(sft, on=keys, suffixes=("", "_sft"))
    if paired.empty:
        return empty
    out = dict(empty, n_items_vs_sft=len(paired))
    for column, name, better in (("jsd_to_base", "win_jsd_vs_sft", np.less),
                                 ("base_logprob", "win_logprob_vs_sft", np.greater)):
        if column in paired.columns:
            both = paired[[column, f"{column}_sft"]].dropna()
            if len(both):
                out[name] = float(better(both[column], both[f"{column}_sft"]).mean())
    return out
