"""UniSD* and the baselines as presets of the one training loop (method.md 2.6 and 3).

- ``UNISD_STAR``: agreement (token granularity, retrieval contexts, K = 3, gamma = 0.001) +
  contrastive (lambda_c = 0.01, mu = 0.1) + feature matching (joint, lambda_fm = 0.01) + EMA
  (every 10 steps, beta = 0.98); no clipping.
- ``sft``: token NLL on the gold demonstrations. ``sdft``: the empty component set.
- ``gkd``: on-policy fraction 0.5, generalized JSD with beta 0.5 to the demonstration teacher.
- ``ssd``: samples from the base model (temperature 1.0, top_p 0.95) drawn once, then SFT.
- ``opsd``: forward KL to a teacher with the gold answer as privileged context.

:func:`preset_config` builds a validated ``TrainConfig`` from a preset and overrides (``model``
is always needed). :func:`component_subset` and :func:`all_subsets` give the 2^5 grid with the
settings of a component studied alone or the UniSD* ones.

Departures from the paper: the paper halves the per-device batch for UniSD* (memory); that depends
on the model size, so it is left to the caller's ``per_device_batch`` override.
"""

from __future__ import annotations

import difflib
import itertools
from typing import Any, Iterable, Literal

from unisd_core.config import (
    COMPONENT_NAMES,
    AgreementConfig,
    ClippingConfig,
    ComponentsConfig,
    ContrastiveConfig,
    EmaConfig,
    FeatureMatchingConfig,
    TrainConfig,
)

UNISD_STAR = ComponentsConfig(
    agreement=AgreementConfig(granularity="token", context_source="retrieval", num_contexts=3, gamma=0.001),
    contrastive=ContrastiveConfig(weight=0.01, margin=0.1),
    feature_matching=FeatureMatchingConfig(mode="joint", weight=0.01),
    ema=EmaConfig(every_steps=10, beta=0.98),
)

ALONE_DEFAULTS = ComponentsConfig(
    agreement=AgreementConfig(), contrastive=ContrastiveConfig(),
    feature_matching=FeatureMatchingConfig(), ema=EmaConfig(), clipping=ClippingConfig(),
)
# UniSD* settings for its four components; clipping (not in UniSD*) keeps its own default.
STAR_DEFAULTS = UNISD_STAR.model_copy(update={"clipping": ClippingConfig()})

PRESETS: dict[str, dict[str, Any]] = {
    "sft": {"method": "sft"},
    "sdft": {"method": "sdft"},
    "gkd": {"method": "gkd", "gkd_on_policy_fraction": 0.5, "gkd_beta": 0.5},
    "ssd": {"method": "ssd", "ssd_temperature": 1.0, "ssd_top_p": 0.95},
    "opsd": {"method": "opsd", "alpha": 0.0},
    "unisd_star": {"method": "sdft", "components": UNISD_STAR},
}


def preset_config(name: str, **overrides: Any) -> TrainConfig:
    """The ``TrainConfig`` of preset ``name`` with ``overrides`` applied (validated)."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown preset {name!r}{hint} (known: {', '.join(PRESETS)})")
    if "method" in overrides and overrides["method"] != PRESETS[name]["method"]:
        raise ValueError(f"preset {name!r} fixes method={PRESETS[name]['method']!r}; "
                         f"got method={overrides['method']!r}")
    return TrainConfig(**{**PRESETS[name], **overrides})


def component_subset(names: Iterable[str], *, defaults: Literal["alone", "unisd_star"] = "alone") -> ComponentsConfig:
    """Components ``names`` on, each with the settings it has alone or inside UniSD*."""
    names = tuple(names)
    unknown = [n for n in names if n not in COMPONENT_NAMES]
    if unknown:
        raise ValueError(f"unknown components {unknown} (known: {', '.join(COMPONENT_NAMES)})")
    source = ALONE_DEFAULTS if defaults == "alone" else STAR_DEFAULTS
    return ComponentsConfig(**{n: getattr(source, n) for n in names})


def all_subsets(*, defaults: Literal["alone", "unisd_star"] = "alone") -> list[ComponentsConfig]:
    """All 2^5 = 32 component subsets, empty first, in canonical order of size then names."""
    return [component_subset(combo, defaults=defaults)
            for size in range(len(COMPONENT_NAMES) + 1)
            for combo in itertools.combinations(COMPONENT_NAMES, size)]
