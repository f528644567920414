"""``unisd report``: records -> tables (Markdown, LaTeX, CSV), plots, contribution metrics.

``build_report`` is a pure function of the two record frames plus an output folder: it writes
every file and returns their paths, the main table and the contribution metrics (for the study's
parent run in MLflow, attached by the CLI through ``pipelines.mlflow_adapter``). Tables are
byte-identical for identical records (fixed formats, sorted rows, no random resampling).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ablations.analysis import MULTIPLICITY, analyse_components
from ablations.analysis.factorial import fit_factorial_ols
from ablations.report import plots
from ablations.report.display import (compact_rows, component_display, gains_compact,
                                      main_table_display)
from ablations.report.gains import gains_table, gains_table_display
from ablations.report.render import csv_text, fmt, latex_table, markdown_table
from ablations.report.retention import retention_table, retention_table_display
from ablations.report.tables import (component_table, labelled, main_table, synergy_matrices,
                                     synergy_table)


@dataclass
class Report:
    """What ``build_report`` produced."""

    files: list[Path] = field(default_factory=list)
    main: pd.DataFrame | None = None
    gains: pd.DataFrame | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def build_report(scores: pd.DataFrame, items: pd.DataFrame, out_dir: Path | str, *,
                 with_plots: bool = True, notes: list[str] | None = None) -> Report:
    """Write every table and plot for the records into ``out_dir``.

    ``notes`` (e.g. the study scoping's) lead ``notes.md``. Raises ``ValueError`` when the
    records hold no finished run (nothing to report).
    """
    if labelled(scores).empty:
        raise ValueError(f"no finished runs among {len(scores)} score rows: nothing to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = Report()
    main = main_table(scores)
    analysis = analyse_components(scores, items)
    components = component_table(analysis)
    synergy = synergy_table(analysis)
    retention = retention_table(scores, items)
    ols, ols_notes = fit_factorial_ols(scores)
    gains = gains_table(scores, items)
    gap_notes = [f"{'/'.join(map(str, key))}: {gap}" for key, gaps in analysis.gaps.items()
                 for gap in gaps]
    gap_notes += sorted({f"{r.model}/{r.training_set}/{r.benchmark}: {r.gap}"
                         for r in gains.itertuples(index=False) if r.gap} - set(gap_notes))
    report.main, report.gains = main, gains
    report.notes = [*(notes or []), *gap_notes, *analysis.notes, *ols_notes]
    write = _writer(out, report)
    shown, foot = main_table_display(main)
    write("main_table", main, shown, "Scores (%) per method and benchmark", foot)
    report.files += _write_compact_main(out, main)  # replaces the long main_table.tex
    shown, foot = gains_table_display(gains)
    write("gains", gains, shown, "Gain over the base model (points) with 95% intervals", foot,
          text_columns=4)
    _write_compact_gains(out, gains)  # replaces the long gains.tex
    shown, foot = component_display(components)
    write("components", components, shown, "Component contributions (points)", foot,
          text_columns=4)
    write("retention", retention, retention_table_display(retention),
          "Retention: PPLret, JSD to base and paired win rates against SFT")
    write("ols", ols, _ols_display(ols), "Factorial OLS cross-check (effect scale, points)",
          [f"terms the design does not identify are dropped: {n}" for n in ols_notes])
    write("missing_subsets", analysis.missing, analysis.missing.astype(str),
          "Subsets missing from the component grid")
    report.files += _write_synergy(out, synergy)
    (out / "notes.md").write_text("".join(f"- {n}\n" for n in report.notes) or "- none\n")
    report.files.append(out / "notes.md")
    if with_plots:
        figures = out / "plots"
        report.files += plots.contribution_plots(components, figures)
        report.files += plots.synergy_plots(synergy, figures)
        report.files += plots.retention_plots(main, retention, figures)
    report.metrics = contribution_metrics(components)
    return report


def _writer(out: Path, report: Report):
    def write(stem: str, numbers: pd.DataFrame, shown: pd.DataFrame, caption: str,
              notes: list[str] | None = None, text_columns: int | None = None) -> None:
        if text_columns is None:
            text_columns = sum(not _numeric_column(shown[c]) for c in shown.columns)
        for suffix, text in ((".csv", csv_text(numbers)), (".md", markdown_table(shown, notes)),
                             (".tex", latex_table(shown, caption, f"tab:{stem}", text_columns,
                                                  notes))):
            path = out / f"{stem}{suffix}"
            path.write_text(text, encoding="utf-8")
            report.files.append(path)
    return write


def _write_compact_main(out: Path, main: pd.DataFrame) -> list[Path]:
    """``main_table.tex``: one page-sized booktabs table per model (presets, single
    components, the full subset); every subset stays in main_table.md and .csv."""
    parts = []
    for index, (model, table) in enumerate(main.groupby("Model", sort=True)):
        shown, foot = main_table_display(table, rows=compact_rows(table))
        parts.append(latex_table(shown.drop(columns="Model"), f"Scores (%) of {model}",
                                 f"tab:main{index}", 1, foot))
    path = out / "main_table.tex"
    path.write_text("".join(parts), encoding="utf-8")
    return []  # already listed by the writer


def _write_compact_gains(out: Path, gains: pd.DataFrame) -> None:
    """``gains.tex``: methods x benchmarks per model; every row stays in gains.md and .csv."""
    parts = []
    for index, model in enumerate(sorted(set(gains["model"]))):
        shown, foot = gains_compact(gains, model)
        parts.append(latex_table(shown, f"Gain over the base model (points) of {model}",
                                 f"tab:gains{index}", 1, foot))
    (out / "gains.tex").write_text("".join(parts) or "% no gains\n", encoding="utf-8")


def _numeric_column(column: pd.Series) -> bool:
    """True when every cell reads as a number, an interval or the missing mark."""
    return all(str(v).strip("*").lstrip("-[").split(",")[0].split(" ")[0].replace(".", "", 1)
               .isdigit() or str(v).startswith("–") for v in column)


def _write_synergy(out: Path, synergy: pd.DataFrame) -> list[Path]:
    matrices = synergy_matrices(synergy)
    note = (f"points; * = interval excludes zero after {MULTIPLICITY} adjustment over the pairs "
            "of the group (family-wise 5%); † = fewer seeds or items than the study asked for "
            "(see notes.md); with one seed nothing can be flagged")
    markdown = "".join(f"### {title}\n\n{markdown_table(m, [note])}\n" for title, m in matrices)
    latex = "".join(latex_table(m, f"Pairwise interaction (points): {title}",
                                f"tab:synergy{index}", 1, [note]) for index, (title, m) in
                    enumerate(matrices))
    paths = []
    for suffix, text in ((".csv", csv_text(synergy)), (".md", markdown or "(no groups)\n"),
                         (".tex", latex or "% no groups\n")):
        path = out / f"synergy{suffix}"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def _ols_display(ols: pd.DataFrame) -> pd.DataFrame:
    shown = ols[["model", "training_set", "benchmark", "term"]].astype(str).copy()
    shown["effect"] = [fmt(v, 2, 100) for v in ols["effect"]]
    shown["std. error"] = [fmt(v, 2, 100) for v in ols["std_error"]]
    shown["F"] = [fmt(v, 2) for v in ols["f_value"]]
    shown["p"] = [fmt(v, 4) for v in ols["p_value"]]
    return shown


def contribution_metrics(components: pd.DataFrame) -> dict[str, float]:
    """``contribution/<model>/<training set>/<benchmark>/<component>/<main|shapley>`` (points)."""
    metrics: dict[str, float] = {}
    for row in components.itertuples(index=False):
        for kind in ("main", "shapley"):
            value = getattr(row, f"{kind}_estimate")
            if pd.notna(value):
                name = "/".join(["contribution", plots.slug(row.model), row.training_set,
                                 row.benchmark, row.component, kind])
                metrics[name] = round(float(value) * 100, 6)
    return metrics
