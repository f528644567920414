"""MLflow calls that survive a transient outage, the message when they finally do not, and the
worker's batched training-metric sink (a helper of :mod:`pipelines.mlflow_adapter`).

Retries. Against a tracking server (``http(s)://``) MLflow's own client retries every request
on a refused or broken connection and on 429/500/502/503/504, with exponential backoff:
``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` (default 7) retries, sleeping 0, 2F, 4F, ... seconds
(``F`` = ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``, default 2; each sleep at most 120 s, plus up to
``MLFLOW_HTTP_REQUEST_BACKOFF_JITTER`` s), i.e. about 4 minutes in all by default: a server
restart costs the steps nothing. Adding our own loop on top would multiply that budget, so
:class:`RetryingClient` retries only what MLflow's client does not: a response cut off mid-body
(the server killed while answering) and SQLite's ``database is locked`` (its writers
serialise). After the last retry :func:`tracking_failure` says which server, what was being
done, and which variables set the budget.

The sink flushes every ``batch_size`` metrics (at most MLflow's 1000 per request) or when
``flush_every_s`` seconds have passed since its last flush, whichever comes first: a long
training shows its curve in the UI within seconds, and a short one (the cluster simulation's
stand-ins: 100 steps in about a second) costs one request instead of ten.

Departures from the paper: none (the authors log nothing structured).
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Callable

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

LOCKED_ATTEMPTS = 5
LOCKED = ("database is locked",)
# Two cells logging the same dataset at once: the server's check-then-insert of the dataset
# races and one request fails on the unique key (seen with 4 driver threads on PostgreSQL,
# 2026-12-03); the failed transaction left nothing, and again it finds the dataset there.
DATASET_RACE = ("duplicate key value violates unique constraint",
                "UNIQUE constraint failed: datasets")
# A response cut off mid-body (the server killed while answering): urllib3 retries a refused or
# reset connection, but the body is read after it returned, so MLflow's client raises at once
# ("Connection broken: IncompleteRead", seen when the cluster simulation SIGKILLed the server).
CUT_OFF = ("Connection broken", "IncompleteRead", "Connection aborted", "RemoteDisconnected",
           "ChunkedEncodingError")
BACKOFF_CAP_S = 120.0  # urllib3's cap on one backoff sleep


def is_server(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def retry_budget_s() -> float:
    """About how long MLflow's client retries one request before giving up (no jitter)."""
    retries = int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7"))
    factor = float(os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "2"))
    # urllib3 2.x: no sleep before the first retry, then factor * 2**(n - 1) after failure n
    return sum(min(BACKOFF_CAP_S, factor * 2 ** (n - 1)) for n in range(2, retries + 1))


def tracking_failure(error: BaseException, tracking_uri: str, what: str) -> str:
    """One clear line for a tracking call that failed (after its retries, when it had some)."""
    detail = f"{type(error).__name__}: {error}"[:1500]
    if not is_server(tracking_uri):
        return f"MLflow store {tracking_uri}: {what} failed: {detail}"
    if not unreachable(error):  # the server answered, with an error: not a transient outage
        return f"MLflow tracking server {tracking_uri}: {what} failed: {detail}"
    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    return (f"MLflow tracking server {tracking_uri}: {what} failed after {retries} retries with "
            f"backoff over about {retry_budget_s():.0f} s (MLFLOW_HTTP_REQUEST_MAX_RETRIES, "
            f"MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR set them; `unisd study run` again records it "
            f"once the server answers): {detail}")


def unreachable(error: BaseException) -> bool:
    """Whether MLflow's client gave up on the server (no answer, or 5xx) after its retries."""
    text = str(error)
    return (any(cut in text for cut in CUT_OFF) or "Max retries exceeded" in text
            or "Connection" in type(error).__name__
            or "ConnectionError" in text or re.search(r"error code 5\d\d", text) is not None)


def with_retries(action: Callable[[], Any], attempts: int = LOCKED_ATTEMPTS,
                 transient: tuple[str, ...] = LOCKED) -> Any:
    """``action()``, again after an error whose text holds one of ``transient`` (default:
    SQLite's ``database is locked``), with backoff; anything else (a server's outage is retried
    inside MLflow's client already) is raised at once."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as error:
            if attempt == attempts - 1 or not any(text in str(error) for text in transient):
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


class RetryingClient:
    """An ``MlflowClient`` whose every call is sent again (up to ``attempts`` times, backoff
    0.2 s doubling) after an error MLflow's client does not retry itself: a response cut off
    mid-body, SQLite's ``database is locked``. What a repeated call does: params, tags,
    artifacts and run status overwrite themselves; a metric may get a second point at the same
    step; a repeated ``create_run`` leaves a twin the adapter deletes."""

    def __init__(self, client: MlflowClient, attempts: int = LOCKED_ATTEMPTS):
        self._client, self._attempts = client, attempts

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._client, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            return with_retries(lambda: value(*args, **kwargs), self._attempts,
                                (*LOCKED, *CUT_OFF))
        return call


class MlflowMetricsSink:
    """``MetricsSink`` that logs training step metrics to one run, in batches (worker side).

    A resumed training replays the steps between its checkpoint and the crash; those steps are
    already in the run (the resume is exact, so the values are the same), and logging them again
    would leave two points per step in the metric history. So at its first ``log`` the sink reads
    how far the run's history of that first metric goes and drops the steps up to there.
    """

    def __init__(self, tracking_uri: str, run_id: str, *, batch_size: int = 1000,
                 flush_every_s: float = 10.0, prefix: str = "train/"):
        self.client = RetryingClient(MlflowClient(tracking_uri=tracking_uri))
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.batch_size = min(batch_size, 1000)
        self.flush_every_s = flush_every_s
        self.prefix = prefix
        self.pending: list[Metric] = []
        self.logged_through: int | None = None  # last step already in the run, read at first log
        self.flushed_at = time.monotonic()

    def log(self, step: int, values: dict[str, float]) -> None:
        if self.logged_through is None:
            history = self._call("reading the training-metric history", lambda: (
                self.client.get_metric_history(self.run_id,
                                               self.prefix + next(iter(values), ""))))
            self.logged_through = max((metric.step for metric in history), default=0)
        if step <= self.logged_through:
            return
        now = int(time.time() * 1000)
        self.pending.extend(Metric(self.prefix + name, float(value), now, int(step))
                            for name, value in values.items())
        if (len(self.pending) >= self.batch_size
                or time.monotonic() - self.flushed_at >= self.flush_every_s):
            self.flush()

    def flush(self) -> None:
        while self.pending:
            batch = self.pending[:1000]
            self._call("logging training metrics",
                       lambda: self.client.log_batch(self.run_id, metrics=batch))
            self.pending = self.pending[len(batch):]
        self.flushed_at = time.monotonic()

    def close(self) -> None:
        self.flush()

    def _call(self, what: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except Exception as error:
            raise RuntimeError(tracking_failure(error, self.tracking_uri, what)) from error
