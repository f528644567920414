"""One cell of a study (a trained configuration, or the base model) and the keys of its steps.

A study expands (in ``ablations.grid``) into ``CellSpec`` objects. Each cell runs as steps that
share work: one *prepare* step per (model, training set, data and cache settings), one *base
evaluation* per (model, benchmarks, eval settings), then per trained cell a *train* and an
*evaluate* step. Every key is a sha256 of the fields that change results plus
``unisd_core.LIBRARY_VERSION``; names, resources, paths and timestamps never enter a key, so
renaming a cell or moving the output folder does not recompute anything (design.md habit 5).

Departures from the paper: none (the paper has no run identity). ``method="unisd"`` is a label for
``sdft`` with at least one component; the label is checked against the train config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from unisd_core.config import TrainConfig, config_hash
from unisd_core.version import LIBRARY_VERSION

METHOD_LABELS: tuple[str, ...] = ("base", "sft", "sdft", "gkd", "ssd", "opsd", "unisd")
MethodLabel = Literal["base", "sft", "sdft", "gkd", "ssd", "opsd", "unisd"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Resources(_Frozen):
    """What one train/evaluate task asks Ray for (never part of a key)."""

    num_gpus: float = Field(0.0, ge=0.0)
    num_cpus: float = Field(1.0, gt=0.0)
    memory_gb: float | None = Field(None, gt=0.0)


class EvalSettings(_Frozen):
    """How a checkpoint is scored (lm-eval through ``evaluation.lm_eval_adapter.evaluate``)."""

    limit: int | None = Field(None, ge=1)
    max_new_tokens: int = Field(1024, ge=1)
    batch_size: int = Field(8, ge=1)
    # method.md 6 (gold fit, PPLret, JSD to base) after lm-eval; off saves the extra forwards.
    retention: bool = True


class DataSettings(_Frozen):
    """Which training records a cell reads: ``source`` as in ``load_records`` (None = sample)."""

    source: str | None = None
    limit: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0)
    eval_sources: dict[str, str] = Field(default_factory=dict)


class CellSpec(_Frozen):
    """One cell: ``train`` is None exactly when ``method == "base"``."""

    name: str = Field(min_length=1)
    method: MethodLabel
    subset: str = "none"
    train: TrainConfig | None = None
    model: str
    training_set: str
    seed: int = Field(0, ge=0)
    benchmarks: tuple[str, ...] = Field(min_length=1)
    eval: EvalSettings = EvalSettings()
    data: DataSettings = DataSettings()
    resources: Resources = Resources()

    @model_validator(mode="after")
    def _consistent(self) -> "CellSpec":
        problems = _consistency_problems(self)
        if problems:
            raise ValueError(f"cell {self.name!r}: " + "; ".join(problems))
        return self

    # ---- keys -------------------------------------------------------------------------------
    def train_key(self) -> str | None:
        """Identity of the trained checkpoint (None for base cells)."""
        if self.train is None:
            return None
        return _key("train", self.train.model_dump(mode="json"), self.training_set,
                    _data_payload(self.data))

    def eval_key(self) -> str:
        """Identity of the scores: what was evaluated, on what, how."""
        evaluated = self.train_key() or _key("base-model", self.model)
        return _key("evaluate", evaluated, list(self.benchmarks), self.eval.model_dump(mode="json"),
                    dict(sorted(self.data.eval_sources.items())))

    def run_key(self) -> str:
        """Identity of the cell's MLflow run: every result-changing field + library version."""
        return _key("run", self.method, self.subset, self.model, self.training_set, self.seed,
                    self.train_key(), self.eval_key())

    def base_eval_key(self) -> str:
        """Identity of the base-model evaluation shared by every cell of (model, benchmarks)."""
        return _key("base-eval", self.model, list(self.benchmarks),
                    self.eval.model_dump(mode="json"), dict(sorted(self.data.eval_sources.items())))


def _consistency_problems(cell: CellSpec) -> list[str]:
    problems: list[str] = []
    if (cell.method == "base") != (cell.train is None):
        problems.append("method 'base' has no train config, every other method needs one")
    if cell.train is None:
        return problems
    if cell.train.model != cell.model:
        problems.append(f"train.model {cell.train.model!r} differs from model {cell.model!r}")
    if cell.train.seed != cell.seed:
        problems.append(f"train.seed {cell.train.seed} differs from seed {cell.seed}")
    expected = expected_method_label(cell.train)
    if cell.method != expected:
        problems.append(f"method {cell.method!r} does not match the train config ({expected!r})")
    if cell.subset != cell.train.components.subset_label():
        problems.append(f"subset {cell.subset!r} differs from "
                        f"{cell.train.components.subset_label()!r}")
    return problems


def expected_method_label(train: TrainConfig) -> str:
    """``unisd`` for sdft with components, else the train method."""
    if train.method == "sdft" and train.components.enabled():
        return "unisd"
    return train.method


def cache_settings(train: TrainConfig) -> dict[str, object]:
    """The component settings that decide the shared caches (contexts, negatives).

    Only the fields that change what ``prepare_caches`` builds: weights such as gamma or
    lambda_c are applied at training time and must not split the shared cache.
    """
    settings: dict[str, object] = {}
    agreement = train.components.agreement
    if agreement is not None:
        settings["agreement"] = {
            "num_contexts": agreement.num_contexts,
            "context_source": agreement.context_source,
            "induction_examples": agreement.induction_examples,
            "induction_max_new_tokens": agreement.induction_max_new_tokens,
        }
    contrastive = train.components.contrastive
    if contrastive is not None:
        settings["contrastive"] = {
            "num_negatives": contrastive.num_negatives,
            "negative_max_new_tokens": contrastive.negative_max_new_tokens,
            "negative_source": contrastive.negative_source,
        }
    return settings


def prepare_key(model: str, training_set: str, data: DataSettings,
                settings: dict[str, object]) -> str:
    """Key of one prepare step; ``settings`` from :func:`cache_settings` (or their union)."""
    return _key("prepare", model, training_set, _data_payload(data), settings)


def _data_payload(data: DataSettings) -> dict[str, object]:
    return {"source": data.source, "limit": data.limit, "seed": data.seed}


def _key(*parts: object) -> str:
    return config_hash([LIBRARY_VERSION, *parts])


def short(key: str) -> str:
    """The first 10 hex digits: enough to name folders and steps."""
    return key[:10]


def save_cells(cells: list[CellSpec], path: Path | str) -> None:
    """Write cells as JSON (what ``python -m pipelines run`` reads, e.g. in ``ray job submit``)."""
    Path(path).write_text(json.dumps([cell.model_dump(mode="json") for cell in cells], indent=1),
                          encoding="utf-8")


def load_cells(path: Path | str) -> list[CellSpec]:
    return [CellSpec.model_validate(row) for row in json.loads(Path(path).read_text("utf-8"))]
