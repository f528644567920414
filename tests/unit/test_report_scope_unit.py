"""Study scoping on record frames (the MLflow path is in tests/integration/test_report_scope.py):
other library versions only on request and marked, environments counted with "unknown"."""

from __future__ import annotations

import pandas as pd
import pytest

from ablations.grid import expand_grid
from ablations.report.scope import DuplicateRunsError, environment_notes, scope_records
from ablations.study import validate_study
from pipelines.graph import cell_tags


def _cells():
    spec = validate_study({"name": "s", "models": ["tiny-qwen2"], "training_sets": ["cose"],
                           "components": [[], ["ema"]], "presets": [], "seeds": [0]})
    return expand_grid(spec)


def _rows(cells, *, version: str, key_suffix: str = "", env=None) -> pd.DataFrame:
    rows = []
    for index, cell in enumerate(cells):
        tags = cell_tags(cell)
        rows.append({"run_key": cell.run_key() + key_suffix, "run_id": f"{version}-{index}",
                     "start_time": index, "library_version": version, "cell": cell.name,
                     "model": cell.model, "training_set": cell.training_set,
                     "method": cell.method, "subset": cell.subset, "seed": cell.seed,
                     "status": "done", "benchmark": "cose", "score": 0.5,
                     **{name: tags[f"unisd.component.{name}"] == "true"
                        for name in ("agreement", "contrastive", "feature_matching", "ema",
                                     "clipping")},
                     **({"env.fingerprint": env[index]} if env else {})})
    return pd.DataFrame(rows)


def test_other_versions_are_left_out_unless_included_and_then_marked() -> None:
    cells = _cells()
    now = _rows(cells, version="0.9.0")
    old = _rows(cells, version="0.8.0", key_suffix="-old")  # a version bump changes every key
    scores = pd.concat([now, old], ignore_index=True)
    items = pd.DataFrame(columns=["run_key", "run_id", "benchmark", "item_id", "score"])
    scoped = scope_records(scores, items, cells, current_version="0.9.0")
    assert set(scoped.scores["library_version"]) == {"0.9.0"}
    assert any("2 run(s) of the experiment are not cells" in n and "version 0.8.0: 2" in n
               for n in scoped.notes)
    both = scope_records(scores, items, cells, include_versions=True, current_version="0.9.0")
    assert len(both.scores) == 4
    assert set(both.scores["model"]) == {"tiny-qwen2", "tiny-qwen2 @ unisd 0.8.0"}
    assert any("other library versions included" in n for n in both.notes)


def test_duplicates_error_names_the_cell_and_latest_keeps_one() -> None:
    cells = _cells()
    first = _rows(cells, version="0.9.0")
    again = first.iloc[[1]].assign(run_id="again", start_time=99, score=0.7)
    scores = pd.concat([first, again], ignore_index=True)
    items = pd.DataFrame(columns=["run_key", "run_id", "benchmark", "item_id", "score"])
    with pytest.raises(DuplicateRunsError, match=cells[1].name):
        scope_records(scores, items, cells, current_version="0.9.0")
    kept = scope_records(scores, items, cells, duplicates="latest", current_version="0.9.0")
    assert len(kept.scores) == 2
    assert kept.scores.set_index("run_id").loc["again", "score"] == 0.7


def test_environment_note_counts_runs_without_the_tag_as_unknown() -> None:
    frame = pd.DataFrame({"run_id": ["a", "b", "c"], "env.fingerprint": ["f1", "f1", None],
                          "env.torch": ["2.13.0", "2.13.0", None]})
    note = environment_notes(frame)[0]
    assert "2 environments" in note and "f1: 2 run(s)" in note and "unknown: 1 run(s)" in note
    assert "torch (2.13.0 vs unknown)" in note
    assert environment_notes(frame.iloc[:2]) == []
