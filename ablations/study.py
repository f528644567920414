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
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (AfterValidator, Discriminator, Field, StrictInt, Tag, ValidationError,
                      create_model)
from pydantic_core import PydanticCustomError

from ablations.costs import ModelFolderError, load_cost_table
from ablations.study_errors import (StudyError, StudyValidationError, errors_from_pydantic,
                                    suggest)
from ablations.study_yaml import non_finite_numbers, read_study_document
from pipelines.cells import EvalSettings, Resources
from unisd_core.config import COMPONENT_NAMES, SEED_MAX, ComponentsConfig, Frozen, TrainConfig
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
    try:
        family = table.model_family(model)
    except ModelFolderError as exc:
        raise PydanticCustomError("bad_model_folder", str(exc),
                                  {"reason": str(exc), "allowed": "a model folder whose "
                                   "config.json is a JSON object with a model_type"}) from None
    if family is None:
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


def _safe_output_dir(value: str | None) -> str | None:
    problem = output_dir_problem(value)
    if problem is not None:
        raise PydanticCustomError("unsafe_output_dir", problem,
                                  {"reason": problem, "allowed": "a folder below the filesystem "
                                   "root, written without '..'"})
    return value


def output_dir_problem(value: str | None) -> str | None:
    """Why ``value`` is refused as a study's output folder (None when fine): the filesystem root,
    an empty path, or a path that climbs with ``..`` (the runner writes and deletes below it)."""
    if value is None:
        return None
    if not value.strip():
        return "output_dir is empty"
    path = Path(value).expanduser()
    if ".." in path.parts:
        return "output_dir must not climb out with '..'"
    resolved = path.resolve()
    if resolved == resolved.parent:
        return "output_dir is the filesystem root"
    return None


ModelName = Annotated[str, Field(min_length=1), AfterValidator(_known_family)]
Seed = Annotated[StrictInt, Field(ge=0, le=SEED_MAX)]
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
    output_dir: Annotated[str | None, AfterValidator(_safe_output_dir)] = None
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
    """Read and validate a study file; raise ``StudyValidationError`` listing every problem.

    The bytes go through :func:`ablations.study_yaml.read_study_document` (strict UTF-8, bounded
    depth and aliases, YAML 1.2 scalars, duplicate keys reported), then :func:`validate_study`.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StudyValidationError(str(path), [StudyError("", f"cannot read file: {exc}")])
    raw, problems = read_study_document(data)
    if raw is None and problems:
        raise StudyValidationError(str(path), problems)
    return validate_study(raw, source=str(path), problems=problems)


def validate_study(raw: Any, *, source: str = "<study>",
                   problems: list[StudyError] | None = None) -> StudySpec:
    """Validate a parsed YAML document into a ``StudySpec``.

    Types are strict (JSON's: ``'3'`` is not an int, ``'yes'`` not a boolean) and numbers finite.
    Every field error is reported at once, with ``problems`` found while reading; the checks
    across sections (benchmarks implied by the training sets, per-model keys, duplicates, the
    resolved TrainConfig of each model) need valid fields and are reported, all together, once
    the fields are valid.
    """
    errors = list(problems or [])
    if not isinstance(raw, dict):
        raise StudyValidationError(source, errors + [StudyError(
            "", "a study is a mapping of sections", type(raw).__name__)])
    errors += non_finite_numbers(raw)
    try:
        spec = StudySpec.model_validate_json(json.dumps(raw, default=str), strict=True)
    except ValidationError as exc:
        raise StudyValidationError(source, errors + errors_from_pydantic(exc, StudySpec)) from None
    except (TypeError, ValueError) as exc:  # keys JSON cannot carry
        raise StudyValidationError(source, errors + [StudyError("", f"unsupported value: {exc}")])
    errors += cross_field_errors(spec)
    if errors:
        raise StudyValidationError(source, errors)
    return spec


def with_output_dir(spec: StudySpec, output_dir: str | Path | None) -> StudySpec:
    """``spec`` with its output folder replaced (the CLI's ``--output-dir``), checked like the
    study's own ``output_dir``."""
    if output_dir is None:
        return spec
    problem = output_dir_problem(str(output_dir))
    if problem is not None:
        raise StudyValidationError("--output-dir", [StudyError("--output-dir", problem, str(output_dir))])
    return spec.model_copy(update={"output_dir": str(output_dir)})


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
    errors.extend(_hub_errors(spec))
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


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@lru_cache(maxsize=64)
def hub_model_status(model: str) -> str:
    """``"known"`` (in costs.yaml or a local folder), ``"exists"``, ``"missing"`` (the hub says no
    such repository) or ``"unverified: <why>"`` (offline or the hub did not answer)."""
    if model in load_cost_table().models or Path(model).expanduser().exists() or not _HUB_ID.match(model):
        return "known"
    if _hub_offline():
        return "unverified: offline (HF_HUB_OFFLINE is set)"
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError

        HfApi().model_info(model, timeout=5)
    except GatedRepoError:
        return "exists"
    except RepositoryNotFoundError:
        return "missing"
    except Exception as exc:  # any network failure: say so, do not guess
        return f"unverified: the hub did not answer ({type(exc).__name__})"
    return "exists"


def _hub_errors(spec: StudySpec) -> list[StudyError]:
    known = sorted(load_cost_table().models)
    return [StudyError(f"models[{index}]", "no such model on the hub", model, None, suggest(model, known))
            for index, model in enumerate(spec.models) if hub_model_status(model) == "missing"]


def study_notes(spec: StudySpec) -> list[str]:
    """What validation accepted but changed or could not check (printed as notes, not errors):
    equivalent component subsets kept once, the empty subset and the ``sdft`` preset run once,
    hub ids that could not be verified."""
    notes: list[str] = []
    if isinstance(spec.components, list):
        groups: dict[tuple[str, ...], list[int]] = {}
        for index, subset in enumerate(spec.components):
            groups.setdefault(canonical(subset), []).append(index)
        for subset, indexes in groups.items():
            if len(indexes) > 1:
                places = ", ".join(f"components[{i}]" for i in indexes)
                notes.append(f"{places} are the same subset [{', '.join(subset)}]: run once")
    if () in spec.subsets() and "sdft" in spec.presets:
        notes.append("the empty subset [] and the preset sdft are the same run (plain SDFT): run "
                     "once, reported as the empty subset")
    known = sorted(load_cost_table().models)
    for index, model in enumerate(spec.models):
        status = hub_model_status(model)
        if status.startswith("unverified"):
            hint = suggest(model, known)
            notes.append(f"models[{index}] {model!r} is not a model listed in costs.yaml and could "
                         f"not be verified on the hub ({status.split(': ', 1)[1]})"
                         + (f"; did you mean {hint!r}?" if hint else ""))
    return notes
