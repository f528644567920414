"""The job graph of a study: shared prepare and base-evaluation steps, per-cell train/eval/record.

- one ``prepare`` step per (model, training set, data settings): loads the records once and builds
  the caches of every cache setting its cells use (the union), whatever the number of cells and
  seeds;
- one ``base_eval`` step per (model, benchmarks, eval settings), shared by every base cell;
- per trained cell a ``train`` step and an ``evaluate`` step (cells with identical keys share
  them), and per cell a ``record`` step that the driver runs itself (MLflow).

Step ids are ``<kind>-<first 10 hex of the key>``; a step whose key changes is a new step.

Departures from the paper: none.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pipelines.cells import CellSpec, Resources, cache_settings, prepare_key, short
from unisd_core.config import COMPONENT_NAMES, TrainConfig, config_hash

KINDS: tuple[str, ...] = ("prepare", "base_eval", "train", "evaluate", "record")


@dataclasses.dataclass
class Step:
    """One node: what to run, on what it depends, which cells wait for it."""

    step_id: str
    kind: str
    key: str
    label: str
    deps: list[str]
    cells: list[str]
    resources: Resources
    payload: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        return {"step_id": self.step_id, "kind": self.kind, "key": self.key, "label": self.label,
                "deps": self.deps, "cells": self.cells}


@dataclasses.dataclass
class Graph:
    steps: dict[str, Step]
    cells: dict[str, CellSpec]
    record_step_of: dict[str, str]

    def count(self, kind: str) -> int:
        return sum(step.kind == kind for step in self.steps.values())


def build_graph(cells: list[CellSpec]) -> Graph:
    """Steps in topological order (prepare and base evaluations first)."""
    names = [cell.name for cell in cells]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"cell names must be unique; repeated: {duplicates}")
    steps: dict[str, Step] = {}
    prepare_of = _prepare_steps(cells, steps)
    record_step_of: dict[str, str] = {}
    for cell in cells:
        if cell.train is None:
            evaluated = _base_eval_step(cell, steps)
        else:
            trained = _train_step(cell, prepare_of[_group(cell)], steps)
            evaluated = _evaluate_step(cell, trained, steps)
        record_step_of[cell.name] = _record_step(cell, evaluated, steps)
    return Graph(steps=steps, cells={cell.name: cell for cell in cells},
                 record_step_of=record_step_of)


def _group(cell: CellSpec) -> tuple[str, str, str]:
    return (cell.model, cell.training_set, config_hash(cell.data.model_dump(mode="json")))


def _prepare_steps(cells: list[CellSpec], steps: dict[str, Step]) -> dict[tuple, str]:
    groups: dict[tuple, list[CellSpec]] = {}
    for cell in cells:
        if cell.train is not None:
            groups.setdefault(_group(cell), []).append(cell)
    prepare_of: dict[tuple, str] = {}
    for group, members in groups.items():
        configs = _cache_configs(members)
        settings = sorted((cache_settings(config) for config in configs), key=config_hash)
        first = members[0]
        key = prepare_key(first.model, first.training_set, first.data, {"union": settings})
        step_id = f"prepare-{short(key)}"
        steps[step_id] = Step(
            step_id=step_id, kind="prepare", key=key,
            label=f"prepare {_model_label(first.model)} / {first.training_set}", deps=[],
            cells=[cell.name for cell in members], resources=first.resources,
            payload={"model": first.model, "training_set": first.training_set,
                     "data": first.data.model_dump(mode="json"),
                     "cache_configs": [config.model_dump(mode="json") for config in configs]})
        prepare_of[group] = step_id
    return prepare_of


def _cache_configs(members: list[CellSpec]) -> list[TrainConfig]:
    """One representative train config per distinct cache setting (empty settings need none)."""
    seen: dict[str, TrainConfig] = {}
    for cell in members:
        settings = cache_settings(cell.train)
        if settings:
            seen.setdefault(config_hash(settings), cell.train)
    return list(seen.values())


def _shared_step(steps: dict[str, Step], cell: CellSpec, kind: str, key: str, label: str,
                 deps: list[str], payload: dict[str, Any]) -> str:
    """The step of ``kind`` with ``key`` (created on first use, shared by every cell with that
    key), with ``cell`` added to the cells that wait for it."""
    step_id = f"{kind}-{short(key)}"
    if step_id not in steps:
        steps[step_id] = Step(step_id=step_id, kind=kind, key=key, label=label, deps=deps, cells=[],
                              resources=cell.resources, payload=payload)
    steps[step_id].cells.append(cell.name)
    return step_id


def _base_eval_step(cell: CellSpec, steps: dict[str, Step]) -> str:
    return _shared_step(steps, cell, "base_eval", cell.base_eval_key(),
                        f"base eval {_model_label(cell.model)}", [], _eval_payload(cell))


def _train_step(cell: CellSpec, prepare_id: str, steps: dict[str, Step]) -> str:
    payload = {"cell": cell.name, "train": cell.train.model_dump(mode="json"),
               "needs_caches": bool(cache_settings(cell.train))}
    return _shared_step(steps, cell, "train", cell.train_key(), f"train {cell.name}", [prepare_id], payload)


def _evaluate_step(cell: CellSpec, train_id: str, steps: dict[str, Step]) -> str:
    return _shared_step(steps, cell, "evaluate", cell.eval_key(), f"evaluate {cell.name}", [train_id],
                        _eval_payload(cell))


def _record_step(cell: CellSpec, evaluated_id: str, steps: dict[str, Step]) -> str:
    key = cell.run_key()
    step_id = f"record-{short(key)}-{cell.name}"
    steps[step_id] = Step(step_id=step_id, kind="record", key=key, label=f"record {cell.name}",
                          deps=[evaluated_id], cells=[cell.name], resources=cell.resources,
                          payload={"cell": cell.name})
    return step_id


def _eval_payload(cell: CellSpec) -> dict[str, Any]:
    return {"cell": cell.name, "model": cell.model, "benchmarks": list(cell.benchmarks),
            "eval": cell.eval.model_dump(mode="json"), "sources": dict(cell.data.eval_sources)}


def _model_label(model: str) -> str:
    return model.rstrip("/").rsplit("/", 1)[-1]


def cell_tags(cell: CellSpec) -> dict[str, str]:
    """The identity tags of a cell's MLflow run (component flags, dataset, seed, key, ...).

    The model family is tagged later, from the worker (finding it loads the model's config,
    and the driver should not import torch for that).
    """
    enabled = cell.train.components.enabled() if cell.train is not None else ()
    tags = {"unisd.run_key": cell.run_key(), "unisd.cell": cell.name, "unisd.method": cell.method,
            "unisd.subset": cell.subset, "unisd.model": cell.model,
"unisd.training_set": cell.training_set,
            "unisd.dataset": cell.training_set, "unisd.seed": str(cell.seed),
            "unisd.benchmarks": ",".join(cell.benchmarks)}
    for name in COMPONENT_NAMES:
        tags[f"unisd.component.{name}"] = "true" if name in enabled else "false"
    return tags
