"""PNG plots of the report (matplotlib, Agg backend, no display needed).

- contribution bars: per (model, training set, benchmark), each component's Shapley value (or
  main effect when Shapley is not available) with its 95% interval (seeds and items);
- synergy heatmap: the pairwise interaction matrix of the same group;
- retention scatter: per model, JSD to base against the mean score of each method.
Plots are for reading, not for byte-level comparison (tests check they exist and decode).
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ablations.report.tables import COMPONENT_SHORT  # noqa: E402
from unisd_core.config import COMPONENT_NAMES  # noqa: E402


def slug(*parts: object) -> str:
    """File-name-safe join of the parts."""
    text = "_".join(str(p).rstrip("/").split("/")[-1] for p in parts)
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", text)


def contribution_plots(components: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One bar chart per group of the component table; returns the files written."""
    paths = []
    for key, group in components.groupby(["model", "training_set", "benchmark"], sort=True):
        use_shapley = group["shapley_estimate"].notna().all()
        prefix = "shapley" if use_shapley else "main"
        estimate = group[f"{prefix}_estimate"].to_numpy(dtype=float) * 100
        low = group[f"{prefix}_low"].to_numpy(dtype=float) * 100
        high = group[f"{prefix}_high"].to_numpy(dtype=float) * 100
        errors = np.vstack([np.nan_to_num(estimate - low), np.nan_to_num(high - estimate)])
        figure, axes = plt.subplots(figsize=(5, 3))
        axes.bar([COMPONENT_SHORT[c] for c in group["component"]], estimate, yerr=errors,
                 capsize=4, color="#4C72B0")
        axes.axhline(0, color="black", linewidth=0.8)
        axes.set_ylabel(f"{'Shapley value' if use_shapley else 'main effect'} (points)")
        axes.set_title(" / ".join(str(k) for k in key), fontsize=9)
        paths.append(_save(figure, out_dir / f"contributions_{slug(*key)}.png"))
    return paths


def synergy_plots(synergy: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One heatmap per group of the synergy table."""
    paths = []
    names = list(COMPONENT_NAMES)
    for key, group in synergy.groupby(["model", "training_set", "benchmark"], sort=True):
        matrix = np.full((len(names), len(names)), np.nan)
        for a, b, value in zip(group["component_a"], group["component_b"], group["estimate"]):
            i, j = names.index(a), names.index(b)
            matrix[i, j] = matrix[j, i] = value * 100
        limit = np.nanmax(np.abs(matrix)) if np.isfinite(matrix).any() else 1.0
        figure, axes = plt.subplots(figsize=(4.5, 4))
        image = axes.imshow(matrix, cmap="RdBu_r", vmin=-limit or -1, vmax=limit or 1)
        shorts = [COMPONENT_SHORT[n] for n in names]
        axes.set_xticks(range(len(names)), shorts)
        axes.set_yticks(range(len(names)), shorts)
        figure.colorbar(image, ax=axes, label="interaction (points)")
        axes.set_title(" / ".join(str(k) for k in key), fontsize=9)
        paths.append(_save(figure, out_dir / f"synergy_{slug(*key)}.png"))
    return paths


def retention_plots(main: pd.DataFrame, retention: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Per model: JSD to base (x) against the Overall/Mean score (y), one point per method."""
    summary = "Overall" if "Overall" in main.columns else "Mean"
    merged = retention.merge(main[["Model", "Method", summary]], on=["Model", "Method"])
    paths = []
    for model, group in merged.groupby("Model", sort=True):
        group = group.dropna(subset=["jsd_to_base", summary])
        if group.empty:
            continue
        figure, axes = plt.subplots(figsize=(5, 3.5))
        axes.scatter(group["jsd_to_base"], group[summary], color="#DD8452")
        for x, y, label in zip(group["jsd_to_base"], group[summary], group["Method"]):
            axes.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        axes.set_xlabel("JSD to base")
        axes.set_ylabel(f"{summary} score (%)")
        axes.set_title(str(model), fontsize=9)
        paths.append(_save(figure, out_dir / f"retention_{slug(model)}.png"))
    return paths


def _save(figure: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
