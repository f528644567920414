"""The only module that imports ``mlflow``: study experiment, parent and cell runs, records.

Layout: one experiment per study (named after it), one parent run per study, one child run per
cell. A cell run carries the resolved cell config as flattened params, identity and provenance as
tags (``unisd.*``: run key, method, subset, component flags, model family, dataset, seed, git SHA,
library versions, status), step metrics from training (logged by the worker through
:class:`MlflowMetricsSink`, batched), evaluation metrics per benchmark (scores, and the
retention metrics of method.md 6: ``<benchmark>/pplret``, ``/jsd_to_base``, ``/gold_logprob``,
...), and artifacts (per-item samples as JSONL, each item's ``metrics`` carrying its
``jsd_to_base``, ``base_logprob``, ``gold_logprob``; the resolved config; step logs).

Store: the embedded default is ``sqlite:///<study output>/mlflow.db`` with artifacts in
``<study output>/artifacts``; :func:`prepare_store` creates or migrates the database once, in the
driver, before any worker connects (concurrent first-time migrations corrupt SQLite). Any
tracking server works by URI. Runs are found by their ``unisd.run_key`` tag, so re-running a
study reuses runs instead of duplicating them.

Departures from the paper: none (the authors log nothing structured).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from unisd_core.config import COMPONENT_NAMES
from unisd_core.version import LIBRARY_VERSION

TAG = "unisd."
RUN_KEY_TAG = "unisd.run_key"
PARENT_TAG = "unisd.study_parent"
VERSIONED_PACKAGES = ("torch", "transformers", "peft", "ray", "mlflow", "lm_eval", "pydantic")
SCORE_COLUMNS = ["run_key", "cell", "model", "training_set", "method", "subset",
                 *COMPONENT_NAMES, "seed", "benchmark", "score", "status"]
# Section 6 metrics (pipelines.retention_step), logged as ``<benchmark>/<name>`` / item metrics.
OPTIONAL_SCORE_METRICS = ("pplret", "jsd_to_base", "gold_logprob", "gold_perplexity",
                          "base_logprob")
ITEM_COLUMNS = ["run_key", "benchmark", "item_id", "score"]
OPTIONAL_ITEM_FIELDS = ("jsd_to_base", "base_logprob", "gold_logprob")
_MAX_PARAM_CHARS = 6000


def default_tracking_uri(output_dir: Path) -> str:
    return f"sqlite:///{Path(output_dir).resolve() / 'mlflow.db'}"


def prepare_store(tracking_uri: str, output_dir: Path) -> str | None:
    """Create/migrate a SQLite store once (driver only); returns the artifact root to use.

    For a server URI nothing is created here: the server owns its database.
    """
    if not tracking_uri.startswith("sqlite:"):
        return None
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    artifact_root = Path(output_dir).resolve() / "artifacts"
    artifact_root.mkdir(parents=True, exist_ok=True)
    SqlAlchemyStore(tracking_uri, artifact_root.as_uri())  # creates tables, runs migrations
    return artifact_root.as_uri()


class StudyTracker:
    """Driver-side view of one study's experiment; every method is idempotent."""

    def __init__(self, study_name: str, tracking_uri: str, artifact_root: str | None = None):
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self.study_name = study_name
        experiment = self.client.get_experiment_by_name(study_name)
        if experiment is None:
            experiment_id = self.client.create_experiment(study_name,
                                                          artifact_location=artifact_root)
        else:
            experiment_id = experiment.experiment_id
        self.experiment_id = experiment_id
        self.parent_run_id = self._ensure_parent()

    def _find(self, tag: str, value: str) -> str | None:
        runs = self.client.search_runs([self.experiment_id],
                                       filter_string=f"tags.`{tag}` = '{value}'", max_results=5)
        return runs[0].info.run_id if runs else None

    def _ensure_parent(self) -> str:
        found = self._find(PARENT_TAG, "true")
        if found:
            return found
        run = self.client.create_run(self.experiment_id, run_name=self.study_name,
                                     tags={PARENT_TAG: "true", "unisd.study": self.study_name,
                                           **provenance_tags()})
        return run.info.run_id

    def ensure_cell_run(self, cell_payload: dict[str, Any], tags: dict[str, str]) -> str:
        """The run of a cell (found by run key, else created under the study's parent run)."""
        found = self._find(RUN_KEY_TAG, tags[RUN_KEY_TAG])
        if found and self.client.get_run(found).data.params:
            return found
        # No run yet, or a driver killed right after create_run left one without params:
        # (re)log them; same key, same resolved config, so the values are identical.
        run_id = found or self.client.create_run(
            self.experiment_id, run_name=tags.get("unisd.cell"),
            tags={**tags, **provenance_tags(), "mlflow.parentRunId": self.parent_run_id,
                  "unisd.study": self.study_name, "unisd.status": "pending"}).info.run_id
        params = [Param(key, value) for key, value in flatten(cell_payload).items()]
        for start in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[start:start + 100])
        self.log_json(run_id, cell_payload, "config/cell.json")
        return run_id

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_evaluation(self, run_id: str, results: dict[str, Any]) -> None:
        """Scores per benchmark as metrics, items as ``items/<benchmark>.jsonl``."""
        now = int(time.time() * 1000)
        metrics: list[Metric] = []
        for benchmark, result in results.items():
            metrics.append(Metric(f"score/{benchmark}", float(result["score"]), now, 0))
            for name, value in (result.get("metrics") or {}).items():
                if isinstance(value, (int, float)):
                    metrics.append(Metric(f"{benchmark}/{name}", float(value), now, 0))
        tags = [RunTag(f"unisd.task_version.{benchmark}", str(result.get("task_version")))
                for benchmark, result in results.items()]
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        with tempfile.TemporaryDirectory() as folder:
            for benchmark, result in results.items():
                path = Path(folder) / f"{benchmark}.jsonl"
                path.write_text("".join(json.dumps(item) + "\n" for item in result["items"]))
            self.client.log_artifacts(run_id, folder, "items")

    def log_json(self, run_id: str, payload: Any, artifact_file: str) -> None:
        self.client.log_dict(run_id, payload, artifact_file)

    def log_file(self, run_id: str, path: Path, artifact_dir: str) -> None:
        if Path(path).exists():
            self.client.log_artifact(run_id, str(path), artifact_dir)

    def finish(self, run_id: str, status: str, reason: str = "") -> None:
        """Record the cell status (``done`` / ``failed`` / ``skipped``) and close the run."""
        self.set_tags(run_id, {"unisd.status": status, "unisd.reason": reason[:5000]})
        self.client.set_terminated(run_id, "FINISHED" if status == "done" else "FAILED")

    def finish_parent(self, status: str) -> None:
        self.client.set_terminated(self.parent_run_id, status)

    def run_ids_by_key(self) -> dict[str, list[str]]:
        """Every cell run of the study by run key (a list, so duplicates would show)."""
        found: dict[str, list[str]] = {}
        for run in _all_runs(self.client, self.experiment_id):
            key = run.data.tags.get(RUN_KEY_TAG)
            if key:
                found.setdefault(key, []).append(run.info.run_id)
        return found


def log_study_report(study_name: str, tracking_uri: str, files: list[Path],
                     metrics: dict[str, float]) -> str:
    """Attach a report (files, contribution metrics) to the study's parent run; -> its id.

    Files in a ``plots`` folder go to ``report/plots``, the rest to ``report``. MLflow metric
    names allow only some characters, so others are replaced by ``_``.
    """
    tracker = StudyTracker(study_name, tracking_uri)
    for path in files:
        folder = "report/plots" if Path(path).parent.name == "plots" else "report"
        tracker.log_file(tracker.parent_run_id, Path(path), folder)
    now = int(time.time() * 1000)
    batch = [Metric(_metric_name(name), float(value), now, 0) for name, value in metrics.items()]
    for start in range(0, len(batch), 1000):
        tracker.client.log_batch(tracker.parent_run_id, metrics=batch[start:start + 1000])
    return tracker.parent_run_id


def _metric_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-. /:" else "_" for c in name)[:250]


class MlflowMetricsSink:
    """``MetricsSink`` that logs training step metrics to one run, in batches (worker side).

    A resumed training replays the steps between its checkpoint and the crash; those steps are
    already in the run (the resume is exact, so the values are the same), and logging them again
    would leave two points per step in the metric history. So at its first ``log`` the sink reads
    how far the run's history of that first metric goes and drops the steps up to there.
    """

    def __init__(self, tracking_uri: str, run_id: str, *, batch_size: int = 50,
                 prefix: str = "train/"):
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.run_id = run_id
        self.batch_size = batch_size
        self.prefix = prefix
        self.pending: list[Metric] = []
        self.logged_through: int | None = None  # last step already in the run, read at first log

    def log(self, step: int, values: dict[str, float]) -> None:
        if self.logged_through is None:
            history = _with_retries(lambda: self.client.get_metric_history(
                self.run_id, self.prefix + next(iter(values), "")))
            self.logged_through = max((metric.step for metric in history), default=0)
        if step <= self.logged_through:
            return
        now = int(time.time() * 1000)
        self.pending.extend(Metric(self.prefix + name, float(value), now, int(step))
                            for name, value in values.items())
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:1000], self.pending[1000:]
            _with_retries(lambda: self.client.log_batch(self.run_id, metrics=batch))

    def close(self) -> None:
        self.flush()


def _with_retries(action: Any, attempts: int = 5) -> Any:
    # SQLite serialises writers; a concurrent writer can surface as "database is locked".
    for attempt in range(attempts):
        try:
            return action()
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt)


def flatten(payload: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts/lists -> ``{"a.b.0": "value"}`` (MLflow params are flat strings)."""
    flat: dict[str, str] = {}
    if isinstance(payload, dict):
        for key, value in payload.items():
            flat.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(payload, (list, tuple)) and payload and all(
            isinstance(value, (dict, list)) for value in payload):
        for index, value in enumerate(payload):
            flat.update(flatten(value, f"{prefix}{index}."))
    else:
        text = json.dumps(payload) if isinstance(payload, (list, tuple)) else str(payload)
        flat[prefix.rstrip(".")] = text[:_MAX_PARAM_CHARS]
    return flat


def provenance_tags() -> dict[str, str]:
    tags = {"unisd.git_sha": _git_sha(), "unisd.version.unisd": LIBRARY_VERSION}
    for package in VERSIONED_PACKAGES:
        try:
            tags[f"unisd.version.{package}"] = metadata.version(package.replace("_", "-"))
        except metadata.PackageNotFoundError:
            tags[f"unisd.version.{package}"] = "absent"
    return tags


def _git_sha() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True)
        return done.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _all_runs(client: MlflowClient, experiment_id: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def load_study_records(study_name: str, tracking_uri: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(scores, items)`` frames as docs/architecture.md "Result records" defines them."""
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(study_name)
    if experiment is None:
        raise KeyError(f"no MLflow experiment named {study_name!r} at {tracking_uri}")
    score_rows: list[dict[str, Any]] = []
    item_rows: list[dict[str, Any]] = []
    for run in _all_runs(client, experiment.experiment_id):
        tags = run.data.tags
        if RUN_KEY_TAG not in tags:
            continue  # the parent run
        identity = _run_identity(run)  # which MLflow run: study scoping in the report
        score_rows.extend({**row, **identity} for row in _score_rows(tags, run.data.metrics))
        item_rows.extend({**row, "run_id": run.info.run_id}
                         for row in _item_rows(client, run.info.run_id, tags))
    scores = pd.DataFrame(score_rows, columns=_columns(SCORE_COLUMNS, score_rows))
    items = pd.DataFrame(item_rows, columns=_columns(ITEM_COLUMNS, item_rows))
    return scores, items


def _run_identity(run: Any) -> dict[str, Any]:
    """Run id, start time, library version and the ``unisd.env.*`` tags (as ``env.*``)."""
    tags = run.data.tags
    return {"run_id": run.info.run_id, "start_time": run.info.start_time,
            "library_version": tags.get("unisd.version.unisd", "unknown"),
            **{"env." + k.removeprefix("unisd.env."): v for k, v in tags.items()
               if k.startswith("unisd.env.")}}


def _columns(required: list[str], rows: list[dict[str, Any]]) -> list[str]:
    extra = sorted({key for row in rows for key in row} - set(required))
    return [*required, *extra]


def _score_rows(tags: dict[str, str], metrics: dict[str, float]) -> list[dict[str, Any]]:
    base = {"run_key": tags[RUN_KEY_TAG], "cell": tags.get("unisd.cell"),
            "model": tags.get("unisd.model"), "training_set": tags.get("unisd.training_set"),
            "method": tags.get("unisd.method"), "subset": tags.get("unisd.subset"),
            "seed": int(tags.get("unisd.seed", 0)), "status": tags.get("unisd.status")}
    for name in COMPONENT_NAMES:
        base[name] = tags.get(f"unisd.component.{name}") == "true"
    rows = []
    for benchmark in filter(None, tags.get("unisd.benchmarks", "").split(",")):
        row = {**base, "benchmark": benchmark,
               "score": metrics.get(f"score/{benchmark}", float("nan"))}
        for name in OPTIONAL_SCORE_METRICS:
            if f"{benchmark}/{name}" in metrics:
                row[name] = metrics[f"{benchmark}/{name}"]
        rows.append(row)
    return rows


def _item_rows(client: MlflowClient, run_id: str, tags: dict[str, str]) -> list[dict[str, Any]]:
    names = {entry.path for entry in client.list_artifacts(run_id, "items")}
    if not names:
        return []
    rows: list[dict[str, Any]] = []
    # One small download per run: MLflow's per-download progress bar would flood the terminal.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as folder:
        local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="items",
                                                         dst_path=folder,
                                                         tracking_uri=client.tracking_uri))
        for path in sorted(local.glob("*.jsonl")):
            for line in path.read_text().splitlines():
                item = json.loads(line)
                row = {"run_key": tags[RUN_KEY_TAG], "benchmark": path.stem,
                       "item_id": item["item_id"], "score": item["score"]}
                extra = {**(item.get("metrics") or {}), **item}
                row.update({k: extra[k] for k in OPTIONAL_ITEM_FIELDS if k in extra})
                rows.append(row)
    return rows
