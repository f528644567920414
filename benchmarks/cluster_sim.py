"""Cluster simulation (issue 17): a paper-grid fraction on a multi-node Ray cluster.

Usage: ``python benchmarks/cluster_sim.py [--fraction 1/16|1/4|1] [--nodes 2] [--gpus-per-node 8]
[--time-scale 1e-4] [--max-cells N] [--item-cap N] [--backend auto|postgres|sqlite]
[--kill-node-after S] [--restart-mlflow-after S [--mlflow-down-s D]] [--kill-driver-after S]
[--profile] [--no-report] [--out metrics.json] [--keep DIR]``

On loopback it starts PostgreSQL (else SQLite), an MLflow server on it with a shared artifact
folder, a Ray head and ``--nodes`` worker nodes advertising logical GPUs
(:mod:`benchmarks.cluster_services`); expands ``studies/paper.yaml``, keeps a deterministic
fraction of its cells and submits the real driver (``pipelines.runner.run_study``, real graph, run
keys, state and MLflow logging) as a Ray job with ``ray job submit``, the library bodies replaced
by the sleeping stand-ins of :mod:`benchmarks.cluster_standins`. Then it measures and prints one
JSON object (also written to ``--out``):

- ``submit_to_first_step_s``: from calling ``ray job submit`` to the first stand-in running;
- driver CPU seconds and peak RSS (``getrusage`` in the driver process itself);
- per-step scheduling latency: stand-in start minus the driver's launch time of the step
  (median, p95, max), and the driver's end-of-step lag (state finish minus stand-in end);
- packing efficiency of the logical GPUs: GPU-seconds of stand-in work / (GPUs x span from the
  first stand-in start to the last end);
- MLflow: requests by route and status from the server's access log, 4xx and 5xx separately
  (failed record steps show as failed cells of the driver), requests per second over the job;
- store size: database (and, on PostgreSQL, its row counts) plus the artifact folder;
- ``unisd report`` over the resulting store (plots on, not attached; the study folder given):
  wall time and peak RSS (``wait4``);
- correctness: runs per run key (must be exactly 1), lost and duplicated cells, stand-in
  completions per planned step (each exactly once without faults), the plan's job counts
  (``ablations.plan``) against what ran;
- faults (:mod:`benchmarks.cluster_faults`, counted under ``fault``): ``--kill-node-after S``
  SIGKILLs node1's processes while a train body runs there (bodies that died, completed
  elsewhere, completed twice); ``--restart-mlflow-after S`` SIGKILLs the tracking server and
  starts it again (requests MLflow's client retried, steps the runner retried or that failed);
  ``--kill-driver-after S`` SIGKILLs the driver and submits it again (bodies cut, completed
  twice, what the second driver ran). Runs per run key are read back in every case;
- ``--profile``: cProfile of the driver's own thread (``driver.prof``, ``driver_profile.txt``
  in the study folder; keep it with ``--keep``).

Departures from a real cluster: one machine (the nodes share its 2 cores, disk and memory); the
GPUs are logical; step bodies sleep; evaluation items can be capped (``--item-cap``) to keep the
store within this machine's disk and time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import cluster_faults as faults  # noqa: E402
from benchmarks import cluster_services as services  # noqa: E402
from benchmarks import cluster_standins as standins  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "paper.yaml"
STUDY_NAME = "paper"


# ---- inside the Ray job: the driver -----------------------------------------------------------

def run_driver(args: argparse.Namespace) -> int:
    """The real driver with stand-in bodies; writes ``driver_metrics.json`` next to the study."""
    from pipelines.cells import load_cells
    from pipelines.job import JobFunctions
    from pipelines.runner import run_study

    output = Path(args.output_dir)
    # urllib3 (under MLflow's client) says "Retrying (...)" for each retried request, but only to
    # its own logger, which has a NullHandler: send it to the job log, where the faults count it
    retries = logging.getLogger("urllib3.connectionpool")
    retries.addHandler(logging.StreamHandler(sys.stderr))
    retries.setLevel(logging.WARNING)
    functions = JobFunctions(load_records=standins.standin_records,
                             prepare_caches=standins.standin_prepare,
                             train=standins.standin_train, evaluate=standins.standin_evaluate)
    started = time.time()
    profiler = None
    if args.profile:  # the driver's own thread only (cProfile does not follow other threads)
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    outcome = run_study(load_cells(output / "cells.json"), study_name=STUDY_NAME,
                        output_dir=output, tracking_uri=args.tracking_uri, ray_address="auto",
                        functions=functions, progress=False)
    if profiler is not None:
        profiler.disable()
        _write_profile(profiler, output)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    metrics = {"driver_wall_s": time.time() - started,
               "driver_cpu_s": usage.ru_utime + usage.ru_stime,
               "driver_peak_rss_mib": usage.ru_maxrss / 1024, "executed": outcome.executed,
               "summary": outcome.summary, "ok": outcome.ok,
               "failed_cells": {name: cell.reason[:300] for name, cell in outcome.cells.items()
                                if cell.status != "done"}}
    (output / "driver_metrics.json").write_text(json.dumps(metrics, indent=1))
    print(f"driver done: ok={outcome.ok} executed={outcome.executed}")
    return 0 if outcome.ok else 1


def _write_profile(profiler, output: Path) -> None:
    """``driver.prof`` (pstats) and the top functions by cumulative time as text."""
    import io
    import pstats

    profiler.dump_stats(str(output / "driver.prof"))
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(25)
    (output / "driver_profile.txt").write_text(text.getvalue())


# ---- outside: set up, submit, measure ----------------------------------------------------------

def plan_study(output: Path, fraction: str, max_cells: int | None, time_scale: float) -> list:
    from ablations.grid import expand_grid
    from ablations.study import load_study
    from pipelines.cells import save_cells

    cells = standins.select_cells(expand_grid(load_study(STUDY)), fraction, max_cells)
    output.mkdir(parents=True, exist_ok=True)
    save_cells(cells, output / "cells.json")
    durations = standins.step_durations(cells, time_scale)
    (output / standins.DURATIONS_FILE).write_text(json.dumps(durations))
    return cells


def write_hub_cache(folder: Path, cells: list) -> None:
    """config.json of each model in a local hub cache layout, as a cluster's nodes would have:
    the workers' offline model lookups (family tags, base-model checks) then succeed."""
    families = {"qwen2": "qwen2", "llama": "llama", "gemma3": "gemma3_text"}
    from ablations.costs import load_cost_table

    table = load_cost_table()
    for model in sorted({cell.model for cell in cells}):
        repo = folder / "hub" / f"models--{model.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text("0" * 40)
        snapshot = repo / "snapshots" / ("0" * 40)
        snapshot.mkdir(parents=True, exist_ok=True)
        model_type = families[table.model_family(model)]
        (snapshot / "config.json").write_text(json.dumps({"model_type": model_type}))


def stop_services(started: dict) -> None:
    """Stop every started service, side by side (a raylet drains for up to 10 s)."""
    running = [started[name] for name in ("ray", "mlflow", "postgres") if name in started]
    with ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:
        list(pool.map(lambda service: service.stop(), running))


def start_services(work: Path, args: argparse.Namespace, output: Path, started: dict) -> None:
    """Fills ``started`` as services come up (so a failure can stop those already running)."""
    started.update(backend="sqlite", backend_note="")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT),
           "HF_HOME": str(work / "hf"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "UNISD_SIM_OUTPUT": str(output), "UNISD_SIM_ITEM_CAP": str(args.item_cap or 0)}
    env.pop("RAY_ADDRESS", None)
    # Ray's nodes come up while the database and the tracking server do (both take ~10-30 s)
    with ThreadPoolExecutor(max_workers=1) as pool:
        ray_starting = pool.submit(services.start_ray, work / "ray", env, nodes=args.nodes,
                                   gpus_per_node=args.gpus_per_node)
        try:
            _start_tracking(work, args, started)
        finally:  # a failed Ray start raises here (it stopped its own processes)
            started["ray"] = ray_starting.result()
    started["env"] = env


def _start_tracking(work: Path, args: argparse.Namespace, started: dict) -> None:
    reason = None if args.backend == "sqlite" else services.postgres_unavailable()
    if args.backend == "postgres" and reason:
        raise SystemExit(f"--backend postgres: {reason}")
    if args.backend != "sqlite" and reason is None:
        started["postgres"], backend_uri = services.start_postgres()
        started["backend"] = "postgresql"
    else:
        started["backend_note"] = reason or "SQLite requested"
        backend_uri = f"sqlite:///{work / 'mlflow.db'}"
    started["backend_uri"] = backend_uri
    started["mlflow"], started["tracking_uri"] = services.start_mlflow(
        backend_uri, work / "artifacts", work / "mlflow.log")


def submit_driver(started: dict, output: Path, log: Path) -> tuple[int, float]:
    """``ray job submit`` of the driver; -> (exit status, submit time)."""
    entrypoint = (f"cd {ROOT} && {sys.executable} benchmarks/cluster_sim.py --role driver "
                  f"--output-dir {output} --tracking-uri {started['tracking_uri']}"
                  + (" --profile" if started.get("profile") else ""))
    submitted_at = time.time()
    with log.open("w") as stream:
        done = subprocess.run([services._ray(), "job", "submit", "--address",
                               started["ray"].dashboard, "--", "bash", "-c", entrypoint],
                              env=started["env"], stdout=stream, stderr=subprocess.STDOUT)
    return done.returncode, submitted_at


def run_report(started: dict, work: Path) -> dict:
    """``unisd report`` over the store as a user runs it; wall time and peak RSS via wait4."""
    unisd = str(Path(sys.executable).parent / "unisd")
    command = [unisd, "report", str(STUDY), "--tracking-uri", started["tracking_uri"], "--out",
               str(work / "report"), "--no-attach", "--output-dir", str(work / "study")]
    began = time.time()
    with (work / "report.log").open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env=started["env"])
        _, status, usage = os.wait4(process.pid, 0)
    return {"report_s": time.time() - began, "report_peak_rss_mib": usage.ru_maxrss / 1024,
            "report_exit": os.waitstatus_to_exitcode(status)}


def simulate(args: argparse.Namespace) -> dict:
    """Start everything, run the study, measure, stop everything; -> the metrics."""
    from benchmarks import cluster_metrics as measure

    work = Path(args.keep or tempfile.mkdtemp(prefix="unisd-cluster-"))
    work.mkdir(parents=True, exist_ok=True)
    output = work / "study"
    cells = plan_study(output, args.fraction, args.max_cells, args.time_scale)
    write_hub_cache(work / "hf", cells)
    began = time.time()
    started: dict = {"profile": args.profile}
    try:
        start_services(work, args, output, started)
    except BaseException:
        stop_services(started)
        raise
    metrics: dict = {"fraction": args.fraction, "cells": len(cells), "nodes": args.nodes,
                     "gpus_per_node": args.gpus_per_node, "time_scale": args.time_scale,
                     "item_cap": args.item_cap, "backend": started["backend"],
                     "backend_note": started["backend_note"], "work_dir": str(work),
                     "services_start_s": time.time() - began}
    fault: dict = {}
    threads = _start_faults(args, started, work, output, fault)
    try:
        status, submitted_at = submit_driver(started, output, work / "job.log")
        if "driver" in fault:  # killed: submit the same driver again, as a user would
            threads["driver"].join(timeout=60)
            first_exit = status
            status, _ = submit_driver(started, output, work / "job2.log")
            fault["driver"]["first_job_exit"] = first_exit
        finished_at = time.time()
        for thread in threads.values():
            thread.join(timeout=600)  # a restart under way finishes before the services stop
        events = faults.ledger(output)
        steps = measure.step_metrics(output, events, args.nodes * args.gpus_per_node)
        driver_file = output / "driver_metrics.json"
        driver = json.loads(driver_file.read_text()) if driver_file.exists() else None
        metrics.update(
            job_exit=status, job_wall_s=finished_at - submitted_at,
            submit_to_first_step_s=(steps["first_body_start"] - submitted_at
                                    if steps["first_body_start"] else None),
            driver=driver, steps=steps, runs=measure.run_key_metrics(started["tracking_uri"], cells),
            mlflow=measure.access_log_metrics(work / "mlflow.log", finished_at - submitted_at),
            store=measure.store_size(started["backend_uri"], work / "artifacts"))
        metrics["fault"] = _fault_metrics(fault, events, output, work, driver)
        if args.report:
            metrics["report"] = run_report(started, work)
    finally:
        stop_services(started)
    return metrics


def _start_faults(args: argparse.Namespace, started: dict, work: Path, output: Path,
                  fault: dict) -> dict:
    """The fault threads asked for (each fills its own part of ``fault``)."""
    threads = {}
    if args.kill_node_after is not None:
        fault["node"] = {}
        threads["node"] = faults.kill_node_later(started, output, args.kill_node_after,
                                                 fault["node"])
    if args.restart_mlflow_after is not None:
        fault["mlflow"] = {}
        threads["mlflow"] = faults.restart_mlflow_later(
            started, work, output, args.restart_mlflow_after, args.mlflow_down_s, fault["mlflow"])
    if args.kill_driver_after is not None:
        fault["driver"] = {}
        threads["driver"] = faults.kill_driver_later(output, args.kill_driver_after,
                                                     fault["driver"])
    return threads


def _fault_metrics(fault: dict, events: list[dict], output: Path, work: Path,
                   driver: dict | None) -> dict:
    counted = {}
    if fault.get("node", {}).get("killed_at"):
        counted["node"] = faults.node_fault_counts(fault["node"], events)
    if fault.get("mlflow", {}).get("killed_at"):
        counted["mlflow"] = faults.mlflow_fault_counts(fault["mlflow"], output,
                                                       [work / "job.log", work / "job2.log"])
    if fault.get("driver", {}).get("killed_at"):
        durations = json.loads((output / standins.DURATIONS_FILE).read_text())
        counted["driver"] = {**faults.driver_fault_counts(fault["driver"], events, durations,
                                                          driver),
                             "first_job_exit": fault["driver"].get("first_job_exit")}
    return counted


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=("simulate", "driver"), default="simulate",
                        help=argparse.SUPPRESS)
    parser.add_argument("--output-dir", help=argparse.SUPPRESS)
    parser.add_argument("--tracking-uri", help=argparse.SUPPRESS)
    parser.add_argument("--fraction", choices=sorted(standins.FRACTIONS), default="1/16")
    parser.add_argument("--max-cells", type=int, default=None,
                        help="keep only the first N cells of the fraction (name order)")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--time-scale", type=float, default=1e-3,
                        help="stand-in seconds per planned GPU second (costs.yaml)")
    parser.add_argument("--item-cap", type=int, default=None,
                        help="evaluation items per benchmark at most (default: full eval sizes)")
    parser.add_argument("--backend", choices=("auto", "postgres", "sqlite"), default="auto")
    parser.add_argument("--kill-node-after", type=float, default=None,
                        help="SIGKILL node1's processes once a train body runs there, at least "
                             "this many seconds after the first step started")
    parser.add_argument("--restart-mlflow-after", type=float, default=None,
                        help="SIGKILL the MLflow server this many seconds after the first step "
                             "started, and start it again (same port and store) after "
                             "--mlflow-down-s and once a record step has started meanwhile")
    parser.add_argument("--mlflow-down-s", type=float, default=10.0)
    parser.add_argument("--kill-driver-after", type=float, default=None,
                        help="SIGKILL the driver this many seconds after the first step "
                             "started, then submit it again")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the driver's thread (driver.prof, driver_profile.txt)")
    parser.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                        help="time `unisd report` over the resulting store")
    parser.add_argument("--out", default=None, help="write the metrics JSON here too")
    parser.add_argument("--keep", default=None,
                        help="work folder to use and keep (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.gpus_per_node < 1 or args.time_scale < 0:
        parser.error("--nodes and --gpus-per-node must be >= 1, --time-scale >= 0")
    if (args.max_cells is not None and args.max_cells < 1) or (
            args.item_cap is not None and args.item_cap < 1):
        parser.error("--max-cells and --item-cap must be >= 1")
    if args.kill_node_after is not None and args.nodes < 2:
        parser.error("--kill-node-after needs --nodes >= 2 (the steps must go somewhere)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "driver":
        return run_driver(args)
    metrics = simulate(args)
    if not args.keep:  # the store and artifacts can be large; --keep DIR keeps them
        import shutil

        shutil.rmtree(metrics["work_dir"], ignore_errors=True)
    text = json.dumps(metrics, indent=1, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    runs = metrics.get("runs", {})
    return 0 if metrics.get("job_exit") == 0 and not runs.get("lost") and not runs.get(
        "duplicated") else 1


if __name__ == "__main__":
    sys.exit(main())
