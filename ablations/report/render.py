"""Deterministic rendering of tables to Markdown, LaTeX and CSV.

Same frame in, byte-identical text out: fixed float formats, no locale, no library whose
output style changes across versions (pandas' own Markdown/LaTeX writers need optional packages
and change formatting between releases). Cells are strings by the time they arrive here, except
in CSV, where numbers keep six decimals.
"""

from __future__ import annotations

import io
import math

import pandas as pd

MISSING = "–"


def fmt(value: object, digits: int = 1, scale: float = 1.0) -> str:
    """Fixed-point text of a number (scaled), ``–`` for missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    number = float(value) * scale
    text = f"{number:.{digits}f}"
    return "0." + "0" * digits if text == "-0." + "0" * digits else text


def fmt_interval(low: object, high: object, digits: int = 2, scale: float = 1.0) -> str:
    """``[low, high]`` or ``–``."""
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (low, high)):
        return MISSING
    return f"[{fmt(low, digits, scale)}, {fmt(high, digits, scale)}]"


def markdown_table(frame: pd.DataFrame, notes: list[str] | None = None) -> str:
    """GitHub Markdown; every cell already a string; ``notes`` follow the table as lines."""
    headers = [str(column) for column in frame.columns]
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    text = "\n".join(lines) + "\n"
    return text + "".join(f"\n{note}\n" for note in notes or [])


def latex_escape(text: str) -> str:
    """Escape the characters LaTeX treats specially in table cells; our marks become math."""
    replacements = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$",
                    "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                    "^": r"\textasciicircum{}", "–": "--", "±": r"$\pm$", "†": r"$^\dagger$",
                    "‡": r"$^\ddagger$", "§": r"\S{}", "·": r"$\cdot$"}
    return "".join(replacements.get(char, char) for char in text)


def latex_cell(text: str) -> str:
    """A cell, ``**x**`` (the Markdown bold of the display frames) as ``\\textbf{x}``."""
    if len(text) > 4 and text.startswith("**") and text.endswith("**"):
        return r"\textbf{" + latex_escape(text[2:-2]) + "}"
    return latex_escape(text)


def latex_table(frame: pd.DataFrame, caption: str, label: str, text_columns: int = 2,
                notes: list[str] | None = None) -> str:
    """A compact booktabs ``table`` (footnotesize); the first ``text_columns`` left-aligned;
    ``notes`` set under the tabular."""
    left = min(text_columns, len(frame.columns))
    spec = "l" * left + "r" * (len(frame.columns) - left)
    lines = [r"\begin{table}[t]", r"\centering", r"\footnotesize",
             rf"\caption{{{latex_escape(caption)}}}", rf"\label{{{label}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(str(c)) for c in frame.columns) + r" \\", r"\midrule"]
    for row in frame.itertuples(index=False):
        lines.append(" & ".join(latex_cell(str(cell)) for cell in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [r"\par\smallskip{\scriptsize " + latex_escape(note) + "}" for note in notes or []]
    lines += [r"\end{table}"]
    return "\n".join(lines) + "\n"


def csv_text(frame: pd.DataFrame) -> str:
    """CSV with six-decimal floats and ``\\n`` line ends."""
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.6f", lineterminator="\n")
    return buffer.getvalue()
