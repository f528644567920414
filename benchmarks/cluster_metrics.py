"""What the cluster simulation measures, from its files (:mod:`benchmarks.cluster_sim`).

Sources, each independent of the driver's own bookkeeping where it matters:
- the stand-ins' ledger (``sim_ledger.jsonl``: one line per start and end of a step body, with
  node and pid): what ran, where, how often, when;
- the driver's state files (``state/<step>.json``): when the driver launched each step;
- the MLflow store, read back through the tracking server: runs per run key;
- the MLflow server's access log (uvicorn): requests by method and status;
- the database and the artifact folder on disk: the store's size.

Departures: none (measurement only).
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

ACCESS_LINE = re.compile(r'"(GET|POST|PUT|PATCH|DELETE) (\S+) HTTP/[\d.]+" (\d{3})')


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p95": None, "max": None, "n": 0}
    ordered = sorted(values)
    return {"median": statistics.median(ordered),
            "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
            "max": ordered[-1], "n": len(ordered)}


def step_metrics(output: Path, events: list[dict], total_gpus: float) -> dict[str, Any]:
    """Completions per planned step, scheduling latency, packing of the logical GPUs."""
    durations = json.loads((output / "sim_durations.json").read_text())
    step_of = {info["ledger_key"]: step_id for step_id, info in durations["steps"].items()}
    planned = {step_id: info for step_id, info in durations["steps"].items()
               if info["kind"] != "record"}
    starts = [e for e in events if e["event"] == "start"]
    ends = [e for e in events if e["event"] == "end"]
    completions = Counter(step_of.get(e["step_id"], "?" + e["step_id"]) for e in ends)
    started = Counter(step_of.get(e["step_id"], "?" + e["step_id"]) for e in starts)
    states = {step_id: json.loads((output / "state" / f"{step_id}.json").read_text())
              for step_id in durations["steps"] if (output / "state" / f"{step_id}.json").exists()}
    latency, lag = [], []
    for step_id in planned:
        state = states.get(step_id) or {}
        mine = [e for e in starts if step_of.get(e["step_id"]) == step_id]
        done = [e for e in ends if step_of.get(e["step_id"]) == step_id]
        if mine and state.get("started_at"):
            latency.append(max(e["time"] for e in mine) - state["started_at"])
        if done and state.get("finished_at"):
            lag.append(state["finished_at"] - max(e["time"] for e in done))
    records = [state for step_id, state in states.items()
               if durations["steps"][step_id]["kind"] == "record"
               and state.get("started_at") and state.get("finished_at")]
    train_launches = sorted(state["started_at"] for step_id, state in states.items()
                            if durations["steps"][step_id]["kind"] == "train"
                            and state.get("started_at"))
    begun = {(e["step_id"], e["pid"]): e for e in starts}
    # a train body's time beyond its planned sleep: its training-metric logging to MLflow
    train_extra = [end["time"] - begun[(end["step_id"], end["pid"])]["time"] - end["seconds"]
                   for end in ends if end["kind"] == "train"
                   and (end["step_id"], end["pid"]) in begun]
    work = _gpu_seconds(starts, ends, step_of, planned)
    span = (max(e["time"] for e in ends) - min(e["time"] for e in starts)) if ends else 0.0
    return {
        "planned_steps": dict(Counter(info["kind"] for info in planned.values())),
        "steps_never_completed": sorted(s for s in planned if completions[s] == 0),
        "steps_completed_more_than_once": {s: n for s, n in completions.items() if n > 1},
        "unknown_ledger_keys": sorted(s for s in completions if s.startswith("?")),
        "starts_without_end": sum(started.values()) - sum(completions.values()),
        "states": dict(Counter(state.get("status") for state in states.values())),
        # launched = submitted to Ray by the driver; includes waiting in Ray's queue for a GPU
        "launch_to_body_start_s": _quantiles(latency),
        "body_end_to_driver_done_s": _quantiles(lag),
        # the record step: from the driver taking it up to its MLflow writes done
        "record_step_s": _quantiles([s["finished_at"] - s["started_at"] for s in records]),
        "record_steps_total_s": sum(s["finished_at"] - s["started_at"] for s in records),
        "train_launch_gaps_s": _quantiles([b - a for a, b in zip(train_launches,
                                                                 train_launches[1:])]),
        "train_body_beyond_plan_s": _quantiles(train_extra),
        "train_launch_span_s": (train_launches[-1] - train_launches[0]
                                if len(train_launches) > 1 else 0.0),
        "gpu_seconds_of_work": work, "work_span_s": span,
        "packing_efficiency": work / (total_gpus * span) if span else None,
        # GPU-slot seconds each step costs beyond its own work (Ray dispatch, worker start,
        # driver bookkeeping, MLflow calls, dependency hand-offs): the orchestration cost
        "overhead_gpu_slot_s_per_step": ((total_gpus * span - work) / len(planned)
                                         if planned and span else None),
        "plan": durations["plan"], "time_scale": durations["time_scale"],
        "plan_check": _plan_check(durations, ends, step_of, planned),
        "first_body_start": min((e["time"] for e in starts), default=None),
        "nodes_used": dict(Counter(e["node"] for e in ends)),
    }


def _plan_check(durations: dict, ends: list[dict], step_of: dict, planned: dict) -> dict:
    """The plan's GPU hours against what the run scheduled: the planned sleep of every step
    that completed (each once, as the stand-in recorded it) times its GPUs, over time_scale."""
    scale = durations["time_scale"]
    once: dict[str, float] = {}
    for end in ends:
        step_id = step_of.get(end["step_id"])
        if step_id in planned and step_id not in once:
            once[step_id] = end["seconds"] * planned[step_id]["num_gpus"]
    by_kind: dict[str, float] = {}
    for step_id, gpu_s in once.items():
        kind = planned[step_id]["kind"]
        by_kind[kind] = by_kind.get(kind, 0.0) + (gpu_s / scale / 3600 if scale else 0.0)
    scheduled = sum(by_kind.values())
    plan_hours = durations["plan"]["gpu_seconds"] / 3600
    return {"plan_gpu_hours": plan_hours, "scheduled_gpu_hours": scheduled,
            "scheduled_by_kind": by_kind,
            "relative_difference": (scheduled - plan_hours) / plan_hours if plan_hours else None}


def _gpu_seconds(starts: list[dict], ends: list[dict], step_of: dict, planned: dict) -> float:
    begun = {(e["step_id"], e["pid"]): e["time"] for e in starts}
    total = 0.0
    for end in ends:
        step_id = step_of.get(end["step_id"])
        if step_id in planned and (end["step_id"], end["pid"]) in begun:
            total += (end["time"] - begun[(end["step_id"], end["pid"])]) * planned[step_id]["num_gpus"]
    return total


def run_key_metrics(tracking_uri: str, cells: list) -> dict[str, Any]:
    """Runs per run key in the store against the planned cells."""
    from pipelines.mlflow_adapter import StudyTracker

    found = StudyTracker("paper", tracking_uri).run_ids_by_key()
    planned = {cell.run_key() for cell in cells}
    per_key = Counter(len(found.get(key, [])) for key in planned)
    return {"cells": len(cells), "run_keys_planned": len(planned),
            "runs_per_key": {str(k): v for k, v in sorted(per_key.items())},
            "lost": sorted(key for key in planned if not found.get(key)),
            "duplicated": sorted(key for key, ids in found.items() if len(ids) > 1),
            "unexpected": sorted(set(found) - planned)}


def access_log_metrics(log: Path, seconds: float) -> dict[str, Any]:
    """Requests by (method, route kind) and status from the MLflow server's access log."""
    requests: Counter = Counter()
    statuses: Counter = Counter()
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        match = ACCESS_LINE.search(line)
        if match:
            method, path, status = match.groups()
            route = path.split("?")[0].split("/api/2.0/")[-1]
            if route.startswith("mlflow-artifacts/artifacts/"):
                route = "mlflow-artifacts/artifacts/<path>"
            requests[f"{method} {route}"] += 1
            statuses[status] += 1
    total = sum(statuses.values())
    writes = sum(n for key, n in requests.items()
                 if not key.startswith("GET") and not key.endswith("/search"))
    return {"requests": total, "write_requests": writes,
            # 404s are expected: the tracker asks for the study's experiment before creating it
            "client_errors_4xx": sum(n for s, n in statuses.items() if s.startswith("4")),
            "server_errors_5xx": sum(n for s, n in statuses.items() if s.startswith("5")),
            "statuses": dict(statuses), "by_route": dict(requests.most_common(12)),
            "requests_per_s": total / seconds if seconds else None,
            "write_requests_per_s": writes / seconds if seconds else None}


def store_size(backend_uri: str, artifacts: Path) -> dict[str, Any]:
    files = [p for p in artifacts.rglob("*") if p.is_file()] if artifacts.exists() else []
    size: dict[str, Any] = {"artifact_files": len(files),
                            "artifact_mib": sum(p.stat().st_size for p in files) / 2**20}
    if backend_uri.startswith("sqlite:///"):
        size["database_mib"] = Path(backend_uri[len("sqlite:///"):]).stat().st_size / 2**20
    else:
        import psycopg2

        dsn = backend_uri.replace("+psycopg2", "")
        with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT pg_database_size(current_database())")
            size["database_mib"] = cursor.fetchone()[0] / 2**20
            for table in ("runs", "params", "tags", "metrics", "latest_metrics"):
                cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 - fixed names
                size[f"rows_{table}"] = cursor.fetchone()[0]
    return size
