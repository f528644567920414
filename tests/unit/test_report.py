"""Report tables against golden files, byte-identical output for identical records, plots and
contribution metrics. Regenerate the golden files with ``UPDATE_GOLDEN=1`` (then review the diff).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from ablation_fixtures import planted_records
from ablations.report import build_report
from ablations.report.gains import gains_table
from ablations.report.retention import retention_table
from ablations.report.tables import main_benchmarks, main_table

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
TABLE_STEMS = ("main_table", "gains", "components", "synergy", "retention", "ols",
               "missing_subsets")


def golden_records() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The fixed records: a full grid (2 seeds) and a half fraction (1 seed), with presets."""
    scores_path, items_path = GOLDEN / "records_scores.csv", GOLDEN / "records_items.csv"
    if UPDATE and not scores_path.exists():
        full = planted_records(n_items=12, seeds=(0, 1))
        half = planted_records(models=("tiny-llama",), training_sets=("cose",), design="half",
                               n_items=12, seeds=(0,), rng_seed=1)
        GOLDEN.mkdir(parents=True, exist_ok=True)
        pd.concat([full[0], half[0]]).to_csv(scores_path, index=False)
        pd.concat([full[1], half[1]]).to_csv(items_path, index=False)
    scores = pd.read_csv(scores_path)
    items = pd.read_csv(items_path, dtype={"item_id": str})
    return scores, items


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scores, items = golden_records()
    out = tmp_path_factory.mktemp("report")
    build_report(scores, items, out, with_plots=False)
    return out


@pytest.mark.parametrize("suffix", [".md", ".tex", ".csv"])
@pytest.mark.parametrize("stem", TABLE_STEMS)
def test_table_matches_golden(built: Path, stem: str, suffix: str) -> None:
    produced = (built / f"{stem}{suffix}").read_text(encoding="utf-8")
    expected_path = GOLDEN / "report" / f"{stem}{suffix}"
    if UPDATE:
        expected_path.parent.mkdir(parents=True, exist_ok=True)
        expected_path.write_text(produced, encoding="utf-8")
    assert produced == expected_path.read_text(encoding="utf-8")


def test_same_records_in_any_order_give_byte_identical_tables(built: Path,
                                                              tmp_path: Path) -> None:
    scores, items = golden_records()
    shuffled = (scores.sample(frac=1.0, random_state=3), items.sample(frac=1.0, random_state=4))
    build_report(*shuffled, tmp_path, with_plots=False)
    for stem in TABLE_STEMS:
        for suffix in (".md", ".tex", ".csv"):
            assert (tmp_path / f"{stem}{suffix}").read_bytes() == \
                (built / f"{stem}{suffix}").read_bytes(), f"{stem}{suffix}"


def test_main_table_averages_seeds_and_summarises_per_model() -> None:
    scores, _ = golden_records()
    table = main_table(scores)
    row = table[(table["Model"] == "tiny-qwen2") & (table["Method"] == "UniSD*")].iloc[0]
    expected = scores[(scores["cell"].str.contains("unisd_star"))
                      & (scores["benchmark"] == "gpqa")]["score"].mean() * 100
    assert row["gpqa"] == pytest.approx(expected)
    assert row["Mean"] == pytest.approx((row["scienceqa"] + row["gpqa"]) / 2)
    qwen = table[table["Model"] == "tiny-qwen2"]
    assert list(qwen["Method"][:7]) == ["Base", "SFT", "SDFT", "GKD", "SSD", "OPSD", "UniSD*"]
    assert qwen["Method"].iloc[7] == "SD+AGR" and qwen["Method"].iloc[-1] == "SD+AGR+CON+FM+EMA+CLIP"


def test_retention_win_rates_are_paired_against_sft() -> None:
    scores, items = golden_records()
    table = retention_table(scores, items).set_index(["Model", "Method"])
    runs = scores[["run_key", "cell"]].drop_duplicates()
    joined = items.merge(runs, on="run_key")
    joined = joined[joined["cell"].str.startswith("tiny-qwen2__")]
    pick = lambda label: (joined[joined["cell"].str.contains(f"__{label}__")]  # noqa: E731
                          .groupby(["benchmark", "item_id"])["jsd_to_base"].mean())
    star, sft = pick("unisd_star"), pick("sft")
    assert table.loc[("tiny-qwen2", "UniSD*"), "win_jsd_vs_sft"] == pytest.approx(
        float((star < sft).mean()))
    assert table.loc[("tiny-qwen2", "UniSD*"), "n_items_vs_sft"] == len(star)


def test_plots_and_contribution_metrics(tmp_path: Path) -> None:
    scores, items = planted_records(n_items=10, seeds=(0,))
    report = build_report(scores, items, tmp_path)
    pngs = [p for p in report.files if p.suffix == ".png"]
    kinds = {p.name.split("_")[0] for p in pngs}
    assert kinds == {"contributions", "synergy", "retention"}
    for path in pngs:
        assert matplotlib.image.imread(path).shape[0] > 100
    components = pd.read_csv(tmp_path / "components.csv")
    row = components.iloc[0]
    name = (f"contribution/{row['model']}/{row['training_set']}/{row['benchmark']}/"
            f"{row['component']}/shapley")
    assert report.metrics[name] == pytest.approx(row["shapley_estimate"] * 100, abs=1e-4)
    assert len(report.metrics) == 2 * len(components)


def test_records_without_finished_runs_are_refused(tmp_path: Path) -> None:
    scores, items = golden_records()
    failed = scores.assign(status="failed")
    with pytest.raises(ValueError, match="no finished runs"):
        build_report(failed, items, tmp_path)
    assert not any(tmp_path.iterdir())


def _binary_records(gain: float, *, n_items: int = 300, seeds=(0, 1, 2), rng_seed: int = 0):
    """Base (one run) and SFT (one run per seed) on 0/1 items; SFT's success probability is the
    base's plus ``gain`` on every item (per-item difficulty shared, draws independent)."""
    rng = np.random.default_rng(rng_seed)
    ability = rng.uniform(0.2, 0.6, size=n_items)
    runs = [("base", 0, ability)] + [("sft", s, np.clip(ability + gain, 0, 1)) for s in seeds]
    score_rows, item_rows = [], []
    for method, seed, p in runs:
        key = f"{method}-{seed}"
        scores = (rng.random(n_items) < p).astype(float)
        item_rows += [{"run_key": key, "benchmark": "synthetic", "item_id": f"i{i:03d}",
                       "score": v} for i, v in enumerate(scores)]
        score_rows.append({"run_key": key, "cell": f"m__synthetic__{method}__seed{seed}",
                           "model": "m", "training_set": "synthetic", "method": method,
                           "subset": "none", "seed": seed, "benchmark": "synthetic",
                           "score": scores.mean(), "status": "done"})
    return pd.DataFrame(score_rows), pd.DataFrame(item_rows)


def test_planted_gain_is_recovered_and_null_gain_covers_zero() -> None:
    for planted, rng_seed in ((0.15, 0), (0.0, 1)):
        scores, items = _binary_records(planted, rng_seed=rng_seed)
        table = gains_table(scores, items)
        assert list(table["method"]) == ["Base", "SFT"]
        sft = table.iloc[1]
        observed = (items[items["run_key"] != "base-0"]["score"].mean()
                    - items[items["run_key"] == "base-0"]["score"].mean())
        assert sft["gain"] == pytest.approx(observed)
        assert sft["gain_low"] < sft["gain"] < sft["gain_high"]
        assert sft["gain_low"] < planted < sft["gain_high"]
        assert bool(sft["excludes_zero"]) == (planted > 0)
        assert (sft["gain_low"] > 0) == (planted > 0)


def test_gain_interval_pairs_items_and_widens_with_seed_disagreement() -> None:
    scores, items = _binary_records(0.1, rng_seed=2)
    width = lambda t: float(t.iloc[1]["gain_high"] - t.iloc[1]["gain_low"])  # noqa: E731
    paired = gains_table(scores, items)
    # Seeds that disagree by a lot must widen the interval: shift one seed's items down.
    spread = items.copy()
    spread.loc[spread["run_key"] == "sft-0", "score"] -= 0.5
    spread.loc[spread["run_key"] == "sft-1", "score"] += 0.5
    assert width(gains_table(scores, spread)) > 2 * width(paired)
    # Same records: identical numbers (no random resampling).
    assert paired.equals(gains_table(scores, items))


def test_main_table_synthetic_column_and_overall_of_the_paper_six() -> None:
    from ablation_fixtures import BENCHMARKS_OF

    six = planted_records(training_sets=tuple(BENCHMARKS_OF), presets=("base", "sft"),
                          n_items=6, seeds=(0,))[0]
    synthetic = six[six["benchmark"] == "cose"].assign(
        benchmark="synthetic", training_set="synthetic", score=0.99,
        run_key=lambda f: f["run_key"] + "-synthetic")
    table = main_table(pd.concat([six, synthetic]))
    assert main_benchmarks(table) == ["scienceqa", "gpqa", "mbpp", "humaneval", "cose",
                                      "toolalpaca", "synthetic"]  # the paper's order, then ours
    assert table.columns[-1] == "Overall"
    row = table.iloc[0]
    paper = ["scienceqa", "cose", "mbpp", "toolalpaca", "gpqa", "humaneval"]
    assert row["Overall"] == pytest.approx(row[paper].mean())
    only = main_table(synthetic)
    assert main_benchmarks(only) == ["synthetic"] and only.columns[-1] == "Mean"
    assert only["synthetic"].tolist() == pytest.approx([99.0] * len(only))


def test_latex_main_table_is_compact(built: Path) -> None:
    produced = (built / "main_table.tex").read_text(encoding="utf-8")
    # One table per model: presets, single components and the full subset, not all 32 subsets
    # (those stay in main_table.md / .csv).
    assert produced.count("\\begin{table}") == 2
    assert produced.count("SD+") == 2 * 6
    assert (built / "main_table.md").read_text(encoding="utf-8").count("SD+") == 16 + 31


@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="pdflatex not installed: apt-get install -y texlive-latex-base "
                           "texlive-latex-recommended")
def test_latex_tables_compile_and_fit_a_page(built: Path, tmp_path: Path) -> None:
    for stem in ("main_table", "gains", "components", "synergy", "ols"):
        document = tmp_path / f"{stem}_doc.tex"
        document.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n"
                            "\\usepackage[margin=2cm]{geometry}\n\\begin{document}\n"
                            f"\\input{{{built / (stem + '.tex')}}}\n\\end{{document}}\n")
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                               document.name], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
        log = (tmp_path / f"{stem}_doc.log").read_text(errors="replace")
        assert done.returncode == 0, log[-2000:]
        if stem == "main_table":
            assert "Float too large" not in log and "Overfull \\hbox" not in log


def test_an_exactly_duplicated_record_is_not_double_weighted(tmp_path: Path) -> None:
    scores, items = _binary_records(0.1, rng_seed=4)
    one = scores[scores["run_key"] == "sft-0"]
    doubled = pd.concat([scores, one], ignore_index=True), pd.concat(
        [items, items[items["run_key"] == "sft-0"]], ignore_index=True)
    assert gains_table(*doubled).equals(gains_table(scores, items))
    assert main_table(doubled[0]).equals(main_table(scores))


def test_main_display_shows_mean_sd_bold_best_and_marks_a_missing_seed() -> None:
    from ablations.report.display import main_table_display

    scores, _ = _binary_records(0.1, rng_seed=5)
    sft = scores[scores["method"] == "sft"]["score"].to_numpy() * 100
    shown, notes = main_table_display(main_table(scores))
    row = shown.set_index("Method")
    assert row.loc["SFT", "synthetic"] == f"**{sft.mean():.1f} ± {sft.std(ddof=1):.1f}**"
    assert row.loc["Base", "synthetic"] == f"{scores.iloc[0]['score'] * 100:.1f}"
    assert row.loc["SFT", "Seeds"] == "3"
    failed = scores.assign(status=np.where(scores["run_key"] == "sft-2", "failed", "done"))
    shown, notes = main_table_display(main_table(failed))
    two = sft[:2]
    assert shown.set_index("Method").loc["SFT", "synthetic"] == \
        f"**{two.mean():.1f} ± {two.std(ddof=1):.1f}†**"
    assert any(note.startswith("† fewer seeds") for note in notes)
