"""The report's tables as pure functions of the record frames (and of the component analysis).

- main table: methods x benchmarks (+ Overall = mean of the paper's six), per model, in percent;
- component table: main effect and Shapley value with item and seed intervals (points);
- synergy table: the pairwise interaction index of every pair (points), long form;
- retention table: PPLret, JSD to base and paired win rates against SFT.
Each returns a frame of numbers (for CSV) with a stable row order; ``*_display`` variants format
them for Markdown/LaTeX. Departure from the paper: when a row lacks some of the six benchmarks
its Overall is left empty rather than averaged over fewer benchmarks (the paper's Overall is
over all six); a study with fewer benchmarks gets a ``Mean`` column instead, each model averaged
over the benchmarks it was evaluated on.
"""

from __future__ import annotations

import pandas as pd

from ablations.analysis.effects import OK_STATUS, ComponentAnalysis
from ablations.grid import cell_label
from ablations.report.render import fmt, fmt_interval
from unisd_core.config import COMPONENT_NAMES
from unisd_core.data.records import BENCHMARKS

METHOD_ORDER = ("base", "sft", "sdft", "gkd", "ssd", "opsd", "unisd_star")
METHOD_NAMES = {"base": "Base", "sft": "SFT", "sdft": "SDFT", "gkd": "GKD", "ssd": "SSD",
                "opsd": "OPSD", "unisd_star": "UniSD*"}
COMPONENT_SHORT = {"agreement": "AGR", "contrastive": "CON", "feature_matching": "FM",
                   "ema": "EMA", "clipping": "CLIP"}


def row_label(method: str, subset: str, cell: str) -> str:
    """Display name of a row: a preset name, or ``SD+AGR+EMA`` for a component subset."""
    label = cell_label(str(cell))
    if label == "unisd_star":
        return METHOD_NAMES["unisd_star"]
    if method != "unisd":
        return METHOD_NAMES.get(method, method)
    return "SD+" + "+".join(COMPONENT_SHORT.get(p, p) for p in str(subset).split("+"))


def _row_order(label: str) -> tuple[int, int, str]:
    names = list(METHOD_NAMES.values())
    if label in names:
        return (0, names.index(label), label)
    parts = label.removeprefix("SD+").split("+")
    shorts = list(COMPONENT_SHORT.values())
    return (1, len(parts), "".join(f"{shorts.index(p) if p in shorts else 9}" for p in parts))


def labelled(scores: pd.DataFrame) -> pd.DataFrame:
    """Finished rows with a ``row`` display label."""
    done = scores[(scores["status"] == OK_STATUS) & scores["score"].notna()].copy()
    done["row"] = [row_label(m, s, c) for m, s, c in
                   zip(done["method"], done["subset"], done["cell"])]
    return done


def main_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Model, method, one column per benchmark present (seed mean, percent), Overall or Mean.

    Columns: the paper's six in their order, then ours (``synthetic``). With all six present the
    summary is ``Overall`` = the mean of the six (ours never enter it); otherwise ``Mean`` over
    every benchmark present.
    """
    done = labelled(scores)
    present = set(done["benchmark"])
    benchmarks = [b for b in BENCHMARKS if b in present]
    benchmarks += sorted(present - set(BENCHMARKS))
    table = (done.groupby(["model", "row", "benchmark"])["score"].mean() * 100.0).unstack()
    table = table.reindex(columns=benchmarks)
    table.columns.name = None
    overall = set(BENCHMARKS) <= present
    summary = "Overall" if overall else "Mean"
    # Each model is summarised over the benchmarks it was evaluated on (only the paper's six for
    # Overall); a row that lacks one of them gets no summary (never an average over a different
    # set of benchmarks).
    per_model = done.groupby("model")["benchmark"].agg(
        lambda b: sorted(set(b) & set(BENCHMARKS) if overall else set(b)))
    models = table.index.get_level_values("model")
    table[summary] = [table.loc[key, per_model[model]].mean(skipna=False)
                      for key, model in zip(table.index, models)]
    if overall:
        table.loc[[len(per_model[m]) < len(BENCHMARKS) for m in models], summary] = float("nan")
    table = table.reset_index().rename(columns={"model": "Model", "row": "Method"})
    table["_order"] = table["Method"].map(_row_order)
    table = table.sort_values(["Model", "_order"], kind="mergesort").drop(columns="_order")
    return table.reset_index(drop=True)


def main_table_display(table: pd.DataFrame) -> pd.DataFrame:
    """Scores with one decimal."""
    shown = table.copy()
    for column in shown.columns[2:]:
        shown[column] = [fmt(v, 1) for v in shown[column]]
    return shown


def component_table(analysis: ComponentAnalysis) -> pd.DataFrame:
    """One row per (model, training set, benchmark, component): main effect and Shapley."""
    effects = analysis.effects
    keys = ["model", "training_set", "benchmark", "component"]
    stats = ["estimate", "item_low", "item_high", "seed_low", "seed_high"]
    wide = None
    for kind in ("main", "shapley"):
        part = effects[effects["kind"] == kind][keys + stats + ["design"]]
        part = part.rename(columns={s: f"{kind}_{s}" for s in stats})
        wide = part if wide is None else wide.merge(part.drop(columns="design"), on=keys,
                                                     how="left")
    assert wide is not None
    wide["_c"] = wide["component"].map(COMPONENT_NAMES.index)
    wide = wide.sort_values(["model", "training_set", "benchmark", "_c"], kind="mergesort")
    return wide.drop(columns="_c").reset_index(drop=True)


def component_table_display(table: pd.DataFrame) -> pd.DataFrame:
    """Points (x100) with two decimals and intervals."""
    rows = []
    for r in table.itertuples(index=False):
        rows.append({"Model": r.model, "Train": r.training_set, "Benchmark": r.benchmark,
                     "Component": r.component, "Design": r.design,
                     "Main effect": fmt(r.main_estimate, 2, 100),
                     "CI items": fmt_interval(r.main_item_low, r.main_item_high, 2, 100),
                     "CI seeds": fmt_interval(r.main_seed_low, r.main_seed_high, 2, 100),
                     "Shapley": fmt(r.shapley_estimate, 2, 100),
                     "Shapley CI items": fmt_interval(r.shapley_item_low, r.shapley_item_high,
                                                      2, 100),
                     "Shapley CI seeds": fmt_interval(r.shapley_seed_low, r.shapley_seed_high,
                                                      2, 100)})
    return pd.DataFrame(rows, columns=["Model", "Train", "Benchmark", "Component", "Design",
                                       "Main effect", "CI items", "CI seeds", "Shapley",
                                       "Shapley CI items", "Shapley CI seeds"])


def synergy_table(analysis: ComponentAnalysis) -> pd.DataFrame:
    """Long form: one row per (group, pair) with its index name, estimate and intervals."""
    table = analysis.interactions.copy()
    table["_a"] = table["component_a"].map(COMPONENT_NAMES.index)
    table["_b"] = table["component_b"].map(COMPONENT_NAMES.index)
    table = table.sort_values(["model", "training_set", "benchmark", "_a", "_b"],
                              kind="mergesort")
    return table.drop(columns=["_a", "_b"]).reset_index(drop=True)


def synergy_matrices(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One 5x5 display matrix (points, two decimals) per (model, training set, benchmark)."""
    matrices = []
    for key, group in table.groupby(["model", "training_set", "benchmark"], sort=True):
        shorts = [COMPONENT_SHORT[name] for name in COMPONENT_NAMES]
        cells = {(a, b): v for a, b, v in
                 zip(group["component_a"], group["component_b"], group["estimate"])}
        rows = []
        for first, name in zip(shorts, COMPONENT_NAMES):
            row = {"": first}
            for short, other in zip(shorts, COMPONENT_NAMES):
                value = cells.get((name, other), cells.get((other, name)))
                row[short] = fmt(value, 2, 100) if other != name else "·"
            rows.append(row)
        index_name = str(group["index"].iloc[0])
        matrices.append((f"{' / '.join(map(str, key))} ({index_name})",
                         pd.DataFrame(rows, columns=["", *shorts])))
    return matrices
