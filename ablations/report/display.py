"""Paper-ready display of the report's number frames: marks, footnotes, bold best, compact forms.

Every display function returns ``(frame of strings, footnotes)``. Marks: ``†`` a cell rests on
fewer seeds (or items) than the study asked for (failed cell, NaN score, missing run), ``‡`` a
summary left empty because its row is incomplete, ``§`` no calibrated interval (one seed).
``**x**`` marks the best value of a column within a model (``render`` turns it into
``\\textbf`` in LaTeX). Departure from the paper: the paper prints no spread; we print mean ± sd
over seeds (labelled) and intervals from ``ablations.analysis.intervals``.
"""

from __future__ import annotations

import math

import pandas as pd

from ablations.report.render import MISSING, fmt, fmt_interval
from ablations.report.tables import COMPONENT_SHORT, _row_order, main_benchmarks

FEWER = "†"
INCOMPLETE = "‡"
NO_INTERVAL = "§"
NOTE_FEWER = (f"{FEWER} fewer seeds or items than the study asked for (a failed cell, a NaN "
              "score or a missing run): see notes.md")
NOTE_INCOMPLETE = f"{INCOMPLETE} row incomplete: no average over a different set of benchmarks"
NOTE_NO_INTERVAL = (f"{NO_INTERVAL} one seed: training noise cannot be estimated, so no "
                    "calibrated interval is shown")
COMPACT_LABELS = 1  # subsets of this size appear in the compact (LaTeX) main table


def main_table_display(table: pd.DataFrame, rows: list[str] | None = None
                       ) -> tuple[pd.DataFrame, list[str]]:
    """Mean ± sd over seeds per benchmark, best per model and column in bold.

    ``rows`` limits the methods shown (the compact table); the bold best is over those shown.
    """
    benchmarks = main_benchmarks(table)
    summary = "Overall" if "Overall" in table.columns else "Mean"
    if rows is not None:
        table = table[table["Method"].isin(rows)]
    best = _best(table, [*benchmarks, summary])
    shown, marks = [], set()
    for index, r in table.iterrows():
        row = {"Model": r["Model"], "Method": r["Method"]}
        seeds = [int(r[f"{b} n"]) for b in benchmarks if r[f"{b} expected"] > 0]  # NaN: False
        row["Seeds"] = str(max(seeds)) if seeds else "0"
        for b in benchmarks:
            text, mark = _mean_sd(r[b], r[f"{b} sd"], r[f"{b} n"], r[f"{b} expected"])
            marks |= mark
            row[b] = _bold(text, index in best[b])
        if pd.isna(r[summary]):
            row[summary] = MISSING + INCOMPLETE
            marks.add(INCOMPLETE)
        else:
            row[summary] = _bold(fmt(r[summary], 1), index in best[summary])
        shown.append(row)
    notes = ["mean ± sd over seeds (percent); Seeds = runs per benchmark; bold = best of the "
             "model's rows in the column"]
    notes += [note for mark, note in ((FEWER, NOTE_FEWER), (INCOMPLETE, NOTE_INCOMPLETE))
              if mark in marks]
    return pd.DataFrame(shown, columns=["Model", "Method", "Seeds", *benchmarks, summary]), notes


def compact_rows(table: pd.DataFrame) -> list[str]:
    """Presets, single components and the largest subset: a main table that fits a page."""
    labels = list(dict.fromkeys(table["Method"]))
    subsets = [label for label in labels if label.startswith("SD+")]
    largest = max(subsets, key=lambda label: label.count("+"), default=None)
    return [label for label in labels if not label.startswith("SD+")
            or label.count("+") == COMPACT_LABELS or label == largest]


def _mean_sd(mean: float, sd: float, n: int, expected: int) -> tuple[str, set[str]]:
    if pd.isna(expected) or expected == 0:  # not a benchmark of this row's training set
        return MISSING, set()
    if n == 0 or pd.isna(mean):
        return MISSING + FEWER, {FEWER}
    text = f"{mean:.1f}" if n < 2 else f"{mean:.1f} ± {sd:.1f}"
    return (text + FEWER, {FEWER}) if n < expected else (text, set())


def _best(table: pd.DataFrame, columns: list[str]) -> dict[str, set]:
    best: dict[str, set] = {c: set() for c in columns}
    for _, group in table.groupby("Model", sort=False):
        for column in columns:
            values = group[column].dropna()
            if len(values) > 1:
                best[column] |= set(values.index[values == values.max()])
    return best


def _bold(text: str, is_best: bool) -> str:
    return f"**{text}**" if is_best else text


def component_display(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Compact: one row per (model, training set, component), one column per benchmark.

    A cell is the Shapley value with its interval when the grid is complete, else the main
    effect (column ``Index`` says which), in points.
    """
    from ablations.report.tables import benchmark_order

    benchmarks = benchmark_order(set(table["benchmark"]))
    rows, marks = [], set()
    for (model, training_set, component), part in table.groupby(
            ["model", "training_set", "component"], sort=False):
        use_shapley = part["shapley_estimate"].notna().all()
        kind = "shapley" if use_shapley else "main"
        row = {"Model": model, "Train": training_set,
               "Component": COMPONENT_SHORT.get(component, component),
               "Index": "Shapley" if use_shapley else "main"}
        by_benchmark = {r.benchmark: r for r in part.itertuples(index=False)}
        for b in benchmarks:
            r = by_benchmark.get(b)
            text, mark = _effect_cell(r, kind) if r is not None else ("", set())
            marks |= mark
            row[b] = text
        rows.append(row)
    notes = ["points; estimate [95% interval] over training seeds and items "
             "(seed-level t, df = seeds - 1, plus the shared item term; see "
             "docs/reading-the-report.md)"]
    notes += [note for mark, note in ((FEWER, NOTE_FEWER), (NO_INTERVAL, NOTE_NO_INTERVAL))
              if mark in marks]
    frame = pd.DataFrame(rows, columns=["Model", "Train", "Component", "Index", *benchmarks])
    order = frame["Component"].map(list(COMPONENT_SHORT.values()).index)
    frame = frame.assign(_o=order).sort_values(["Model", "Train", "_o"], kind="mergesort")
    return frame.drop(columns="_o").reset_index(drop=True), notes


def _effect_cell(r, kind: str) -> tuple[str, set[str]]:
    estimate = getattr(r, f"{kind}_estimate")
    if estimate is None or (isinstance(estimate, float) and math.isnan(estimate)):
        fewer = r.n_seeds < r.seeds_expected
        return (MISSING + FEWER, {FEWER}) if fewer else (MISSING, set())
    marks = set()
    low, high = getattr(r, f"{kind}_low"), getattr(r, f"{kind}_high")
    interval = fmt_interval(low, high, 2, 100)
    if interval == MISSING:
        interval, marks = NO_INTERVAL, {NO_INTERVAL}
    text = f"{fmt(estimate, 2, 100)} {interval}"
    if r.n_seeds < r.seeds_expected:
        text, marks = text + FEWER, marks | {FEWER}
    return text, marks


def method_order(labels: list[str]) -> list[str]:
    """Display labels in the report's row order."""
    return sorted(labels, key=_row_order)


def gains_compact(table: pd.DataFrame, model: str) -> tuple[pd.DataFrame, list[str]]:
    """One model's gains as methods x benchmarks, ``gain [interval]`` in points (the LaTeX
    form; presets, single components and the full subset, like the compact main table)."""
    from ablations.report.gains import BASE_LABEL, signed
    from ablations.report.tables import benchmark_order

    mine = table[(table["model"] == model) & (table["method"] != BASE_LABEL)]
    benchmarks = benchmark_order(set(mine["benchmark"]))
    methods = method_order(list(set(mine["method"])))
    methods = [m for m in methods if m in compact_rows(pd.DataFrame({"Method": methods}))]
    rows, marks = [], set()
    for method in methods:
        row = {"Method": method}
        for b in benchmarks:
            part = mine[(mine["method"] == method) & (mine["benchmark"] == b)]
            if part.empty:
                row[b] = ""
                continue
            r = part.iloc[0]
            if pd.isna(r["gain_low"]):
                no_interval = pd.notna(r["gain"])
                interval = NO_INTERVAL if no_interval else ""
                mark = {NO_INTERVAL} if no_interval else set()
            else:
                interval = f"[{signed(r['gain_low'])}, {signed(r['gain_high'])}]" + (
                    "*" if r["excludes_zero"] else "")
                mark = set()
            fewer = r["seeds"] < r["seeds_expected"] or bool(r["gap"])
            marks |= mark | ({FEWER} if fewer else set())
            row[b] = f"{signed(r['gain'])} {interval}".strip() + (FEWER if fewer else "")
        rows.append(row)
    notes = ["gain over the base (points) [95% interval over seeds and items]; * = excludes zero"]
    notes += [note for mark, note in ((FEWER, NOTE_FEWER), (NO_INTERVAL, NOTE_NO_INTERVAL))
              if mark in marks]
    return pd.DataFrame(rows, columns=["Method", *benchmarks]), notes
