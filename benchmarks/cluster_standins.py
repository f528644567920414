"""Stand-in steps for the cluster simulation (issue 17): which cells, how long, what they write.

``benchmarks/cluster_sim.py`` runs a study through the real driver (``pipelines.runner``: the real
graph, run keys, state files and MLflow logging) with only the library bodies replaced through the
``JobFunctions`` seam, as ``benchmarks/orchestration.py`` does. The stand-ins here sleep a
scaled-down duration taken from the study plan (``ablations.plan``, i.e. ``ablations/costs.yaml``)
and return the real result types (``TrainResult``, ``BenchmarkResult`` with ``ItemResult`` items)
at realistic sizes, so the driver and MLflow see what a real run gives them.

How a stand-in knows its step: every step writes under ``<output>/steps/<step_id>/``; the driver
side writes ``<output>/sim_durations.json`` (step id -> seconds) before the run, and each stand-in
finds its step id from the folder it is handed (``cache_dir``, ``output_dir``, or the model folder
its train step returned). Base evaluations are found by (model, benchmarks). Each stand-in
appends one line per start and one per end to ``<output>/sim_ledger.jsonl`` (step id, kind, node,
pid, times): the independent record of what ran where, how often, that the checks compare to.

Departures from a real run: no model, no data, no GPU; durations are the plan's estimates times
``time_scale``; item texts are filler of a realistic length.
"""

from __future__ import annotations

import json
import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

DURATIONS_FILE = "sim_durations.json"
# Written by the simulation when a node is to be killed: {"node": name, "max_s": seconds}. A train
# body that starts on that node holds there (does not end) until the node is killed, so the kill
# always lands during a train body, whatever the machine's speed; ``max_s`` bounds the hold.
HOLD_FILE = "sim_hold.json"
LEDGER_FILE = "sim_ledger.jsonl"
NODE_ENV = "UNISD_SIM_NODE"  # set on each simulated node's `ray start`; workers inherit it
FRACTIONS = {"1/16": Fraction(1, 16), "1/4": Fraction(1, 4), "1": Fraction(1)}
PREDICTION_CHARS = 600  # about 150 tokens of completion per item


# ---- which cells, and how long each step takes (driver side) ---------------------------------

def select_cells(cells: list, fraction: str, max_cells: int | None = None) -> list:
    """Every k-th cell in name order (k = 1/fraction), then the first ``max_cells`` of those.

    Deterministic and independent of the expansion order; a fraction keeps every model, training
    set, method and seed in proportion (names are ``model/training_set/label/seed``); the cap
    keeps the first models' cells (a small study that still has base and trained cells)."""
    if fraction not in FRACTIONS:
        raise ValueError(f"fraction must be one of {sorted(FRACTIONS)}, not {fraction!r}")
    if max_cells is not None and max_cells < 1:
        raise ValueError(f"max_cells must be >= 1, not {max_cells}")
    ordered = sorted(cells, key=lambda cell: cell.name)
    return ordered[::FRACTIONS[fraction].denominator][:max_cells]


def step_durations(cells: list, time_scale: float) -> dict[str, Any]:
    """Seconds each step of ``build_graph(cells)`` sleeps: the plan's estimate x ``time_scale``.

    Keys: step ids, plus ``base:<model>|<benchmarks>`` for base evaluations and
    ``after:<train step id>`` for the evaluation of a trained cell. Also the plan's job counts."""
    from ablations.costs import load_cost_table
    from ablations.plan import eval_seconds, plan_cells, prepare_seconds, train_seconds, train_steps
    from pipelines.graph import build_graph

    table = load_cost_table()
    graph = build_graph(cells)
    seconds: dict[str, float] = {}
    steps: dict[str, dict[str, Any]] = {}
    optimizer_steps: dict[str, int] = {}
    for step in graph.steps.values():
        first = graph.cells[step.cells[0]]
        if step.kind == "prepare":
            value = prepare_seconds(first, bool(step.payload.get("cache_configs")), table)
        elif step.kind == "train":
            value = train_seconds(first, table)
            optimizer_steps[step.step_id] = train_steps(first, table)
        elif step.kind in ("evaluate", "base_eval"):
            value = eval_seconds(first, table)
        else:
            value = 0.0  # record steps run in the driver
        seconds[step.step_id] = value * time_scale
        ledger_key = step.step_id
        if step.kind == "base_eval":
            ledger_key = f"base:{first.model}|{','.join(first.benchmarks)}"
        elif step.kind == "evaluate":
            ledger_key = f"after:{step.deps[0]}"
        seconds[ledger_key] = value * time_scale
        steps[step.step_id] = {"kind": step.kind, "num_gpus": first.resources.num_gpus,
                               "ledger_key": ledger_key, "seconds": value * time_scale}
    plan = plan_cells(cells, table)
    return {"seconds": seconds, "steps": steps, "train_steps": optimizer_steps,
            "time_scale": time_scale,
            "plan": {"jobs": plan.jobs, "gpu_seconds": plan.total_seconds}}


# ---- stand-ins (worker side) -----------------------------------------------------------------

def _output_of(step_dir: Path) -> Path:
    return step_dir.parent.parent  # <output>/steps/<step_id>


def _seconds(output: Path, key: str) -> float:
    return float(json.loads((output / DURATIONS_FILE).read_text())["seconds"][key])


def _ledger(output: Path, step_id: str, kind: str, event: str, **extra: Any) -> None:
    line = json.dumps({"step_id": step_id, "kind": kind, "event": event, "time": time.time(),
                       "pid": os.getpid(), "node": os.environ.get(NODE_ENV, "?"), **extra})
    with open(output / LEDGER_FILE, "a", encoding="utf-8") as handle:  # O_APPEND: whole lines
        handle.write(line + "\n")


def _hold_if_doomed(output: Path) -> None:
    """Hold (sleep) while this process runs on the node the simulation will kill (HOLD_FILE)."""
    hold = output / HOLD_FILE
    if not hold.is_file():
        return
    spec = json.loads(hold.read_text())
    if spec["node"] != os.environ.get(NODE_ENV):
        return
    deadline = time.monotonic() + float(spec["max_s"])
    while time.monotonic() < deadline:
        time.sleep(0.1)


def _sleep_logged(output: Path, step_id: str, kind: str, seconds: float) -> None:
    _ledger(output, step_id, kind, "start", seconds=seconds)
    time.sleep(seconds)
    _ledger(output, step_id, kind, "end", seconds=seconds)


def standin_records(training_set, split, source=None, *, limit=None, seed=0):
    """A few records in the real type (the prepare step writes them to ``records.jsonl``)."""
    from unisd_core.data.records import Record

    return [Record(f"{training_set}-{i}", training_set, f"question {i}", f"Answer: {i % 4}",
                   str(i % 4)) for i in range(min(limit or 32, 32))]


def standin_prepare(config, records, *, cache_dir, model=None, tokenizer=None):
    """Sleeps the prepare step's time once (first cache setting); later calls reuse the caches,
    as the train step's own call does in a real run."""
    cache_dir = Path(cache_dir)
    step_dir = cache_dir.parent
    marker = cache_dir / "built"
    if not marker.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        output = _output_of(step_dir)
        _sleep_logged(output, step_dir.name, "prepare", _seconds(output, step_dir.name))
        marker.write_text("stand-in caches")
    return None


def standin_train(config, records, *, output_dir, metrics, caches=None, resume=False,
                  should_stop=None, **_):
    """Sleeps the train step's time over its optimizer steps, logging five metrics per step."""
    from unisd_core.training.loop import TrainResult

    output_dir = Path(output_dir)
    step_dir = output_dir.parent
    output = _output_of(step_dir)
    seconds = _seconds(output, step_dir.name)
    steps = int(json.loads((output / DURATIONS_FILE).read_text())["train_steps"][step_dir.name])
    _ledger(output, step_dir.name, "train", "start", seconds=seconds)
    _hold_if_doomed(output)
    output_dir.mkdir(parents=True, exist_ok=True)
    with (output_dir / "metrics.jsonl").open("a", encoding="utf-8") as trace:
        for step in range(1, steps + 1):
            time.sleep(seconds / steps)
            values = {"loss": 1.0 / step, "kl": 0.5 / step, "grad_norm": 1.0,
                      "learning_rate": 2e-5, "tokens": 4096.0}
            metrics.log(step, values)
            trace.write(json.dumps({"step": step, **values}) + "\n")
    model_dir = output_dir / "model"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "base_model.txt").write_text(config.model)
    # a readable config.json, as a saved model has: a resubmitted driver checks the folders of
    # done train steps whose evaluation is still to run (pipelines.repair), and would otherwise
    # take the stand-in's folder for a damaged one and train again
    (model_dir / "config.json").write_text(json.dumps({"model_type": "stand-in",
                                                       "base_model": config.model}))
    _ledger(output, step_dir.name, "train", "end", seconds=seconds)
    return TrainResult(model_dir=model_dir, steps=steps, status="completed",
                       final_metrics={"loss": 1.0 / steps})


def standin_evaluate(model, benchmarks, *, limit=None, max_new_tokens=1024, batch_size=8,
                     sources=None):
    """Sleeps the evaluation's time; returns ``BenchmarkResult``s with one item per eval item
    (``eval_sizes`` of costs.yaml, capped by ``limit`` and by ``$UNISD_SIM_ITEM_CAP``)."""
    from ablations.costs import load_cost_table
    from evaluation.results import BenchmarkResult, ItemResult

    model_path = Path(str(model))
    if (model_path / "base_model.txt").is_file():  # <output>/steps/<train>/train/model
        train_dir = model_path.parent.parent
        output, key, step_id, kind = (_output_of(train_dir), f"after:{train_dir.name}",
                                      f"after:{train_dir.name}", "evaluate")
    else:
        output = Path(os.environ["UNISD_SIM_OUTPUT"])
        key = f"base:{model}|{','.join(benchmarks)}"
        step_id, kind = key, "base_eval"
    _sleep_logged(output, step_id, kind, _seconds(output, key))
    sizes = load_cost_table().eval_sizes
    cap = int(os.environ.get("UNISD_SIM_ITEM_CAP", "0")) or None
    results = {}
    for index, benchmark in enumerate(benchmarks):
        count = min(filter(None, (sizes.get(benchmark, 500), limit, cap)))
        items = tuple(ItemResult(f"{benchmark}-{i}", "x" * PREDICTION_CHARS, "A",
                                 float((i + index + len(str(model))) % 3 == 0), "stand-in")
                      for i in range(count))
        score = sum(item.score for item in items) / count
        results[benchmark] = BenchmarkResult(benchmark, score, {"acc": score}, items, "1.0")
    return results
