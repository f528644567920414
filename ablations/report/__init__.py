"""Report: tables (Markdown, LaTeX, CSV) and plots from the study's record frames."""

from ablations.report.build import Report, build_report

__all__ = ["Report", "build_report"]
