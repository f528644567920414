"""The per-model cost table (``costs.yaml``): model families, paper batch sizes, GPU-second costs.

The study validator uses it to know a model's family (an unknown family is an error, since
neither the per-model presets nor a cost estimate exist for it); ``unisd study plan`` uses it to
estimate GPU seconds per job. Departure from the paper: the paper publishes no costs; these
numbers are planning estimates (see the header of ``costs.yaml``).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

COSTS_PATH = Path(__file__).with_name("costs.yaml")


class ModelFolderError(ValueError):
    """A local model folder whose ``config.json`` cannot be read as a JSON object."""


def read_model_type(config: Path) -> str | None:
    """``model_type`` of a model folder's ``config.json`` (None when the key is absent).

    Raises ModelFolderError, naming the file, when it is not UTF-8 JSON holding an object."""
    try:
        payload = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{config} is not readable JSON ({type(exc).__name__}: "
                               f"{str(exc)[:200]})") from None
    if not isinstance(payload, dict):
        raise ModelFolderError(f"{config} holds a JSON {type(payload).__name__}, not an object "
                               "with a model_type")
    value = payload.get("model_type")
    return None if value is None else str(value)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FamilyCost(_Frozen):
    patterns: tuple[str, ...]
    train_seconds_per_billion_step: float = Field(gt=0)
    eval_seconds_per_billion_item: float = Field(gt=0)


class ModelCost(_Frozen):
    family: str
    params_b: float = Field(gt=0)
    per_device_batch: int = Field(ge=1)
    train_seconds_per_step: float = Field(gt=0)
    eval_seconds_per_item: float = Field(gt=0)
    prepare_seconds: float = Field(ge=0)


class CostTable(_Frozen):
    families: dict[str, FamilyCost]
    models: dict[str, ModelCost]
    component_factors: dict[str, float]
    method_factors: dict[str, float]
    train_sizes: dict[str, int]
    eval_sizes: dict[str, int]

    def model_family(self, model: str) -> str | None:
        """Family of a model name, hub id or local folder; None when unknown.

        Raises ModelFolderError when a local folder's ``config.json`` is not a JSON object."""
        if model in self.models:
            return self.models[model].family
        config = Path(model) / "config.json"
        text = model.lower()
        if config.is_file():
            text = read_model_type(config) or text
        for family, cost in self.families.items():
            if any(pattern in text for pattern in cost.patterns):
                return family
        return None

    def model_cost(self, model: str) -> ModelCost | None:
        """The table entry, or one derived from the family and the size in the name."""
        if model in self.models:
            return self.models[model]
        family = self.model_family(model)
        size = parse_billions(model)
        if family is None or size is None:
            return None
        cost = self.families[family]
        return ModelCost(
            family=family, params_b=size, per_device_batch=max(1, int(16 / max(size, 0.5))),
            train_seconds_per_step=cost.train_seconds_per_billion_step * size,
            eval_seconds_per_item=cost.eval_seconds_per_billion_item * size,
            prepare_seconds=600 * size,
        )


def parse_billions(model: str) -> float | None:
    """``"Qwen2.5-7B-Instruct"`` -> 7.0; None when the name carries no size."""
    match = re.search(r"(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])", model.split("/")[-1])
    return float(match.group(1)) if match else None


@lru_cache(maxsize=4)
def load_cost_table(path: Path = COSTS_PATH) -> CostTable:
    """Parse and validate the cost table shipped next to this module."""
    return CostTable.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
