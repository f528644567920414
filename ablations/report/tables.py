"""The report's tables as pure functions of the record frames (and of the component analysis).

- main table: methods x benchmarks (+ Overall = mean of the paper's six), per model, in percent;
- component table: main effect and Shapley value, each with one 95% interval (points);
- synergy table: the pairwise interaction index of every pair (points), long form, with its
  Holm-adjusted p-value and flag (``*`` in the matrices);
- retention table: PPLret, JSD to base and paired win rates against SFT.
Each returns a frame of numbers (for CSV) with a stable row order; ``ablations.report.display``
formats them for Markdown/LaTeX (marks, footnotes, bold best). Benchmark columns follow the
paper's table order (ScienceQA, GPQA, MBPP, HumanEval, CoS-E, ToolAlpaca), ours after.
Departure from the paper: a row lacking one of its model's benchmarks gets no Overall (never an
average over a different set of benchmarks); a study with fewer than the paper's six gets a
``Mean`` column instead, over the benchmarks its model was evaluated on, for complete rows only.
"""

from __future__ import annotations

import pandas as pd

from ablations.analysis.effects import OK_STATUS, ComponentAnalysis
from ablations.report.render import fmt
from pipelines.mlflow_layout import COMPONENT_SHORT, METHOD_NAMES, arm_label
from unisd_core.config import COMPONENT_NAMES

METHOD_ORDER = ("base", "sft", "sdft", "gkd", "ssd", "opsd", "unisd_star")
PAPER_ORDER = ("scienceqa", "gpqa", "mbpp", "humaneval", "cose", "toolalpaca")
# One definition of the labels: the MLflow arm tag (pipelines) and the report's rows must agree.
row_label = arm_label  # (method, subset, cell) -> "Base" / "SDFT" / "UniSD*" / "SD+AGR+EMA"


def _row_order(label: str) -> tuple[int, int, str]:
    names = list(METHOD_NAMES.values())
    if label in names:
        return (0, names.index(label), label)
    parts = label.removeprefix("SD+").split("+")
    shorts = list(COMPONENT_SHORT.values())
    return (1, len(parts), "".join(f"{shorts.index(p) if p in shorts else 9}" for p in parts))


def with_labels(scores: pd.DataFrame) -> pd.DataFrame:
    """Every row (finished or not) with a ``row`` display label."""
    out = scores.copy()
    out["row"] = [row_label(m, s, c) for m, s, c in
                  zip(out["method"], out["subset"], out["cell"])]
    return out


def labelled(scores: pd.DataFrame) -> pd.DataFrame:
    """Finished rows (one per run key and benchmark) with a ``row`` display label."""
    done = scores[(scores["status"] == OK_STATUS) & scores["score"].notna()]
    return with_labels(done.drop_duplicates(subset=["run_key", "benchmark"]))


def benchmark_order(present: set[str]) -> list[str]:
    """The paper's six in the paper's table order, then the others sorted."""
    return [b for b in PAPER_ORDER if b in present] + sorted(present - set(PAPER_ORDER))


def main_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Model, Method, then per benchmark the seed mean (percent), ``<b> sd``, ``<b> n``,
    ``<b> expected`` (seeds with a record of any state), then Overall or Mean.

    With all six of the paper present the summary is ``Overall`` = the mean of the six (ours
    never enter it); otherwise ``Mean`` over every benchmark present. Only a complete row (a
    value in every summarised benchmark of its model) gets a summary; the others are NaN and
    marked in the display.
    """
    every = with_labels(scores)
    done = labelled(scores)
    benchmarks = benchmark_order(set(every["benchmark"]))
    keys = ["model", "row", "benchmark"]
    grouped = done.groupby(keys)["score"]
    stats = pd.DataFrame({"mean": grouped.mean() * 100.0, "sd": grouped.std(ddof=1) * 100.0,
                          "n": grouped.count()})
    runs = every.drop_duplicates(subset=["run_key", "benchmark"])
    expected = runs.groupby(keys)["seed"].nunique()
    stats = stats.reindex(expected.index)
    stats["expected"] = expected
    stats["n"] = stats["n"].fillna(0).astype(int)
    table = pd.DataFrame(index=sorted(set(zip(every["model"], every["row"]))))
    for benchmark in benchmarks:
        part = stats.xs(benchmark, level="benchmark") if benchmark in set(
            stats.index.get_level_values("benchmark")) else pd.DataFrame()
        for column, suffix in (("mean", ""), ("sd", " sd"), ("n", " n"), ("expected", " expected")):
            values = part[column] if column in part else pd.Series(dtype=float)
            table[benchmark + suffix] = [values.get(key, float("nan")) for key in table.index]
    overall = set(PAPER_ORDER) <= set(benchmarks)
    summary = "Overall" if overall else "Mean"
    models = [model for model, _ in table.index]
    per_model = every.groupby("model")["benchmark"].agg(
        lambda b: [x for x in benchmarks if x in set(b) and (x in PAPER_ORDER or not overall)])
    table[summary] = [table.loc[[key], per_model[model]].iloc[0].mean(skipna=False)
                      if per_model[model] else float("nan")
                      for key, model in zip(table.index, models)]
    table.index = pd.MultiIndex.from_tuples(table.index, names=["Model", "Method"])
    table = table.reset_index()
    table["_order"] = table["Method"].map(_row_order)
    table = table.sort_values(["Model", "_order"], kind="mergesort").drop(columns="_order")
    return table.reset_index(drop=True)


def main_benchmarks(table: pd.DataFrame) -> list[str]:
    """The benchmark columns of a main table, in order."""
    return [c for c in table.columns[2:] if not c.endswith((" sd", " n", " expected"))
            and c not in ("Overall", "Mean")]


def component_table(analysis: ComponentAnalysis) -> pd.DataFrame:
    """One row per (model, training set, benchmark, component): main effect and Shapley, each
    with its one interval and p-value, plus the counts the estimates rest on."""
    effects = analysis.effects
    keys = ["model", "training_set", "benchmark", "component"]
    stats = ["estimate", "low", "high", "p_value"]
    counts = ["n_seeds", "seeds_expected", "n_items", "reason"]
    wide = None
    for kind in ("main", "shapley"):
        part = effects[effects["kind"] == kind][keys + stats + ["design"] + counts]
        part = part.rename(columns={s: f"{kind}_{s}" for s in stats})
        wide = part if wide is None else wide.merge(
            part.drop(columns=["design"] + counts), on=keys, how="left")
    assert wide is not None
    wide = wide[keys + ["design"] + [f"{k}_{s}" for k in ("main", "shapley") for s in stats]
                + counts]
    wide["_c"] = wide["component"].map(COMPONENT_NAMES.index)
    wide = wide.sort_values(["model", "training_set", "benchmark", "_c"], kind="mergesort")
    return wide.drop(columns="_c").reset_index(drop=True)


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
        cells = {(a, b): (v, f) for a, b, v, f in zip(group["component_a"], group["component_b"],
                                                       group["estimate"], group["flagged"])}
        rows = []
        for first, name in zip(shorts, COMPONENT_NAMES):
            row = {"": first}
            for short, other in zip(shorts, COMPONENT_NAMES):
                value, flagged = cells.get((name, other), cells.get((other, name), (None, 0)))
                row[short] = (fmt(value, 2, 100) + ("*" if flagged else "")
                              if other != name else "·")
            rows.append(row)
        index_name = str(group["index"].iloc[0])
        seeds = int(group["n_seeds"].min())
        counts = f"{seeds} seed(s), {int(group['n_items'].min())} items"
        fewer = "†" if seeds < int(group["seeds_expected"].max()) else ""
        matrices.append((f"{' / '.join(map(str, key))} ({index_name}; {counts}){fewer}",
                         pd.DataFrame(rows, columns=["", *shorts])))
    return matrices
