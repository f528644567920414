"""Faults for the cluster simulation (issue 17, item 3), each on a thread beside the running job.

- a worker node lost (:func:`kill_node_later`): node1's process group (raylet, workers, agents)
  SIGKILLed at the first moment, ``after_s`` or more after the first step started, when a train
  body runs there (train stand-ins that start on node1 hold there until the kill, so a short body
  cannot slip between two looks at the ledger);
- the MLflow server restarted (:func:`restart_mlflow_later`): SIGKILLed (a crash, so requests in
  flight break too), kept down at least ``down_s`` and until the driver's calls met the outage
  (a retry in its log, or a record step started meanwhile; at most 120 s), then started again
  on the same port, database and artifact folder;
- the driver killed (:func:`kill_driver_later`): the driver process of the Ray job SIGKILLed
  (no chance to clean up: state files, MLflow runs and Ray tasks as a crash leaves them); the
  simulation then submits the same driver again.

The counts (:func:`node_fault_counts`, :func:`mlflow_fault_counts`, :func:`driver_fault_counts`)
come from the stand-ins' ledger, the step state files and the logs, not from the driver's own
summary. Departures from a real cluster: all on one machine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections import Counter
from pathlib import Path

from benchmarks import cluster_services as services
from benchmarks import cluster_standins as standins

HOLD_MAX_S = 300.0  # the longest a train stand-in holds on the node to be killed
RETRY_LINE = re.compile(r"Retrying \(.*Retry\(total=")


def ledger(output: Path) -> list[dict]:
    path = output / standins.LEDGER_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _after_first_step(output: Path, after_s: float) -> None:
    path = output / standins.LEDGER_FILE
    services.wait_for(lambda: path.exists() and path.stat().st_size > 0, 1800, "a step")
    time.sleep(after_s)


def _in_thread(work) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


# ---- a node lost -----------------------------------------------------------------------------

def kill_node_later(started: dict, output: Path, after_s: float, sink: dict) -> threading.Thread:
    node = started["ray"].nodes[0]
    (output / standins.HOLD_FILE).write_text(json.dumps({"node": node.name, "max_s": HOLD_MAX_S}))

    def work() -> None:
        _after_first_step(output, after_s)
        deadline = time.monotonic() + HOLD_MAX_S
        while time.monotonic() < deadline and not any(
                step.startswith("train-") for step in _running_on(output, node.name)):
            time.sleep(0.05)
        sink["killed_at"] = time.time()
        node.stop(first=signal.SIGKILL, grace_s=5)
    return _in_thread(work)


def _running_on(output: Path, node: str) -> set[str]:
    events = ledger(output)
    begun = {(e["step_id"], e["pid"]) for e in events if e["event"] == "start" and e["node"] == node}
    ended = {(e["step_id"], e["pid"]) for e in events if e["event"] == "end"}
    return {step for step, _ in begun - ended}


def node_fault_counts(fault: dict, events: list[dict]) -> dict:
    """Step bodies killed with node1 (a start there with no end from that process), what became
    of them; bodies that completed more than once (recomputed)."""
    killed_at = fault["killed_at"]
    ended = {(e["step_id"], e["pid"]) for e in events if e["event"] == "end"}
    killed = sorted({e["step_id"] for e in events if e["event"] == "start"
                     and e["node"] == "node1" and (e["step_id"], e["pid"]) not in ended})
    finished_elsewhere = {e["step_id"] for e in events if e["event"] == "end"
                          and e["time"] > killed_at and e["node"] != "node1"}
    ends = Counter(e["step_id"] for e in events if e["event"] == "end")
    return {"killed_at": killed_at, "steps_killed_on_node1": killed,
            "of_which_completed_elsewhere": [s for s in killed if s in finished_elsewhere],
            "not_completed_elsewhere": [s for s in killed if s not in finished_elsewhere],
            "recomputed": {s: n for s, n in ends.items() if n > 1},
            "node1_ends_after_kill": sum(e["event"] == "end" and e["node"] == "node1"
                                         and e["time"] > killed_at + 1 for e in events)}


# ---- the MLflow server restarted ---------------------------------------------------------------

def restart_mlflow_later(started: dict, work_dir: Path, output: Path, after_s: float,
                         down_s: float, sink: dict) -> threading.Thread:
    def work() -> None:
        _after_first_step(output, after_s)
        port = int(started["tracking_uri"].rsplit(":", 1)[1])
        sink["killed_at"] = time.time()
        started["mlflow"].stop(first=signal.SIGKILL, grace_s=5)
        deadline = time.monotonic() + max(down_s, 120)  # nothing left to call: give up
        time.sleep(down_s)
        met = _OutageMet(work_dir / "job.log", output, sink["killed_at"])
        while time.monotonic() < deadline and not met():
            time.sleep(0.2)
        sink["restarting_at"] = time.time()
        started["mlflow"], _ = services.start_mlflow(
            started["backend_uri"], work_dir / "artifacts", work_dir / "mlflow.log", port=port)
        sink["back_at"] = time.time()
    return _in_thread(work)


class _OutageMet:
    """Whether the driver's calls met the outage: a retry line in its job log (read on from
    where the last look stopped), or a record step started since the kill."""

    def __init__(self, job_log: Path, output: Path, since: float):
        self.job_log, self.output, self.since, self.offset = job_log, output, since, 0

    def __call__(self) -> bool:
        if self.job_log.exists():
            with self.job_log.open("rb") as handle:
                handle.seek(self.offset)
                fresh = handle.read().decode("utf-8", errors="replace")
            cut = fresh.rfind("\n") + 1  # whole lines only; the rest is read next time
            self.offset += len(fresh[:cut].encode("utf-8", errors="replace"))
            if RETRY_LINE.search(fresh[:cut]):
                return True
        for path in (self.output / "state").glob("record-*.json"):
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # being replaced
            if (state.get("started_at") or 0) > self.since:
                return True
        return False


def mlflow_fault_counts(fault: dict, output: Path, job_logs: list[Path]) -> dict:
    """Requests retried by MLflow's client (urllib3's warnings, in the driver's job log and the
    steps' logs), and steps the runner had to retry or that failed."""
    driver_retries = sum(len(RETRY_LINE.findall(path.read_text(errors="replace")))
                         for path in job_logs if path.exists())
    step_retries = Counter()
    for log in (output / "steps").glob("*/log.txt"):
        found = len(RETRY_LINE.findall(log.read_text(errors="replace")))
        if found:
            step_retries[log.parent.name.split("-")[0]] += found
    states = _states(output)
    return {**{k: fault.get(k) for k in ("killed_at", "restarting_at", "back_at")},
            "down_s": (fault["back_at"] - fault["killed_at"]) if "back_at" in fault else None,
            "driver_requests_retried": driver_retries,
            "worker_requests_retried_by_kind": dict(step_retries),
            # the runner's own retries (a failed attempt: "attempt" and "error"); Ray's restarts
            # after a lost worker are marked retried_by: ray (a node fault, not this one), and
            # a resubmitted driver's note of an interrupted step has "status" instead
            "steps_retried_by_runner": sorted(s["step_id"] for s in states if any(
                "attempt" in entry and "retried_by" not in entry
                for entry in s.get("history") or [])),
            "steps_restarted_by_ray": sorted(s["step_id"] for s in states if any(
                entry.get("retried_by") == "ray" for entry in s.get("history") or [])),
            "steps_failed": sorted(s["step_id"] for s in states if s.get("status") == "failed")}


def _states(output: Path) -> list[dict]:
    found = []
    for path in (output / "state").glob("*.json"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return found


# ---- the driver killed -------------------------------------------------------------------------

def kill_driver_later(output: Path, after_s: float, sink: dict) -> threading.Thread:
    """SIGKILL the driver (its pid from ``driver.json``) ``after_s`` after the first step."""
    def work() -> None:
        _after_first_step(output, after_s)
        pid = json.loads((output / "driver.json").read_text())["pid"]
        sink["states_at_kill"] = dict(Counter(s.get("status") for s in _states(output)))
        sink["ledger_ends_at_kill"] = sum(e["event"] == "end" for e in ledger(output))
        sink["killed_at"] = time.time()
        os.kill(pid, signal.SIGKILL)
        sink["pid"] = pid
    return _in_thread(work)


def driver_fault_counts(fault: dict, events: list[dict], durations: dict,
                        second_driver: dict | None) -> dict:
    """What the resubmitted driver skipped and recomputed (from the ledger, not the driver)."""
    step_of = {info["ledger_key"]: step_id for step_id, info in durations["steps"].items()}
    killed_at = fault["killed_at"]
    ends = Counter(step_of.get(e["step_id"], e["step_id"]) for e in events if e["event"] == "end")
    ended = {(e["step_id"], e["pid"]) for e in events if e["event"] == "end"}
    cut = sorted({step_of.get(e["step_id"], e["step_id"]) for e in events
                  if e["event"] == "start" and e["time"] < killed_at
                  and (e["step_id"], e["pid"]) not in ended})
    before = {step_of.get(e["step_id"], e["step_id"]) for e in events
              if e["event"] == "end" and e["time"] < killed_at}
    return {"killed_at": killed_at, "states_at_kill": fault.get("states_at_kill"),
            "bodies_completed_before_kill": len(before),
            "bodies_cut_by_the_kill": cut,
            "recomputed": {s: n for s, n in ends.items() if n > 1},
            "second_driver_executed": (second_driver or {}).get("executed")}
