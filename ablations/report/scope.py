"""Study-scoped records: the report analyses exactly the cells of the study file as it expands now.

An MLflow experiment keeps every run ever logged under the study's name. Re-running a study after
changing one setting, or after a library-version bump (the version enters every run key), leaves
the old runs there; pooling them would double the seeds and average two different experiments.
So the report keeps only the runs whose run key is one of the grid's (``ablations.grid``), and:
- names the runs it left out, with their count per library version (a note);
- refuses more than one FINISHED run for one run key unless a policy is chosen
  (``latest``: the one that started last); a finished run wins over unfinished ones;
- adds a placeholder row (status ``not run``) for every cell of the grid with no run, so that a
  missing seed or benchmark is counted and marked in every table instead of shrinking a group;
- with ``include_versions``, also keeps runs of OTHER library versions whose cell name is in the
  grid (run keys differ across versions, so they are matched by name and cannot be checked for
  settings: said in the note); their model column reads ``<model> @ unisd <version>``, so every
  table shows the version and no group mixes versions;
- notes when the kept runs come from more than one environment (``unisd.env.fingerprint``;
  runs without it count as ``unknown``) and which recorded fields differ.
Departure from the paper: none (bookkeeping).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

DUPLICATE_POLICIES = ("error", "latest")
NOT_RUN = "not run"
UNKNOWN = "unknown"


class DuplicateRunsError(ValueError):
    """More than one finished run for a run key, and no policy chosen."""


@dataclass
class ScopedRecords:
    scores: pd.DataFrame
    items: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def scope_records(scores: pd.DataFrame, items: pd.DataFrame, cells: list, *,
                  duplicates: str = "error", include_versions: bool = False,
                  current_version: str | None = None) -> ScopedRecords:
    """Keep the grid's runs (see the module docstring). ``cells``: ``CellSpec`` objects."""
    if duplicates not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicates policy {duplicates!r}: choose one of {DUPLICATE_POLICIES}")
    scores = _with_identity(scores)
    wanted = {cell.run_key(): cell for cell in cells}
    in_grid = scores["run_key"].isin(wanted)
    notes: list[str] = []
    other = scores[~in_grid]
    names = {cell.name for cell in cells}
    extra = pd.DataFrame(columns=scores.columns)
    if include_versions and current_version is not None:
        chosen = other["cell"].isin(names) & (other["library_version"] != current_version)
        extra = other[chosen].assign(model=lambda f: f["model"].astype(str) + " @ unisd "
                                     + f["library_version"].astype(str))
        other = other[~chosen]
        if len(extra):
            notes.append(f"{extra['run_id'].nunique()} run(s) of other library versions "
                         f"included by cell name ({_by_version(extra)}); their settings cannot "
                         "be checked against the study file; model column marked @ unisd <v>")
    if len(other):
        sample = ", ".join(sorted(set(other["cell"].astype(str)))[:3])
        notes.append(f"{other['run_id'].nunique()} run(s) of the experiment are not cells of "
                     f"the study as it now expands (other settings or library versions: "
                     f"{_by_version(other)}) and were left out, e.g. {sample}")
    kept = pd.concat([scores[in_grid], extra]) if len(extra) else scores[in_grid]
    kept, duplicate_notes = _one_run_per_key(kept, duplicates)
    notes += duplicate_notes
    kept, missing_note = _placeholders(kept, wanted)
    notes += missing_note
    notes += environment_notes(kept)
    run_ids = set(kept["run_id"].dropna())
    if "run_id" in items.columns:
        items = items[items["run_id"].isin(run_ids)]
    else:
        items = items[items["run_key"].isin(set(kept["run_key"]))]
    return ScopedRecords(kept.reset_index(drop=True), items.reset_index(drop=True), notes)


def _with_identity(scores: pd.DataFrame) -> pd.DataFrame:
    """Frames without MLflow identity columns (tests, CSV) get one run per run key."""
    scores = scores.copy()
    if "run_id" not in scores.columns:
        scores["run_id"] = scores["run_key"]
    for column, default in (("start_time", 0), ("library_version", UNKNOWN)):
        if column not in scores.columns:
            scores[column] = default
    return scores


def _by_version(frame: pd.DataFrame) -> str:
    counts = frame.drop_duplicates("run_id")["library_version"].astype(str).value_counts()
    return ", ".join(f"version {v}: {n}" for v, n in sorted(counts.items()))


def _one_run_per_key(scores: pd.DataFrame, policy: str) -> tuple[pd.DataFrame, list[str]]:
    runs = scores.drop_duplicates("run_id")[["run_id", "run_key", "cell", "status",
                                             "start_time"]]
    runs = runs.assign(finished=runs["status"] == "done")
    counts = runs[runs["finished"]].groupby("run_key")["run_id"].nunique()
    doubled = counts[counts > 1]
    notes = []
    if len(doubled):
        cells = sorted(set(runs[runs["run_key"].isin(doubled.index)]["cell"].astype(str)))
        if policy == "error":
            raise DuplicateRunsError(
                f"{len(doubled)} run key(s) have more than one finished run "
                f"({', '.join(cells[:5])}{' ...' if len(cells) > 5 else ''}); choose a policy "
                "(--duplicates latest) or delete the extra runs in MLflow")
        notes.append(f"{len(doubled)} run key(s) had more than one finished run; kept the "
                     f"latest of each ({', '.join(cells[:5])})")
    best = runs.sort_values(["run_key", "finished", "start_time", "run_id"], kind="mergesort")
    chosen = set(best.groupby("run_key").tail(1)["run_id"])
    return scores[scores["run_id"].isin(chosen)], notes


def _placeholders(scores: pd.DataFrame, wanted: dict) -> tuple[pd.DataFrame, list[str]]:
    absent = [cell for key, cell in wanted.items() if key not in set(scores["run_key"])]
    if not absent:
        return scores, []
    rows = []
    for cell in absent:
        flags = {}
        if cell.train is not None:
            enabled = set(cell.train.components.enabled())
            flags = {name: name in enabled for name in _component_names()}
        rows += [{"run_key": cell.run_key(), "run_id": None, "cell": cell.name,
                  "model": cell.model, "training_set": cell.training_set, "method": cell.method,
                  "subset": cell.subset, "seed": cell.seed, "status": NOT_RUN,
                  "benchmark": benchmark, "score": float("nan"), **flags}
                 for benchmark in cell.benchmarks]
    added = pd.DataFrame(rows)
    for name in _component_names():
        added[name] = added[name].fillna(False).astype(bool) if name in added else False
    note = (f"{len(absent)} cell(s) of the study have no run yet (counted as missing): "
            + ", ".join(cell.name for cell in absent[:5]) + (" ..." if len(absent) > 5 else ""))
    return pd.concat([scores, added], ignore_index=True), [note]


def _component_names() -> tuple[str, ...]:
    from unisd_core.config import COMPONENT_NAMES

    return COMPONENT_NAMES


def environment_notes(scores: pd.DataFrame) -> list[str]:
    """A note when the kept runs come from more than one environment fingerprint."""
    runs = scores.dropna(subset=["run_id"]).drop_duplicates("run_id")
    if runs.empty:
        return []
    fingerprint = runs.get("env.fingerprint", pd.Series(UNKNOWN, index=runs.index))
    fingerprint = fingerprint.fillna(UNKNOWN).astype(str)
    counts = fingerprint.value_counts()
    if len(counts) < 2:
        return []
    # the dtype is each cell's own setting (not part of the fingerprint): not a machine difference
    fields = sorted(c for c in runs.columns
                    if c.startswith("env.") and c not in ("env.fingerprint", "env.dtype"))
    differ = []
    for column in fields:
        values = sorted(set(runs[column].fillna(UNKNOWN).astype(str)))
        if len(values) > 1:
            differ.append(f"{column.removeprefix('env.')} ({' vs '.join(values[:4])})")
    listing = ", ".join(f"{fp}: {n} run(s)" for fp, n in sorted(counts.items()))
    return [f"the runs come from {len(counts)} environments ({listing}); scores may differ "
            f"between machines; differing: {'; '.join(differ) or 'no recorded field'}"]
