"""What the MLflow calls retry themselves, and what a final failure says (pipelines.mlflow_calls).

The server-side behaviour (a real server SIGKILLed and restarted) is in
tests/integration/test_mlflow_restart.py; here the pure parts: the retry budget against its
enumeration, which errors are retried, and which message a failure gets.
"""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException

from pipelines.mlflow_calls import (DATASET_RACE, LOCKED, RetryingClient, retry_budget_s,
                                    tracking_failure, with_retries)


@pytest.mark.parametrize(("retries", "factor", "sleeps"), [
    ("7", "2", [0, 4, 8, 16, 32, 64, 120]),  # MLflow's defaults: the last sleep is capped
    ("2", "1", [0, 2]),
    ("1", "5", [0]),
])
def test_retry_budget_is_the_sum_of_urllib3_sleeps(monkeypatch, retries, factor, sleeps):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", retries)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", factor)
    assert retry_budget_s() == sum(sleeps)


def failing(times: int, message: str):
    calls = []

    def action():
        calls.append(1)
        if len(calls) <= times:
            raise MlflowException(message)
        return len(calls)
    return action, calls


def test_with_retries_retries_only_the_named_transient_errors():
    action, calls = failing(2, "(sqlite3.OperationalError) database is locked")
    assert with_retries(action) == 3
    action, calls = failing(1, 'duplicate key value violates unique constraint "dataset_pk"')
    with pytest.raises(MlflowException):
        with_retries(action)  # not named: raised at once
    assert len(calls) == 1
    action, calls = failing(1, 'duplicate key value violates unique constraint "dataset_pk"')
    assert with_retries(action, transient=(*LOCKED, *DATASET_RACE)) == 2
    action, calls = failing(10, "database is locked")
    with pytest.raises(MlflowException):
        with_retries(action, attempts=3)
    assert len(calls) == 3


def test_failure_message_tells_an_outage_from_an_answered_error(monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", raising=False)
    uri = "http://127.0.0.1:5999"
    outage = MlflowException(f"API request to {uri}/api/2.0/mlflow/runs/create failed with "
                             "exception HTTPConnectionPool(host='127.0.0.1', port=5999): Max "
                             "retries exceeded with url")
    message = tracking_failure(outage, uri, "creating the cell's run")
    assert message.startswith(f"MLflow tracking server {uri}: creating the cell's run failed "
                              "after 7 retries with backoff over about 244 s")
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" in message
    answered = MlflowException("BAD_REQUEST: bad parameter")
    assert tracking_failure(answered, uri, "recording the cell") == (
        f"MLflow tracking server {uri}: recording the cell failed: "
        "MlflowException: BAD_REQUEST: bad parameter")
    assert "retries" not in tracking_failure(answered, "sqlite:////tmp/m.db", "x")


class Answers:
    """Stands in for MlflowClient's transport only: each call pops the next outcome."""

    tracking_uri = "http://127.0.0.1:5999"

    def __init__(self, *outcomes):
        self.outcomes, self.calls = list(outcomes), 0

    def set_tag(self, run_id, key, value):
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def test_retrying_client_sends_a_cut_off_call_again_and_nothing_else(monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    cut = MlflowException("API request to http://127.0.0.1:5999/api/2.0/mlflow/runs/set-tag "
                          "failed with exception ('Connection broken: IncompleteRead(0 bytes "
                          "read, 2 more expected)')")
    inner = Answers(cut, "ok")
    client = RetryingClient(inner)
    assert client.set_tag("r", "k", "v") == "ok" and inner.calls == 2
    assert client.tracking_uri == inner.tracking_uri  # attributes pass through
    refused = MlflowException("API request failed with exception HTTPConnectionPool(host="
                              "'127.0.0.1', port=5999): Max retries exceeded with url")
    inner = Answers(refused, "ok")
    with pytest.raises(MlflowException, match="Max retries exceeded"):
        RetryingClient(inner).set_tag("r", "k", "v")  # MLflow's client retried it already
    assert inner.calls == 1
    inner = Answers(*[cut] * 9)
    with pytest.raises(MlflowException, match="Connection broken"):
        RetryingClient(inner, attempts=3).set_tag("r", "k", "v")
    assert inner.calls == 3
    assert "after 7 retries" in tracking_failure(cut, inner.tracking_uri, "x")
