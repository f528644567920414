"""Study files: YAML validated strictly into one typed, frozen ``StudySpec``.

A study names the models, training sets, benchmarks, component subsets (``all`` = the 32
subsets, ``half_fraction`` = the 2^(5-1) resolution-V design with I = ABCDE, or an explicit list),
per-component hyperparameters (overriding the defaults of ``unisd_core.config``), baseline
presets, seeds, training/eval settings and resources. ``load_study`` reports EVERY problem at
once (field path, bad value, allowed values, "did you mean") and returns only a study that is
valid as a whole; nothing may run before that.

Departures from the paper: the half fraction follows I = +ABCDE, i.e. the subsets with an odd
number of components; the empty subset (SDFT) is therefore not in it: add the ``sdft`` preset.
Besides the paper's training sets and benchmarks, ours (``records.EXTRA_*``: ``synthetic``, the
learnable CPU task of issue 7) are accepted; with no data source its splits are generated.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (AfterValidator, Discriminator, Field, StrictInt, Tag, ValidationError,
                      create_model)
from pydantic_core import PydanticCustomError

from ablations.costs import load_cost_table
from ablations.study_errors import (StudyError, StudyValidationError, errors_from_pydantic,
                                    suggest)
from pipelines.cells import EvalSettings, Resources
from unisd_core.config import COMPONENT_NAMES, ComponentsConfig, Frozen, TrainConfig
from unisd_core.data.records import (ALL_BENCHMARKS, BENCHMARKS, EXTRA_BENCHMARKS,
                                     EXTRA_TRAINING_SETS, TRAINING_SETS)

PRESETS: tuple[str, ...] = ("unisd_star", "base", "sft", "sdft", "gkd", "ssd", "opsd")

ComponentName = Literal["agreement", "contrastive", "feature_matching", "ema", "clipping"]
PresetName = Literal["unisd_star", "base", "sft", "sdft", "gkd", "ssd", "opsd"]
# The paper's names and ours (records.EXTRA_*: the synthetic task of issue 7), checked apart so
# that neither list can drift from unisd_core.data.records.
PaperBenchmarkName = Literal["scienceqa", "cose", "mbpp", "toolalpaca", "gpqa", "humaneval"]
ExtraBenchmarkName = Literal["synthetic"]
BenchmarkName = Literal[PaperBenchmarkName, ExtraBenchmarkName]
PaperTrainingSetName = Literal["scienceqa", "cose", "mbpp", "toolalpaca"]
ExtraTrainingSetName = Literal["synthetic"]
TrainingSetName = Literal[PaperTrainingSetName, ExtraTrainingSetName]
assert set(COMPONENT_NAMES) == set(ComponentName.__args__)  # type: ignore[attr-defined]
assert set(BENCHMARKS) == set(PaperBenchmarkName.__args__)  # type: ignore[attr-defined]
assert set(EXTRA_BENCHMARKS) == set(ExtraBenchmarkName.__args__)  # type: ignore[attr-defined]
assert set(TRAINING_SETS) == set(PaperTrainingSetName.__args__)  # type: ignore[attr-defined]
assert set(EXTRA_TRAINING_SETS) == set(  # type: ignore[attr-defined]
    ExtraTrainingSetName.__args__)

# TrainConfig fields a study may set; model, method, components and seed come from the grid.
_GRID_FIELDS = ("model", "method", "components", "seed")
TrainingSettings = create_model(  # type: ignore[call-overload]
    "TrainingSettings", __base__=Frozen, __doc__="Overrides of TrainConfig defaults.",
    **{name: (field.annotation, field) for name, field in TrainConfig.model_fields.items()
       if name not in _GRID_FIELDS},
)


def _known_family(model: str) -> str:
    table = load_cost_table()
    if table.model_family(model) is None:
        families = sorted(table.families)
        raise PydanticCustomError(
            "unknown_model_family",
            "unknown model family: neither presets (batch sizes) nor costs are known for it",
            {"reason": "unknown model family: neither presets (per-model batch sizes) nor costs "
                       "are known for it (add it to ablations/costs.yaml)",
             "allowed": "a model of family " + ", ".join(families) + " or one of "
                        + ", ".join(sorted(table.models)),
             "suggestion": suggest(model, table.models)},
        )
    return model


ModelName = Annotated[str, Field(min_length=1), AfterValidator(_known_family)]
Seed = Annotated[StrictInt, Field(ge=0)]
Subset = list[ComponentName]


def _design_tag(value: Any) -> str:
    return "design" if isinstance(value, str) else "subsets"


ComponentDesign = Annotated[
    Union[Annotated[Literal["all", "half_fraction"], Tag("design")],
          Annotated[list[Subset], Tag("subsets")]],
    Discriminator(_design_tag),
]


class DataSpec(Frozen):
    """Where training/eval records come from (None = the shipped samples) and how many."""

    sources: dict[TrainingSetName, str] = {}
    eval_sources: dict[BenchmarkName, str] = {}
    limit: int | None = Field(None, ge=1)
    seed: Seed = 0


class StudySpec(Frozen):
    """One validated study (see the module docstring for the meaning of each section)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    output_dir: str | None = None
    tracking_uri: str | None = None
    ray_address: str | None = None
    models: list[ModelName] = Field(min_length=1)
    training_sets: list[TrainingSetName] = Field(min_length=1)
    benchmarks: list[BenchmarkName] | None = None
    components: ComponentDesign = []
    component_settings: ComponentsConfig = ComponentsConfig()
    presets: list[PresetName] = []
    seeds: list[Seed] = Field([0], min_length=1)
    training: TrainingSettings = TrainingSettings()  # type: ignore[valid-type]
    per_model: dict[str, TrainingSettings] = {}  # type: ignore[valid-type]
    halve_batch_for_unisd_star: bool = False
    data: DataSpec = DataSpec()
    evaluation: EvalSettings = EvalSettings()
    resources: Resources = Resources()

    def resolved_output_dir(self) -> Path:
        """``output_dir`` or ``runs/<name>`` (relative to the working directory)."""
        return Path(self.output_dir or f"runs/{self.name}")

    def resolved_tracking_uri(self) -> str:
        """``tracking_uri`` or an SQLite store inside the output folder."""
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{(self.resolved_output_dir() / 'mlflow.db').resolve()}"

    def subsets(self) -> list[tuple[str, ...]]:
        """The component subsets of the grid, each in canonical order, without duplicates."""
        if self.components == "all":
            return all_subsets()
        if self.components == "half_fraction":
            return half_fraction()
        seen: dict[tuple[str, ...], None] = {}
        for subset in self.components:
            seen.setdefault(canonical(subset), None)
        return list(seen)

    def training_overrides(self, model: str) -> dict[str, Any]:
        """Explicitly set training fields: study-wide, then the model's own (which win)."""
        values = self.training.model_dump(include=self.training.model_fields_set)
        if model in self.per_model:
            own = self.per_model[model]
            values.update(own.model_dump(include=own.model_fields_set))
        return values


def canonical(subset: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Components in the canonical order of ``COMPONENT_NAMES``."""
    return tuple(name for name in COMPONENT_NAMES if name in subset)


def all_subsets() -> list[tuple[str, ...]]:
    """The 32 subsets, by size then canonical order."""
    return [combo for size in range(len(COMPONENT_NAMES) + 1)
            for combo in itertools.combinations(COMPONENT_NAMES, size)]


def half_fraction() -> list[tuple[str, ...]]:
    """The 2^(5-1) fraction with I = ABCDE: in +/-1 coding the product of the five is +1."""
    return [subset for subset in all_subsets() if len(subset) % 2 == 1]


def load_study(path: str | Path) -> StudySpec:
    """Read and validate a study file; raise ``StudyValidationError`` listing every problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise StudyValidationError(str(path), [StudyError("", f"cannot read file: {exc}")])
    except yaml.YAMLError as exc:
        raise StudyValidationError(str(path), [StudyError("", f"invalid YAML: {exc}")])
    return validate_study(raw, source=str(path))


def validate_study(raw: Any, *, source: str = "<study>") -> StudySpec:
    """Validate a parsed YAML document into a ``StudySpec``.

    Every field error is reported at once; the checks across sections (benchmarks implied by the
    training sets, per-model keys, duplicates, the resolved TrainConfig of each model) need valid
    fields and are reported, all together, once the fields are valid.
    """
    if not isinstance(raw, dict):
        raise StudyValidationError(source, [StudyError("", "a study is a mapping of sections",
                                                       type(raw).__name__)])
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as exc:
        raise StudyValidationError(source, errors_from_pydantic(exc, StudySpec)) from None
    errors = cross_field_errors(spec)
    if errors:
        raise StudyValidationError(source, errors)
    return spec


def cross_field_errors(spec: StudySpec) -> list[StudyError]:
    """Checks that involve several sections (run after every field is valid)."""
    from evaluation.results import benchmarks_for

    errors: list[StudyError] = []
    for model in spec.per_model:
        if model not in spec.models:
            errors.append(StudyError(f"per_model.{model}", "model not listed in models", model,
                                     ", ".join(spec.models), suggest(model, spec.models)))
    for section in ("models", "training_sets", "benchmarks", "presets", "seeds"):
        values = getattr(spec, section) or []
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            errors.append(StudyError(section, "duplicate entries: " + ", ".join(repeated),
                                     values))
    if isinstance(spec.components, list):
        for index, subset in enumerate(spec.components):
            if len(set(subset)) != len(subset):
                errors.append(StudyError(f"components[{index}]", "a component is listed twice",
                                         subset))
    if not spec.subsets() and not spec.presets:
        errors.append(StudyError("components", "nothing to run: no component subsets and no "
                                 "presets"))
    wanted = set(spec.benchmarks or ALL_BENCHMARKS)
    evaluated: set[str] = set()
    for index, training_set in enumerate(spec.training_sets):
        implied = set(benchmarks_for(training_set))
        evaluated |= implied
        if not implied & wanted:
            errors.append(StudyError(f"training_sets[{index}]", "no listed benchmark evaluates "
                                     "this training set", training_set,
                                     ", ".join(sorted(implied))))
    listed = set(spec.benchmarks or ())
    for benchmark in sorted(listed - evaluated):
        errors.append(StudyError("benchmarks", "no listed training set evaluates this benchmark",
                                 benchmark))
    errors.extend(_train_config_errors(spec))
    return errors


def _train_config_errors(spec: StudySpec) -> list[StudyError]:
    errors: list[StudyError] = []
    for model in spec.models:
        try:
            TrainConfig(model=model, **spec.training_overrides(model))
        except ValidationError as exc:
            for error in exc.errors():
                errors.append(StudyError(f"training ({model})", error["msg"], error.get("input")))
    return errors
