"""Analysis of the component grid: exact indices against shapiq, planted effects recovered with
their intervals, incomplete grids refused or analysed without imputation, OLS cross-check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapiq

from ablation_fixtures import EFFECTS, INTERACTION, planted_records
from ablations.analysis import IncompleteGridError, analyse_components, factorial_ols
from ablations.analysis import games
from ablations.analysis.bootstrap import bootstrap_values
from ablations.analysis.intervals import ONE_SEED_REASON
from unisd_core.config import COMPONENT_NAMES


def _shapiq_game(values_S: np.ndarray):
    def game(coalitions: np.ndarray) -> np.ndarray:
        masks = (coalitions.astype(int) * (1 << np.arange(coalitions.shape[1]))).sum(axis=1)
        return values_S[masks] - values_S[0]
    return game


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_players", [3, 5])
def test_exact_indices_match_shapiq_on_random_games(seed: int, n_players: int) -> None:
    values_S = np.random.default_rng(seed).normal(size=2 ** n_players)
    computer = shapiq.ExactComputer(_shapiq_game(values_S), n_players=n_players)
    shapley = computer("SV").dict_values
    interactions = computer("SII", order=2).dict_values
    banzhaf = computer("BV").dict_values
    assert np.allclose(games.shapley_values(values_S),
                       [shapley[(i,)] for i in range(n_players)])
    assert np.allclose(values_S @ games.shapley_interaction_weights(n_players),
                       [interactions[pair] for pair in games.pairs_of(n_players)])
    assert np.allclose(values_S @ games.banzhaf_weights(n_players),
                       [banzhaf[(i,)] for i in range(n_players)])
    # Efficiency: Shapley values sum to v(N) - v(empty).
    assert np.isclose(games.shapley_values(values_S).sum(), values_S[-1] - values_S[0])


def test_factorial_interaction_equals_banzhaf_interaction_on_full_grid() -> None:
    values_S = np.random.default_rng(3).normal(size=32)
    full = set(range(32))
    assert np.allclose(values_S @ games.factorial_interaction_weights(5, full),
                       values_S @ games.banzhaf_interaction_weights(5))


def _truth() -> tuple[dict[str, float], dict[tuple[str, str], float]]:
    first, second, delta = INTERACTION
    main = {c: EFFECTS[c] + (delta / 2 if c in (first, second) else 0.0) for c in EFFECTS}
    pairs = {(a, b): (delta if {a, b} == {first, second} else 0.0)
             for a, b in [(COMPONENT_NAMES[i], COMPONENT_NAMES[j])
                          for i, j in games.pairs_of(5)]}
    return main, pairs


def _check_recovered(frame: pd.DataFrame, truth: dict, key_columns: list[str]) -> None:
    """Every estimate within one interval width of the truth; >= 90% of intervals cover it."""
    covered = []
    for row in frame.itertuples(index=False):
        target = truth[tuple(getattr(row, c) for c in key_columns)] if len(key_columns) > 1 \
            else truth[getattr(row, key_columns[0])]
        width = row.high - row.low
        assert width > 0
        assert abs(row.estimate - target) <= width, (row, target)
        covered.append(row.low <= target <= row.high)
    assert np.mean(covered) >= 0.9, covered


def test_planted_effects_recovered_on_full_grid() -> None:
    scores, items = planted_records(seeds=(0, 1), n_items=150, noise=0.03)
    analysis = analyse_components(scores, items)
    main, pairs = _truth()
    for kind in ("main", "shapley"):
        part = analysis.effects[analysis.effects["kind"] == kind]
        assert len(part) == 2 * 5  # two benchmarks (scienceqa + gpqa) x five components
        _check_recovered(part, main, ["component"])
    interactions = analysis.interactions
    assert set(interactions["index"]) == {"shapley_interaction"}
    _check_recovered(interactions, pairs, ["component_a", "component_b"])
    strongest = interactions.loc[interactions["estimate"].idxmax()]
    assert (strongest["component_a"], strongest["component_b"]) == INTERACTION[:2]
    assert analysis.missing.empty and not analysis.notes


def test_half_fraction_gives_main_effects_and_interactions_but_no_shapley() -> None:
    scores, items = planted_records(design="half", seeds=(0, 1), n_items=150,
                                    training_sets=("cose",))
    analysis = analyse_components(scores, items)
    assert set(analysis.effects["kind"]) == {"main"}
    assert set(analysis.effects["design"]) == {"half_fraction"}
    main, pairs = _truth()
    _check_recovered(analysis.effects, main, ["component"])
    _check_recovered(analysis.interactions, pairs, ["component_a", "component_b"])
    assert len(analysis.missing) == 16
    assert any("Shapley refused" in note for note in analysis.notes)


def test_incomplete_grid_refuses_shapley_and_names_missing_subsets() -> None:
    dropped = [("agreement", "ema"), ("clipping",)]
    scores, items = planted_records(drop=dropped, seeds=(0,), n_items=40,
                                    training_sets=("toolalpaca",))
    analysis = analyse_components(scores, items)
    assert sorted(analysis.missing["subset"]) == ["agreement+ema", "clipping"]
    assert "shapley" not in set(analysis.effects["kind"])
    note = " ".join(analysis.notes)
    assert "{agreement, ema}" in note and "{clipping}" in note
    # Main effects still come from the complete pairs that exist, without imputation.
    main = analysis.effects.set_index("component")["estimate"]
    assert abs(main["contrastive"] - EFFECTS["contrastive"]) < 0.02
    with pytest.raises(IncompleteGridError) as error:
        games.require_complete(set(range(32)) - {games.mask_of(("clipping",), COMPONENT_NAMES)},
                               COMPONENT_NAMES)
    assert error.value.missing == [16]


def test_bootstrap_is_paired_seeded_and_reproducible() -> None:
    scores_SU = np.random.default_rng(0).normal(size=(4, 30))
    shifted = scores_SU.copy()
    shifted[1] = scores_SU[0] + 0.5  # subset 1 = subset 0 + constant on every item
    first = bootstrap_values(shifted, 200, seed=7)
    again = bootstrap_values(shifted, 200, seed=7)
    assert np.array_equal(first, again)
    # Paired: the same items are drawn for every subset, so the difference never varies.
    assert np.allclose(first[:, 1] - first[:, 0], 0.5)
    assert not np.array_equal(first, bootstrap_values(shifted, 200, seed=8))


def test_intervals_need_two_seeds_and_say_why() -> None:
    scores, items = planted_records(seeds=(0,), n_items=30, presets=())
    effects = analyse_components(scores, items).effects
    assert effects["low"].isna().all() and effects["estimate"].notna().all()
    assert set(effects["reason"]) == {ONE_SEED_REASON}


def test_failed_cell_is_counted_and_named_not_silently_dropped() -> None:
    scores, items = planted_records(seeds=(0, 1, 2), n_items=60, presets=(),
                                    training_sets=("cose",))
    failed = (scores["subset"] == "agreement+ema") & (scores["seed"] == 2)
    scores.loc[failed, "status"] = "failed"
    analysis = analyse_components(scores, items)
    effects = analysis.effects
    # The estimate and its interval both rest on the seeds complete for every subset (0, 1),
    # counted against the 3 the study asked for; the gap is named.
    assert set(effects["n_seeds"]) == {2} and set(effects["seeds_expected"]) == {3}
    gaps = " ".join(analysis.gaps[("tiny-qwen2", "cose", "cose")])
    assert "agreement+ema seed 2: failed" in gaps and "seed 2 left out" in gaps
    kept = scores[(scores["seed"] < 2) & scores["method"].isin(["sdft", "unisd"])]
    value_S = np.zeros(32)
    for mask, part in kept.assign(mask=[games.mask_of([p for p in COMPONENT_NAMES if r[p]],
                                                      COMPONENT_NAMES)
                                        for _, r in kept.iterrows()]).groupby("mask"):
        value_S[mask] = part["score"].mean()
    main = effects[effects["kind"] == "main"].set_index("component")["estimate"]
    assert np.allclose(main[list(COMPONENT_NAMES)], games.banzhaf_values(value_S), atol=1e-12)


def test_nan_score_and_missing_items_are_gaps() -> None:
    scores, items = planted_records(seeds=(0, 1), n_items=40, presets=(),
                                    training_sets=("cose",))
    scores.loc[(scores["subset"] == "ema") & (scores["seed"] == 1), "score"] = np.nan
    one_run = scores[(scores["subset"] == "agreement") & (scores["seed"] == 0)]["run_key"].iloc[0]
    items = items[~((items["run_key"] == one_run) & items["item_id"].isin(["cose-3", "cose-4"]))]
    analysis = analyse_components(scores, items)
    gaps = " ".join(analysis.gaps[("tiny-qwen2", "cose", "cose")])
    assert "ema seed 1: score NaN" in gaps and "2 of 40 items missing" in gaps
    assert set(analysis.effects["n_items"]) == {38}
    assert set(analysis.effects["n_seeds"]) == {1}  # seed 1 incomplete (ema): no interval
    assert analysis.effects["low"].isna().all()


def test_ols_cross_check_matches_banzhaf_on_full_grid() -> None:
    scores, items = planted_records(seeds=(0, 1), n_items=50, presets=())
    ols = factorial_ols(scores)
    analysis = analyse_components(scores, items)
    main = analysis.effects[analysis.effects["kind"] == "main"]
    merged = main.merge(ols, left_on=["model", "training_set", "benchmark", "component"],
                        right_on=["model", "training_set", "benchmark", "term"])
    assert len(merged) == 10
    assert np.allclose(merged["estimate"], merged["effect"])
    pair = ols[ols["term"] == "agreement:ema"]
    assert (pair["p_value"] < 0.01).all() and np.allclose(pair["effect"], INTERACTION[2],
                                                          atol=0.01)


def test_ols_fits_only_terms_the_partial_design_identifies() -> None:
    # The demo's design: SDFT, SDFT+EMA, SDFT+clipping, SDFT+feature matching (+ presets).
    from ablations.analysis.factorial import fit_factorial_ols
    from ablations.study import all_subsets

    keep = {(), ("ema",), ("clipping",), ("feature_matching",)}
    scores, _ = planted_records(seeds=(0, 1), n_items=40, training_sets=("cose",),
                                drop=[s for s in all_subsets() if s not in keep])
    ols, notes = fit_factorial_ols(scores)
    assert set(ols["term"]) == {"feature_matching", "ema", "clipping"}  # no interaction
    assert len(notes) == 1 and "feature_matching:ema" in notes[0]
    means = scores[scores["method"].isin(["sdft", "unisd"])].groupby("subset")["score"].mean()
    effects = ols.set_index("term")["effect"]
    for term in ("ema", "clipping", "feature_matching"):
        # With no interaction identified, each effect is its simple contrast against SDFT.
        assert effects[term] == pytest.approx(means[term] - means["none"], abs=1e-9)
    assert effects["ema"] == pytest.approx(EFFECTS["ema"], abs=0.03)
