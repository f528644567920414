"""Report tables against golden files, byte-identical output for identical records, plots and
contribution metrics. Regenerate the golden files with ``UPDATE_GOLDEN=1`` (then review the diff).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

from ablation_fixtures import planted_records
from ablations.report import build_report
from ablations.report.retention import retention_table
from ablations.report.tables import main_table

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
TABLE_STEMS = ("main_table", "components", "synergy", "retention", "ols", "missing_subsets")
REPLICATES = 200


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
    build_report(scores, items, out, n_replicates=REPLICATES, with_plots=False)
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
    build_report(*shuffled, tmp_path, n_replicates=REPLICATES, with_plots=False)
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
    report = build_report(scores, items, tmp_path, n_replicates=50)
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
        build_report(failed, items, tmp_path, n_replicates=10)
    assert not any(tmp_path.iterdir())
