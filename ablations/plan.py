"""What a study will run: job counts by kind and a GPU-second estimate from ``costs.yaml``.

Jobs are the steps of ``pipelines.graph.build_graph`` (what ``unisd study run`` executes): one
*prepare* per (model, training set, data), one *base-eval* per distinct base evaluation, one
*train* per distinct train key and one *evaluate* per distinct evaluation of a trained cell (the
driver-side *record* steps use no accelerator and are not counted). Costs are planning estimates (see
``costs.yaml``): train seconds scale with steps, batch and the enabled components; evaluation
seconds with items and the generation budget (relative to the paper's 1024 new tokens).
Pure arithmetic on the cells: no model, dataset or cluster is touched, so it takes seconds even
for the paper study.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ablations.costs import CostTable, load_cost_table
from pipelines.cells import CellSpec
from pipelines.graph import build_graph

JOB_KINDS: tuple[str, ...] = ("prepare", "base-eval", "train", "evaluate")
_KIND_NAMES = {"prepare": "prepare", "base_eval": "base-eval", "train": "train",
               "evaluate": "evaluate"}
_PAPER_EFFECTIVE_BATCH_ACCUM = 4
_PAPER_MAX_NEW_TOKENS = 1024


@dataclass
class StudyPlan:
    """Job counts and estimated GPU seconds per kind (and per model)."""

    jobs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(JOB_KINDS, 0))
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(JOB_KINDS, 0.0))
    seconds_by_model: dict[str, float] = field(default_factory=dict)
    cells: int = 0

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    @property
    def gpu_hours(self) -> float:
        return self.total_seconds / 3600.0

    def add(self, kind: str, model: str, seconds: float) -> None:
        self.jobs[kind] += 1
        self.seconds[kind] += seconds
        self.seconds_by_model[model] = self.seconds_by_model.get(model, 0.0) + seconds


def plan_cells(cells: list[CellSpec], table: CostTable | None = None) -> StudyPlan:
    """Count the jobs of ``cells`` (the steps ``pipelines.graph`` will run) and their seconds."""
    table = table or load_cost_table()
    graph = build_graph(cells)
    plan = StudyPlan(cells=len(cells))
    for step in graph.steps.values():
        if step.kind not in _KIND_NAMES:
            continue  # record steps run in the driver and use no accelerator
        first = graph.cells[step.cells[0]]
        if step.kind == "prepare":
            seconds = prepare_seconds(first, bool(step.payload.get("cache_configs")), table)
        elif step.kind == "train":
            seconds = train_seconds(first, table)
        else:
            seconds = eval_seconds(first, table)
        plan.add(_KIND_NAMES[step.kind], first.model, seconds)
    return plan


def prepare_seconds(cell: CellSpec, builds_caches: bool, table: CostTable) -> float:
    """Shared caches cost the model's prepare time; loading records alone a small share."""
    cost = table.model_cost(cell.model)
    if cost is None:
        return 0.0
    return cost.prepare_seconds if builds_caches else 0.05 * cost.prepare_seconds


def train_steps(cell: CellSpec, table: CostTable) -> int:
    """Optimizer steps of a trained cell (``max_steps`` or epochs over the training set)."""
    assert cell.train is not None
    if cell.train.max_steps is not None:
        return cell.train.max_steps
    examples = table.train_sizes.get(cell.training_set, 1000)
    if cell.data.limit is not None:
        examples = min(examples, cell.data.limit)
    per_step = cell.train.per_device_batch * cell.train.grad_accum
    return cell.train.epochs * math.ceil(examples / per_step)


def train_seconds(cell: CellSpec, table: CostTable) -> float:
    """Steps x seconds per step, scaled by batch, method and enabled components."""
    cost = table.model_cost(cell.model)
    if cost is None or cell.train is None:
        return 0.0
    train = cell.train
    batch_scale = (train.per_device_batch * train.grad_accum) / (
        cost.per_device_batch * _PAPER_EFFECTIVE_BATCH_ACCUM)
    factor = table.method_factors.get(train.method, 1.0) + sum(
        table.component_factors.get(name, 0.0) for name in train.components.enabled())
    return train_steps(cell, table) * cost.train_seconds_per_step * batch_scale * factor


def eval_seconds(cell: CellSpec, table: CostTable) -> float:
    """Items x seconds per item over the cell's benchmarks, scaled by the token budget."""
    cost = table.model_cost(cell.model)
    if cost is None:
        return 0.0
    items = 0
    for benchmark in cell.benchmarks:
        size = table.eval_sizes.get(benchmark, 500)
        items += min(size, cell.eval.limit) if cell.eval.limit else size
    return items * cost.eval_seconds_per_item * cell.eval.max_new_tokens / _PAPER_MAX_NEW_TOKENS
