"""Planted-effect simulation of a component study, with its truth computed independently.

Used by ``benchmarks/coverage.py`` (coverage table in benchmarks/RESULTS.md) and by the tests
that fail when coverage or recovery regress. Nothing here imports the analysis code: the truth is
computed by enumeration over all orderings (Shapley), by the Moebius transform (interactions,
Banzhaf values), so an error in ``games``/``intervals`` cannot hide in its own reference.

The model (scores are fractions; the design's numbers are in points):
- planted game ``eta(S)``: additive main effects (one zero, one negative), one pairwise and one
  three-way interaction; the group's value ``v(S) = level + scale * eta(S)``, ``scale`` the
  per-model/per-benchmark scaling;
- item i has a difficulty (its own level ``level + d_i``, d_i uniform) and a heterogeneous
  response ``k_i`` (uniform on [0.5, 1.5], mean 1: a component helps some items more);
- a run (subset S, seed s) has run-level noise ``u`` ~ N(0, run_sd) shared by all its items;
- the item score is Bernoulli(level + d_i + k_i scale eta(S) + u): correct or not, as the
  benchmarks score. Ranges keep the probability inside (0, 1) to four run-sd, so the population
  value is exactly ``v(S)``: the truth over seeds and items;
- the base model is one run (greedy: no training noise) whose true score equals v({clipping}),
  so the subset ``{clipping}`` has a gain of exactly zero over the base (a planted null gain).
Departure from the paper: none (a test device).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from math import factorial

import numpy as np

PLAYERS = ("agreement", "contrastive", "feature_matching", "ema", "clipping")


@dataclass(frozen=True)
class PlantedDesign:
    """Planted effects in points; ``main`` has a zero and a negative entry."""

    main: dict[str, float] = field(default_factory=lambda: {
        "agreement": 6.0, "contrastive": 3.0, "feature_matching": 0.0, "ema": 5.0,
        "clipping": -2.0})
    pair: tuple[tuple[str, ...], float] = (("agreement", "ema"), 4.0)
    triple: tuple[tuple[str, ...], float] = (("contrastive", "ema", "clipping"), -3.0)
    level: float = 35.0          # mean item level of the empty subset (points)
    difficulty_half_range: float = 15.0
    zero_gain_subset: tuple[str, ...] = ("clipping",)

    def eta(self, mask: int) -> float:
        """Planted game value of a coalition (points, before scaling)."""
        members = {PLAYERS[i] for i in range(len(PLAYERS)) if mask >> i & 1}
        value = sum(self.main[name] for name in members)
        for names, delta in (self.pair, self.triple):
            if set(names) <= members:
                value += delta
        return value


def mask_of(names: tuple[str, ...]) -> int:
    return sum(1 << PLAYERS.index(name) for name in names)


def values_of(design: PlantedDesign, scale: float = 1.0) -> np.ndarray:
    """True v(S) (fractions) for all 2^5 masks."""
    return np.array([(design.level + scale * design.eta(m)) / 100.0
                     for m in range(2 ** len(PLAYERS))])


def base_value(design: PlantedDesign, scale: float = 1.0) -> float:
    """True score of the base model: the ``zero_gain_subset`` gains exactly zero over it."""
    return float(values_of(design, scale)[mask_of(design.zero_gain_subset)])


def simulate_group(rng: np.random.Generator, design: PlantedDesign, *, n_seeds: int,
                   n_items: int, run_sd: float, scale: float = 1.0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One (model, benchmark) group: item scores (32 x seeds x items) and the base run (items).

    ``run_sd`` in points. Scores are 0/1.
    """
    difficulty_I = rng.uniform(-design.difficulty_half_range, design.difficulty_half_range,
                               size=n_items)
    response_I = rng.uniform(0.5, 1.5, size=n_items)
    eta_K = np.array([design.eta(m) for m in range(2 ** len(PLAYERS))])
    run_noise_KS = rng.normal(0.0, run_sd, size=(len(eta_K), n_seeds))
    points_KSI = (design.level + difficulty_I[None, None, :]
                  + scale * eta_K[:, None, None] * response_I[None, None, :]
                  + run_noise_KS[:, :, None])
    probability = np.clip(points_KSI / 100.0, 0.0, 1.0)
    scores_KSI = (rng.random(probability.shape) < probability).astype(float)
    zero = mask_of(design.zero_gain_subset)
    base_points_I = (design.level + difficulty_I
                     + scale * eta_K[zero] * response_I)  # no training noise
    base_I = (rng.random(n_items) < np.clip(base_points_I / 100.0, 0, 1)).astype(float)
    return scores_KSI, base_I


# ---- the truth, by enumeration (independent of ablations.analysis.games) ----

def shapley_by_permutations(values_S: np.ndarray) -> np.ndarray:
    """Shapley values: marginal contributions averaged over all n! orderings."""
    n_players = int(round(np.log2(len(values_S))))
    totals = np.zeros(n_players)
    for order in itertools.permutations(range(n_players)):
        mask = 0
        for player in order:
            totals[player] += values_S[mask | 1 << player] - values_S[mask]
            mask |= 1 << player
    return totals / factorial(n_players)


def moebius(values_S: np.ndarray) -> np.ndarray:
    """Moebius transform m(T) = sum over S subset of T of (-1)^{|T|-|S|} v(S)."""
    out = np.zeros_like(values_S)
    for target in range(len(values_S)):
        subset = target
        while True:
            sign = -1.0 if bin(target ^ subset).count("1") % 2 else 1.0
            out[target] += sign * values_S[subset]
            if subset == 0:
                break
            subset = (subset - 1) & target
    return out


def truth(values_S: np.ndarray) -> dict[str, np.ndarray]:
    """Banzhaf (main), Shapley, Shapley and Banzhaf pair interactions of a complete game."""
    n_players = int(round(np.log2(len(values_S))))
    mass = moebius(values_S)
    size = np.array([bin(m).count("1") for m in range(len(values_S))])
    banzhaf = np.array([sum(mass[m] / 2 ** (size[m] - 1) for m in range(len(mass))
                            if m >> i & 1) for i in range(n_players)])
    pairs = list(itertools.combinations(range(n_players), 2))
    both = [(1 << a) | (1 << b) for a, b in pairs]
    shapley_pair = np.array([sum(mass[m] / (size[m] - 1) for m in range(len(mass))
                                 if m & bits == bits) for bits in both])
    banzhaf_pair = np.array([sum(mass[m] / 2 ** (size[m] - 2) for m in range(len(mass))
                                 if m & bits == bits) for bits in both])
    return {"main": banzhaf, "shapley": shapley_by_permutations(values_S),
            "shapley_interaction": shapley_pair, "banzhaf_interaction": banzhaf_pair}


def group_frames(scores_KSI: np.ndarray, base_I: np.ndarray, *, model: str = "tiny-qwen2",
                 training_set: str = "synthetic", benchmark: str = "synthetic"):
    """The simulated group as ``(scores, items)`` record frames (docs/architecture.md schema):
    the empty subset as the ``sdft`` preset, the others as ``unisd`` subsets, plus the base run.
    """
    import pandas as pd

    score_rows, item_rows = [], []
    n_subsets, n_seeds, n_items = scores_KSI.shape
    runs = [("base", "none", 0, base_I[None, :], 0)]
    runs += [("sdft" if mask == 0 else "unisd",
              "+".join(n for i, n in enumerate(PLAYERS) if mask >> i & 1) or "none", seed,
              scores_KSI[mask, seed][None, :], mask)
             for mask in range(n_subsets) for seed in range(n_seeds)]
    for method, subset, seed, item_scores, mask in runs:
        label = "base" if method == "base" else ("sdft" if mask == 0 else subset)
        cell = f"{model}__{training_set}__{label}__seed{seed}"
        key = f"{label}-{seed}"
        item_rows += [{"run_key": key, "benchmark": benchmark, "item_id": f"i{i:04d}",
                       "score": float(v)} for i, v in enumerate(item_scores[0])]
        score_rows.append({"run_key": key, "cell": cell, "model": model,
                           "training_set": training_set, "method": method, "subset": subset,
                           **{n: bool(mask >> i & 1) for i, n in enumerate(PLAYERS)},
                           "seed": seed, "benchmark": benchmark,
                           "score": float(item_scores.mean()), "status": "done"})
    return pd.DataFrame(score_rows), pd.DataFrame(item_rows)
