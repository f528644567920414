"""Orchestration benchmark (issue 8): for a grid of N short jobs run through the real study runner
(``pipelines.runner.run_study``: real local Ray, real SQLite MLflow, real state files), the wall
time against the sum of job times over the available slots (packing efficiency), and the fixed
overhead per job.

Usage: ``python benchmarks/orchestration.py [--grids 8:0 8:10 6:60] [--repeats 1]``
(``N:seconds``: N cells whose training takes that many seconds). Each grid runs in a fresh
interpreter, so each pays Ray's start once, as a user's ``unisd run`` does.

A job is one cell: the shared prepare step, train, evaluate and record. Only the library calls
are stand-ins (``JobFunctions``, the runner's own seam for this): training sleeps ``seconds``
(sleep, not spin, so that the figure is the orchestration's and not the CPU contention of other
work on this shared machine), evaluation returns two scored items at once. Every stand-in logs
its start and end; "work" is the sum of those intervals. With S slots (one CPU per step, S = the
local cluster's CPUs):

- ideal wall = work / S; packing efficiency = ideal wall / measured wall (1.0 = perfect);
- overhead per job = (S x wall - work) / N: the slot-seconds each job costs beyond its own work
  (Ray task start, worker import, state files, MLflow runs, records), also shown after the first
  step starts (the study's start: Ray and the MLflow store (created side by side), one MLflow
  run per cell, the workers' imports); ``setup_s`` is the part until the first step is
  submitted (everything in the driver);
- the fixed and the marginal overhead, from a least-squares fit wall = fixed + N x per_job / S
  over the zero-second grids of several sizes; the fit also gives a *modelled* efficiency for
  larger grids (printed as such, not as a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measure import emit, machine_line, run_worker, table  # noqa: E402

SCRIPT = Path(__file__).resolve()
TIMING_ENV, SECONDS_ENV = "UNISD_BENCH_TIMING", "UNISD_BENCH_JOB_SECONDS"  # UNISD_* reach Ray workers


@dataclass
class StandInTrainResult:
    model_dir: Path
    steps: int
    status: str
    final_metrics: dict


@dataclass
class StandInItem:
    item_id: str
    prediction: str
    extracted: str
    score: float
    reason: str


@dataclass
class StandInBenchmark:
    benchmark: str
    score: float
    metrics: dict
    items: tuple
    task_version: str


def _log_interval(kind: str, start: float) -> None:
    line = json.dumps({"kind": kind, "start": start, "end": time.time(), "pid": os.getpid()})
    with open(os.environ[TIMING_ENV], "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def standin_records(benchmark, split, source=None, *, limit=None, seed=0):
    from unisd_core.data.records import Record

    return [Record(f"{benchmark}-{i}", benchmark, f"q{i}", f"Answer: {i}", str(i)) for i in range(limit or 4)]


def standin_prepare(config, records, *, cache_dir, model=None, tokenizer=None):
    start = time.time()
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    _log_interval("prepare", start)
    return None


def standin_train(config, records, *, output_dir, metrics, caches=None, resume=False, should_stop=None, **_):
    start = time.time()
    seconds = float(os.environ.get(SECONDS_ENV, "0"))
    steps = config.max_steps or 1
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        metrics.log(step, {"loss": 1.0 / step})
    model_dir = Path(output_dir) / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    _log_interval("train", start)
    return StandInTrainResult(model_dir, steps, "completed", {"loss": 1.0 / steps})


def standin_evaluate(model, benchmarks, *, limit=None, **_):
    start = time.time()
    results = {}
    for benchmark in benchmarks:
        items = tuple(StandInItem(f"{benchmark}-{i}", "Answer: A", "A", float(i % 2), "ok") for i in range(2))
        results[benchmark] = StandInBenchmark(benchmark, 0.5, {"acc": 0.5}, items, "1.0")
    _log_interval("evaluate", start)
    return results


def _cells(count: int):
    from pipelines.cells import CellSpec, EvalSettings, Resources
    from unisd_core.config import TrainConfig

    cells = []
    for index in range(count):
        train = TrainConfig(model="tiny-qwen2", seed=index, max_steps=4, per_device_batch=2, grad_accum=1)
        cells.append(CellSpec(name=f"job{index}", method="sdft", subset="none", train=train, model="tiny-qwen2",
                              training_set="cose", seed=index, benchmarks=("cose",), eval=EvalSettings(limit=2),
                              resources=Resources(num_cpus=1)))
    return cells


def worker(args) -> None:
    from pipelines.job import JobFunctions
    from pipelines.runner import run_study

    # Imported by name (not this ``__main__``) so that Ray ships references the workers resolve
    # through PYTHONPATH (set by ``run_worker``), not pickled copies.
    from benchmarks import orchestration as stand_ins

    functions = JobFunctions(load_records=stand_ins.standin_records, prepare_caches=stand_ins.standin_prepare,
                             train=stand_ins.standin_train, evaluate=stand_ins.standin_evaluate)
    with tempfile.TemporaryDirectory(prefix="unisd-orch-", dir=args.keep_dir) as folder:
        timing = Path(folder) / "timing.jsonl"
        os.environ[TIMING_ENV], os.environ[SECONDS_ENV] = str(timing), str(args.seconds)
        started = time.time()
        # Cold, as a user's ``unisd study run`` starts: run_study starts Ray, creates the MLflow
        # store and warms the workers itself (local workers inherit this environment, the
        # UNISD_BENCH_* variables included).
        outcome = run_study(_cells(args.jobs), study_name=f"orch-{args.jobs}x{args.seconds}",
                            output_dir=Path(folder) / "study", progress=False, poll_s=0.2,
                            functions=functions)
        wall = time.time() - started
        intervals = [json.loads(line) for line in timing.read_text().splitlines()] if timing.exists() else []
        submitted = [json.loads(path.read_text()).get("started_at") for path in (Path(folder) / "study" / "state").glob("*.json")]
        phases = {"setup_s": min(filter(None, submitted), default=started) - started}
    from pipelines import ray_adapter

    slots = int(ray_adapter.connect().get("CPU", 0))
    ray_adapter.shutdown()
    failures = {name: f"{cell.status}: {cell.reason}"[:300] for name, cell in outcome.cells.items()
                if cell.status != "done"}
    if not intervals or failures:
        emit({"error": "jobs did not complete", "failures": failures, "wall_s": wall})
        return
    work = sum(i["end"] - i["start"] for i in intervals)
    first_start = min(i["start"] for i in intervals if i["kind"] == "train") - started
    done = len(outcome.cells) - len(failures)
    emit({"wall_s": wall, "work_s": work, "slots": slots, "startup_s": first_start, **phases,
          "done": done,
          "jobs": args.jobs, "seconds": args.seconds})


def grid_metrics(result: dict) -> dict:
    """Packing figures of one grid run (see the module docstring)."""
    slots, wall, work, jobs = result["slots"], result["wall_s"], result["work_s"], result["jobs"]
    ideal = work / slots
    return {"ideal_s": ideal, "efficiency": ideal / wall,
            "efficiency_after_start": ideal / max(wall - result["startup_s"], 1e-9),
            "overhead_per_job_s": (slots * wall - work) / jobs,
            "overhead_per_job_after_start_s": (slots * (wall - result["startup_s"]) - work) / jobs}


def fit_overheads(points: list[tuple[int, float, int]]) -> tuple[float, float] | None:
    """Least squares of wall = fixed + jobs * per_job / slots over (jobs, wall, slots) points of
    zero-second grids. -> (fixed study overhead s, marginal slot-seconds per job), None if fewer
    than two distinct sizes."""
    if len({jobs for jobs, _, _ in points}) < 2:
        return None
    xs = [jobs / slots for jobs, _, slots in points]
    ys = [wall for _, wall, _ in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    return mean_y - slope * mean_x, slope


def modelled_efficiency(fixed: float, per_job: float, jobs: int, seconds: float, slots: int) -> float:
    """Packing efficiency the fit predicts for ``jobs`` jobs of ``seconds`` (a model, not a measurement)."""
    ideal = jobs * seconds / slots
    return ideal / (fixed + jobs * (seconds + per_job) / slots)


def driver(args) -> int:
    print(f"# orchestration: run_study on a local Ray cluster + SQLite MLflow, stand-in steps "
          f"(sleep), grids {args.grids}, {args.repeats} repeat(s), each grid in a fresh process")
    print(f"# machine: {machine_line()}")
    rows, zero_points, slots_seen = [], [], 1
    for grid in args.grids:
        jobs, seconds = (int(grid.split(":")[0]), float(grid.split(":")[1]))
        for repeat in range(args.repeats):
            r = run_worker(SCRIPT, ["--jobs", str(jobs), "--seconds", str(seconds)], timeout_s=1800)
            print(f"  run {repeat + 1}: {grid}: {r}", flush=True)
            if "error" in r:
                rows.append([jobs, seconds, "failed: " + r["error"]] + [""] * 10)
                continue
            m, slots_seen = grid_metrics(r), r["slots"]
            if seconds == 0:
                zero_points.append((jobs, r["wall_s"], r["slots"]))
            rows.append([jobs, seconds, f"{r['done']}/{jobs}", r["slots"], f"{r['wall_s']:.1f}", f"{r['work_s']:.1f}",
                         f"{m['ideal_s']:.1f}", f"{m['efficiency']:.3f}", f"{m['efficiency_after_start']:.3f}",
                         f"{r['startup_s']:.1f}", f"{r.get('setup_s', float('nan')):.1f}",
                         f"{m['overhead_per_job_s']:.2f}",
                         f"{m['overhead_per_job_after_start_s']:.2f}"])
    headers = ["N jobs", "job s", "done", "slots", "wall s", "work s (sum)", "ideal wall s (work/slots)",
               "packing efficiency", "efficiency after first step", "time to first step s",
               "of which driver set-up s (until the first step is submitted)",
               "overhead slot-s/job", "overhead slot-s/job after first step"]
    print()
    print(table(headers, rows))
    fit = fit_overheads(zero_points)
    if fit is not None:
        fixed, per_job = fit
        print(f"\nfit over the zero-second grids: wall = {fixed:.1f} s fixed + N x {per_job:.2f} slot-s / slots "
              f"(marginal overhead per job {per_job:.2f} slot-seconds)")
        for jobs in (6, 32, 96):
            print(f"  modelled packing efficiency, {jobs} jobs of 60 s on {slots_seen} slots: "
                  f"{modelled_efficiency(fixed, per_job, jobs, 60.0, slots_seen):.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--grids", nargs="+", default=["2:0", "8:0", "16:0", "8:10", "6:60"])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--keep-dir", default=None, help="parent folder of the study folders (default: system temp)")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
