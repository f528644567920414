"""``unisd report`` on real MLflow records (SQLite, logged through pipelines' tracker): the report
is scoped to the study file as it now expands, and every gap is counted and visible (issue 12),
and runs from two environments get a note (issue 13.3)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from ablations.cli import app
from ablations.grid import expand_grid
from ablations.study import validate_study
from pipelines.graph import cell_tags
from pipelines.mlflow_adapter import RUN_KEY_TAG, StudyTracker, prepare_store

pytestmark = pytest.mark.integration
N_ITEMS = 10


def _study(tmp_path: Path, max_new_tokens: int = 16, seeds=(0, 1)) -> dict:
    return {"name": "scope-it", "output_dir": str(tmp_path / "run"),
            "models": ["tiny-qwen2"], "training_sets": ["scienceqa"],
            "components": [[], ["ema"]], "presets": ["base"], "seeds": list(seeds),
            "evaluation": {"limit": 8, "max_new_tokens": max_new_tokens}}


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _item_scores(level: float, seed: int) -> list[float]:
    """``N_ITEMS`` 0/1 scores with mean exactly ``level`` (a multiple of 1/N_ITEMS)."""
    ones = int(round(level * N_ITEMS))
    scores = [1.0] * ones + [0.0] * (N_ITEMS - ones)
    return scores[seed % N_ITEMS:] + scores[:seed % N_ITEMS]


def _log(spec, levels, *, skip=(), status=None, env=None, extra_run_for=None) -> dict:
    """Log every cell with item scores at ``levels(cell)``; returns cell name -> run id.

    ``skip``: (cell name, benchmark) pairs not evaluated; ``status``: cell name -> status;
    ``env``: cell name -> environment tags; ``extra_run_for``: a cell logged a second time (a
    duplicated run of the same run key, at its level + 0.2)."""
    uri = spec.resolved_tracking_uri()
    tracker = StudyTracker(spec.name, uri, artifact_root=prepare_store(
        uri, spec.resolved_output_dir()))
    ids = {}
    for cell in expand_grid(spec):
        run_id = tracker.ensure_cell_run(cell.model_dump(mode="json"), cell_tags(cell))
        _evaluate(tracker, run_id, cell, levels(cell), skip)
        tracker.set_tags(run_id, (env or {}).get(cell.name, {}))
        tracker.finish(run_id, (status or {}).get(cell.name, "done"))
        ids[cell.name] = run_id
        if cell.name == extra_run_for:
            client = MlflowClient(tracking_uri=uri)
            again = client.create_run(tracker.experiment_id, tags=cell_tags(cell)).info.run_id
            _evaluate(tracker, again, cell, levels(cell) + 0.2, skip)
            tracker.finish(again, "done")
            ids["duplicate"] = again
    return ids


def _evaluate(tracker, run_id, cell, level, skip) -> None:
    results = {}
    for benchmark in cell.benchmarks:
        if (cell.name, benchmark) in skip:
            continue
        scores = _item_scores(level, cell.seed)
        results[benchmark] = {"score": sum(scores) / len(scores), "task_version": "1",
                              "items": [{"item_id": f"{benchmark}-{i}", "score": s}
                                        for i, s in enumerate(scores)]}
    tracker.log_evaluation(run_id, results)


def _report(study_file: Path, out: Path, *extra: str):
    result = CliRunner().invoke(app, ["report", str(study_file), "--out", str(out),
                                      "--no-plots", "--no-attach", *extra])
    return result


def _main(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "main_table.csv").set_index("Method")


def _level(ema: float, none: float = 0.4, base: float = 0.3):
    return lambda cell: base if cell.method == "base" else (ema if "ema" in cell.subset
                                                            else none)


def test_rerun_after_a_settings_change_reports_only_the_new_runs(tmp_path: Path) -> None:
    old = validate_study(_study(tmp_path, max_new_tokens=16))
    _log(old, _level(ema=0.4))                       # old settings: EMA does nothing
    raw = _study(tmp_path, max_new_tokens=24)         # one setting changed: new run keys
    new = validate_study(raw)
    _log(new, _level(ema=0.6))                        # new settings: EMA +20 points
    out = tmp_path / "report"
    result = _report(_write(tmp_path, raw), out)
    assert result.exit_code == 0, result.output
    main = _main(out)
    assert main.loc["SD+EMA", "scienceqa"] == pytest.approx(60.0)
    assert main.loc["SD+EMA", "scienceqa n"] == 2  # two seeds, not four
    gains = pd.read_csv(out / "gains.csv")
    ema = gains[(gains["method"] == "SD+EMA") & (gains["benchmark"] == "scienceqa")].iloc[0]
    assert ema["gain"] == pytest.approx(0.3)
    # Notes go to the terminal and, unwrapped, to notes.md.
    assert "note" in result.output
    assert "5 run(s) of the experiment are not cells of the study" in (out / "notes.md").read_text()


def test_duplicated_run_is_an_error_unless_a_policy_is_chosen(tmp_path: Path) -> None:
    raw = _study(tmp_path)
    spec = validate_study(raw)
    ids = _log(spec, _level(ema=0.6), extra_run_for="tiny-qwen2__scienceqa__ema__seed0")
    study_file = _write(tmp_path, raw)
    refused = _report(study_file, tmp_path / "refused")
    assert refused.exit_code == 1
    assert "more than one finished run" in refused.output and "--duplicates latest" in \
        refused.output
    out = tmp_path / "latest"
    result = _report(study_file, out, "--duplicates", "latest")
    assert result.exit_code == 0, result.output
    # The latest run (level 0.8 at seed 0) replaces the first, it is not averaged with it.
    assert _main(out).loc["SD+EMA", "scienceqa"] == pytest.approx((80.0 + 60.0) / 2)
    assert "kept the latest" in (out / "notes.md").read_text()
    assert ids["duplicate"] != ids["tiny-qwen2__scienceqa__ema__seed0"]


def test_failed_cell_and_missing_benchmark_are_marked(tmp_path: Path) -> None:
    raw = _study(tmp_path, seeds=(0, 1))
    spec = validate_study(raw)
    failed = "tiny-qwen2__scienceqa__ema__seed1"
    no_gpqa = "tiny-qwen2__scienceqa__none__seed0"
    _log(spec, _level(ema=0.6), status={failed: "failed"},
         skip={(no_gpqa, "gpqa")})
    out = tmp_path / "report"
    result = _report(_write(tmp_path, raw), out)
    assert result.exit_code == 0, result.output
    main = _main(out)
    assert main.loc["SD+EMA", "scienceqa n"] == 1 and main.loc["SD+EMA", "scienceqa expected"] \
        == 2
    assert main.loc["SD+EMA", "scienceqa"] == pytest.approx(60.0)
    assert main.loc["SDFT", "gpqa n"] == 1 and main.loc["SDFT", "gpqa"] == pytest.approx(40.0)
    shown = (out / "main_table.md").read_text()
    assert "60.0†" in shown and "† fewer seeds" in shown
    notes = (out / "notes.md").read_text()
    assert "ema seed 1: failed" in notes and "none seed 0: score NaN" in notes
    components = pd.read_csv(out / "components.csv").set_index("benchmark")
    assert set(components["seeds_expected"]) == {2}
    assert set(components.loc["scienceqa", "n_seeds"]) == {1}  # seed 1 failed for SD+EMA
    # gpqa: SDFT lacks seed 0, SD+EMA seed 1: no seed has both, so no estimate at all.
    assert set(components.loc["gpqa", "n_seeds"]) == {0}
    assert components.loc["gpqa", "main_estimate"].isna().all()
    assert "§" in (out / "components.md").read_text()  # one usable seed: no interval
    assert "1 seed(s), 10 items)†" in (out / "synergy.md").read_text()


def test_unrun_cells_count_as_missing_and_rows_without_a_benchmark_get_no_average(
        tmp_path: Path) -> None:
    raw = _study(tmp_path, seeds=(0,))
    spec = validate_study(raw)
    _log(spec, _level(ema=0.6), skip={("tiny-qwen2__scienceqa__ema__seed0", "gpqa")})
    grown = dict(raw, seeds=[0, 1])  # the study now asks for a seed that never ran
    out = tmp_path / "report"
    result = _report(_write(tmp_path, grown), out)
    assert result.exit_code == 0, result.output
    main = _main(out)
    assert pd.isna(main.loc["SD+EMA", "gpqa"]) and pd.isna(main.loc["SD+EMA", "Mean"])
    assert main.loc["SDFT", "Mean"] == pytest.approx(40.0)
    assert main.loc["SDFT", "scienceqa expected"] == 2
    shown = (out / "main_table.md").read_text()
    assert "–‡" in shown and "‡ row incomplete" in shown
    assert "2 cell(s) of the study have no run yet" in (out / "notes.md").read_text()


def test_runs_from_two_environments_get_a_note(tmp_path: Path) -> None:
    raw = _study(tmp_path, seeds=(0,))
    spec = validate_study(raw)
    names = [cell.name for cell in expand_grid(spec)]
    env = {name: {"unisd.env.fingerprint": "aaaa1111", "unisd.env.cpu_flags": "avx2,avx512f",
                  "unisd.env.torch": "2.13.0"} for name in names[:2]}
    env[names[2]] = {"unisd.env.fingerprint": "bbbb2222", "unisd.env.cpu_flags": "avx2",
                     "unisd.env.torch": "2.13.0"}
    _log(spec, _level(ema=0.6), env=env)
    result = _report(_write(tmp_path, raw), tmp_path / "report")
    assert result.exit_code == 0, result.output
    assert "environments" in result.output
    note = [line for line in (tmp_path / "report" / "notes.md").read_text().splitlines()
            if "environments" in line][0]
    assert "the runs come from 2 environments" in note
    assert "aaaa1111: 2 run(s)" in note and "bbbb2222: 1 run(s)" in note
    assert "cpu_flags (avx2 vs avx2,avx512f)" in note
    assert "torch" not in note  # the same on both: not listed as a difference
    client = MlflowClient(tracking_uri=spec.resolved_tracking_uri())
    assert all(RUN_KEY_TAG in run.data.tags for run in client.search_runs(
        [client.get_experiment_by_name(spec.name).experiment_id],
        filter_string="tags.`unisd.env.fingerprint` = 'bbbb2222'"))
