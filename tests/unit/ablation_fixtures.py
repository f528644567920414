"""Synthetic study records with planted effects, in the frame schema of docs/architecture.md.

v(S) = base + sum of the planted main effects of S + the planted interaction when both of its
components are in S; item scores add a per-item difficulty and Gaussian noise, so the paired
bootstrap has something to pair. Presets get their own planted levels and retention metrics.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from ablations.grid import cell_name
from ablations.study import all_subsets, half_fraction
from unisd_core.config import COMPONENT_NAMES

EFFECTS = {"agreement": 0.06, "contrastive": 0.03, "feature_matching": 0.0, "ema": 0.05,
           "clipping": -0.02}
INTERACTION = ("agreement", "ema", 0.04)
PRESET_LEVELS = {"base": 0.30, "sft": 0.36, "gkd": 0.40, "ssd": 0.34, "opsd": 0.38,
                 "unisd_star": 0.47}
BENCHMARKS_OF = {"scienceqa": ("scienceqa", "gpqa"), "cose": ("cose",), "mbpp": ("mbpp", "humaneval"),
                 "toolalpaca": ("toolalpaca",)}


def planted_value(subset: tuple[str, ...], base: float = 0.35) -> float:
    a, b, delta = INTERACTION
    return base + sum(EFFECTS[c] for c in subset) + (delta if a in subset and b in subset else 0)


def planted_records(*, models=("tiny-qwen2",), training_sets=("scienceqa",), design="full",
                    seeds=(0, 1), n_items=120, noise=0.03, presets=tuple(PRESET_LEVELS),
                    drop=(), rng_seed=0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(scores, items)`` frames; ``drop`` removes subsets (tuples) from the grid."""
    rng = np.random.default_rng(rng_seed)
    subsets = {"full": all_subsets, "half": half_fraction}[design]()
    subsets = [s for s in subsets if s not in set(drop)]
    score_rows, item_rows = [], []
    for model in models:
        for training_set in training_sets:
            for benchmark in BENCHMARKS_OF[training_set]:
                difficulty = rng.normal(0, 0.1, size=n_items)
                runs = [(s, "unisd" if s else "sdft", "+".join(s) or "none", seed,
                         planted_value(s)) for s in subsets for seed in seeds]
                runs += [((), p if p != "unisd_star" else "unisd",
                          "agreement+contrastive+feature_matching+ema" if p == "unisd_star"
                          else "none", seeds[0] if p == "base" else seed, PRESET_LEVELS[p], p)
                         for p in presets for seed in (seeds[:1] if p == "base" else seeds)]
                for run in runs:
                    _add_run(run, model, training_set, benchmark, difficulty, noise, rng,
                             score_rows, item_rows)
    return pd.DataFrame(score_rows), pd.DataFrame(item_rows)


def _add_run(run, model, training_set, benchmark, difficulty, noise, rng, score_rows, item_rows):
    subset, method, subset_label, seed, level = run[:5]
    label = run[5] if len(run) > 5 else subset_label
    name = cell_name(model, training_set, label, seed)
    key = hashlib.sha256(name.encode()).hexdigest()[:16]  # one run per cell, all its benchmarks
    components = set(COMPONENT_NAMES) & set(subset_label.split("+"))
    item_scores = level + difficulty + rng.normal(0, noise, size=len(difficulty))
    jsd = np.abs(0.05 + 0.1 * (1 - level) + rng.normal(0, 0.01, size=len(difficulty)))
    logprob = -1.0 - jsd * 3 + rng.normal(0, 0.05, size=len(difficulty))
    for index, (score, j, lp) in enumerate(zip(item_scores, jsd, logprob)):
        item_rows.append({"run_key": key, "benchmark": benchmark, "item_id": f"{benchmark}-{index}",
                          "score": float(score), "jsd_to_base": float(j),
                          "base_logprob": float(lp)})
    score_rows.append({
        "run_key": key, "cell": name, "model": model, "training_set": training_set,
        "method": method, "subset": subset_label,
        **{c: c in components for c in COMPONENT_NAMES}, "seed": seed, "benchmark": benchmark,
        "score": float(item_scores.mean()), "status": "done",
        "pplret": float(np.exp(-logprob.mean())), "jsd_to_base": float(jsd.mean()),
    })
