"""Study -> cells: the expanded grid of (model, training set, seed, component subset or preset).

Each component subset becomes an ``sdft`` cell whose enabled components take the study's
``component_settings`` (or the unisd_core defaults for a component studied alone); presets add
the base model (one cell per model and training set: greedy decoding does not depend on the
seed), the baselines, plain SDFT and UniSD* (``unisd_core.presets.preset_config``; UniSD* batch
halved when the study asks, as in method.md 4). Cells with the same run key (the empty subset and the
``sdft`` preset) are kept once. Cell names are ``<model>__<training set>__<label>__seed<k>``;
:func:`cell_label` reads the label back for the report (UniSD* and a 4-component subset share a
method and subset but not a label).
"""

from __future__ import annotations

from ablations.study import StudySpec
from pipelines.cells import CellSpec, DataSettings
from unisd_core.config import (AgreementConfig, ClippingConfig, ComponentsConfig,
                               ContrastiveConfig, EmaConfig, FeatureMatchingConfig, TrainConfig)

_DEFAULT_COMPONENTS = {
    "agreement": AgreementConfig, "contrastive": ContrastiveConfig,
    "feature_matching": FeatureMatchingConfig, "ema": EmaConfig, "clipping": ClippingConfig,
}
SEPARATOR = "__"


def expand_grid(spec: StudySpec) -> list[CellSpec]:
    """Every cell of the study, deduplicated by run key, in a stable order."""
    cells: dict[str, CellSpec] = {}
    for model in spec.models:
        for training_set in spec.training_sets:
            for cell in _cells_for(spec, model, training_set):
                cells.setdefault(cell.run_key(), cell)
    return list(cells.values())


def _cells_for(spec: StudySpec, model: str, training_set: str) -> list[CellSpec]:
    made: list[CellSpec] = []
    if "base" in spec.presets:
        made.append(_cell(spec, model, training_set, spec.seeds[0], "base", None))
    for seed in spec.seeds:
        for subset in spec.subsets():
            components = subset_components(spec, subset)
            train = _train(spec, model, seed, "sdft", components)
            made.append(_cell(spec, model, training_set, seed, components.subset_label(), train))
        for preset in spec.presets:
            if preset != "base":
                made.append(_cell(spec, model, training_set, seed, preset,
                                  preset_train(spec, model, seed, preset)))
    return made


def subset_components(spec: StudySpec, subset: tuple[str, ...]) -> ComponentsConfig:
    """The study's settings (or defaults) for the components in ``subset``; the rest off."""
    chosen = {name: getattr(spec.component_settings, name) or _DEFAULT_COMPONENTS[name]()
              for name in subset}
    return ComponentsConfig(**chosen)


def preset_train(spec: StudySpec, model: str, seed: int, preset: str) -> TrainConfig:
    """Train config of a non-base preset (``unisd_core.presets.preset_config`` + the study's
    training settings; UniSD* at half the per-device batch when the study asks)."""
    from unisd_core.presets import preset_config

    settings = spec.training_overrides(model)
    if preset == "unisd_star" and spec.halve_batch_for_unisd_star:
        batch = settings.get("per_device_batch",
                             TrainConfig.model_fields["per_device_batch"].default)
        settings["per_device_batch"] = max(1, batch // 2)
    return preset_config(preset, model=model, seed=seed, **settings)


def _train(spec: StudySpec, model: str, seed: int, method: str,
           components: ComponentsConfig) -> TrainConfig:
    return TrainConfig(model=model, method=method, components=components, seed=seed,
                       **spec.training_overrides(model))


def _cell(spec: StudySpec, model: str, training_set: str, seed: int, label: str,
          train: TrainConfig | None) -> CellSpec:
    from evaluation.results import benchmarks_for

    wanted = set(spec.benchmarks or benchmarks_for(training_set))
    benchmarks = tuple(b for b in benchmarks_for(training_set) if b in wanted)
    data = DataSettings(
        source=spec.data.sources.get(training_set), limit=spec.data.limit, seed=spec.data.seed,
        eval_sources={b: s for b, s in spec.data.eval_sources.items() if b in benchmarks},
    )
    if train is None:
        method, subset = "base", "none"
    else:
        subset = train.components.subset_label()
        method = "unisd" if train.method == "sdft" and train.components.enabled() else train.method
    return CellSpec(
        name=cell_name(model, training_set, label, seed), method=method, subset=subset,
        train=train, model=model, training_set=training_set, seed=seed, benchmarks=benchmarks,
        eval=spec.evaluation, data=data, resources=spec.resources,
    )


def cell_name(model: str, training_set: str, label: str, seed: int) -> str:
    """``<model short name>__<training set>__<label>__seed<k>``."""
    short = model.rstrip("/").split("/")[-1]
    return SEPARATOR.join((short, training_set, label, f"seed{seed}"))


def cell_label(name: str) -> str:
    """The label part of a cell name (a preset name or a subset label); the name if foreign."""
    parts = name.split(SEPARATOR)
    return parts[2] if len(parts) == 4 else name
