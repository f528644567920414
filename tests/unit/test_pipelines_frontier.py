"""The driver's frontier and its tracking pool (issue 17's fix of the driver's per-step cost).

The frontier looks only at steps whose inputs changed; its truth is the full scan the driver used
before (every pending step, every turn), replayed over random graphs and random outcomes. The
pool must hand results back on the caller's thread, start tasks in order, and cancel what has
not started when the driver stops.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from pipelines.cells import Resources
from pipelines.frontier import Frontier
from pipelines.graph import Graph, Step
from pipelines.recording import TrackingPool, default_threads
from pipelines.state import StepState


def random_graph(rng: random.Random, size: int) -> Graph:
    steps = {}
    for index in range(size):
        earlier = list(steps)
        deps = rng.sample(earlier, k=min(len(earlier), rng.choice([0, 1, 1, 2, 3])))
        step_id = f"s{index:03d}"
        steps[step_id] = Step(step_id, "train", step_id, step_id, deps, [], Resources(), {})
    return Graph(steps=steps, cells={}, record_step_of={})


def full_scan_ready(graph: Graph, states: dict[str, StepState]) -> set[str]:
    return {step_id for step_id, step in graph.steps.items()
            if states[step_id].status == "pending"
            and all(states[dep].status == "done" for dep in step.deps)}


def full_scan_blocked(graph: Graph, states: dict[str, StepState]) -> set[str]:
    return {step_id for step_id, step in graph.steps.items()
            if states[step_id].status == "pending"
            and any(states[dep].status in ("failed", "skipped") for dep in step.deps)}


@pytest.mark.parametrize("seed", range(25))
def test_frontier_finds_what_the_full_scan_finds(seed: int) -> None:
    rng = random.Random(seed)
    graph = random_graph(rng, rng.randint(5, 60))
    states = {step_id: StepState(step_id, "train", step_id, step_id) for step_id in graph.steps}
    for step_id in rng.sample(list(states), k=len(states) // 5):  # done in an earlier run
        states[step_id].status = "done"
    frontier = Frontier(graph)
    running: list[str] = []
    for _ in range(10 * len(states)):
        looked: set[str] = set()
        while blocked := frontier.blocked(states, looked):
            for step_id, blocker in blocked:
                assert states[blocker].status in ("failed", "skipped")
                states[step_id].status = "skipped"
                frontier.finished(step_id)
        assert full_scan_blocked(graph, states) == set()
        expected = full_scan_ready(graph, states)
        ready = frontier.ready(states)
        assert ready == sorted(ready) and set(ready) == expected  # graph order, nothing missed
        for step_id in ready:
            states[step_id].status = "running"
        running += ready
        if not running:
            break
        finished = running.pop(rng.randrange(len(running)))
        outcome = rng.choice(["done", "done", "done", "failed", "retry"])
        if outcome == "retry":
            states[finished].status = "pending"
            frontier.again(finished)
        else:
            states[finished].status = outcome
            frontier.finished(finished)
    assert not running and all(state.status in ("done", "failed", "skipped")
                               for state in states.values())


def test_pool_hands_results_back_on_the_callers_thread_in_order() -> None:
    pool = TrackingPool(1)
    seen: list[tuple[int, int]] = []
    first = pool.submit(lambda: time.sleep(0.05) or 1,
                        on_done=lambda f: seen.append((f.result(), threading.get_ident())))
    # a later task may wait on an earlier one: it starts after it, so one thread is enough
    pool.submit(lambda: first.result() + 1,
                on_done=lambda f: seen.append((f.result(), threading.get_ident())))
    while pool.busy:
        pool.collect(1.0)
    pool.close()
    assert seen == [(1, threading.get_ident()), (2, threading.get_ident())]


def test_records_do_not_queue_behind_run_creations() -> None:
    pool = TrackingPool(2)  # 2 record threads, 1 making runs
    release = threading.Event()
    runs = [pool.submit(release.wait, 30, lane="runs") for _ in range(5)]
    record = pool.submit(lambda: "recorded")  # the records lane is free
    assert record.result(timeout=30) == "recorded"
    assert not any(run.done() for run in runs)
    release.set()
    while pool.busy:
        pool.collect(1.0)
    pool.close()


def test_pool_close_without_waiting_cancels_what_has_not_started() -> None:
    pool = TrackingPool(1)
    started, release = threading.Event(), threading.Event()
    outcomes: list[str] = []

    def record(future) -> None:
        outcomes.append("cancelled" if future.cancelled() else f"ran {future.result()}")
    pool.submit(lambda: started.set() or (release.wait(30) and "first"), on_done=record)
    pool.submit(lambda: "second", on_done=record)
    assert started.wait(30)  # the first task holds the only thread
    pool.close(wait=False)
    release.set()
    deadline = time.monotonic() + 30
    while pool.busy and time.monotonic() < deadline:
        pool.collect(0.5)
    assert sorted(outcomes) == ["cancelled", "ran first"]


def test_tracking_threads_default_and_bad_value(monkeypatch) -> None:
    monkeypatch.delenv("UNISD_TRACKING_THREADS", raising=False)
    assert default_threads("sqlite:////tmp/x/mlflow.db") == 1  # SQLite's writers serialise
    assert default_threads("http://127.0.0.1:5000") == 4
    monkeypatch.setenv("UNISD_TRACKING_THREADS", "zero")
    with pytest.raises(ValueError, match="UNISD_TRACKING_THREADS='zero'"):
        default_threads("http://127.0.0.1:5000")
