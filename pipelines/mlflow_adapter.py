"""The MLflow adapter (with its helpers :mod:`pipelines.mlflow_study` and
:mod:`pipelines.mlflow_calls`, the only modules that import ``mlflow``): study experiment, parent
and cell runs, records.

Layout: one experiment per study (named after it), one parent run per study, one child run per
cell. A cell run carries the resolved cell config as flattened params, identity and provenance as
tags (``unisd.*``: run key, method, arm, subset, component flags, model family, dataset, seed,
git SHA, library versions, status; ``unisd.env.*``: the machine, :mod:`pipelines.environment`),
MLflow's own source tags and a readable run name (:mod:`pipelines.mlflow_layout`), step metrics from training (logged by the worker through
:class:`MlflowMetricsSink`, batched), evaluation metrics per benchmark (scores, and the
retention metrics of method.md 6: ``<benchmark>/pplret``, ``/jsd_to_base``, ``/gold_logprob``,
...) and their mean ``score/mean``, and artifacts (per-item samples as JSONL, each item's ``metrics`` carrying its
``jsd_to_base``, ``base_logprob``, ``gold_logprob``; the resolved config; step logs).

Store: the embedded default is ``sqlite:///<study output>/mlflow.db`` with artifacts in
``<study output>/artifacts``; :func:`prepare_store` creates or migrates the database once, in the
driver, before any worker connects (concurrent first-time migrations corrupt SQLite). Any
tracking server works by URI. Runs are found by their ``unisd.run_key`` tag, so re-running a
study reuses runs instead of duplicating them. A server's outage is retried by MLflow's client
(:mod:`pipelines.mlflow_calls`); since it retries a ``create_run`` whose answer was lost too, a
newly created cell run looks for others of its key and keeps only the oldest.

Departures from the paper: none (the authors log nothing structured).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from pipelines import mlflow_layout as layout
from pipelines import mlflow_study
from pipelines.mlflow_calls import DATASET_RACE, LOCKED, RetryingClient, with_retries
from pipelines.mlflow_calls import MlflowMetricsSink  # noqa: F401 - re-exported (workers)
from pipelines.mlflow_layout import ARM_TAG, MEAN_SCORE, PARENT_TAG
from unisd_core.config import COMPONENT_NAMES

TAG = "unisd."
RUN_KEY_TAG = "unisd.run_key"
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
        self.client = RetryingClient(MlflowClient(tracking_uri=tracking_uri))
        self.tracking_uri = tracking_uri
        self.study_name = study_name
        # run id -> its tags as ensure_cell_run just saw them (ownership.claim_run reads them
        # instead of asking the store again)
        self.tags_seen: dict[str, dict[str, str]] = {}
        experiment = self.client.get_experiment_by_name(study_name)
        if experiment is None:
            try:
                experiment_id = self.client.create_experiment(
                    study_name, artifact_location=artifact_root,
                    tags={layout.EXPERIMENT_KIND_TAG: layout.MODEL_TRAINING_KIND})
            except mlflow.exceptions.MlflowException:
                # another driver made it, or a retried request did after its answer was lost
                experiment = self.client.get_experiment_by_name(study_name)
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
            experiment = self.client.get_experiment(experiment_id)
        self.experiment_id = experiment.experiment_id
        self.benchmarks = layout.view_benchmarks(experiment.tags)
        if experiment.tags.get(layout.EXPERIMENT_KIND_TAG) != layout.MODEL_TRAINING_KIND:
            # a study recorded before the kind tag existed: opens on the runs view from now on
            self.client.set_experiment_tag(self.experiment_id, layout.EXPERIMENT_KIND_TAG,
                                           layout.MODEL_TRAINING_KIND)
        self.parent_run_id = self._ensure_parent()

    def _search(self, tag: str, value: str) -> list[Any]:
        """Active runs with that tag value, oldest first (ties: by run id)."""
        runs = self.client.search_runs([self.experiment_id],
                                       filter_string=f"tags.`{tag}` = '{value}'", max_results=50)
        return sorted(runs, key=lambda run: (run.info.start_time or 0, run.info.run_id))

    def _find(self, tag: str, value: str) -> str | None:
        runs = self._search(tag, value)
        return runs[0].info.run_id if runs else None

    def _ensure_parent(self) -> str:
        found = self._find(PARENT_TAG, "true")
        if found:
            return found
        run = self.client.create_run(self.experiment_id, run_name=self.study_name,
                                     tags={PARENT_TAG: "true", "unisd.study": self.study_name,
                                           **layout.provenance_tags(self.study_name)})
        return run.info.run_id

    def describe(self, description: str | None, benchmarks: list[str]) -> None:
        """Description and the arms view on the experiment (idempotent; the view grows)."""
        self.benchmarks = list(dict.fromkeys([*self.benchmarks, *benchmarks]))
        for key, value in layout.experiment_tags(description, self.benchmarks).items():
            self.client.set_experiment_tag(self.experiment_id, key, value)
        if description:
            self.client.set_tag(self.parent_run_id, layout.NOTE_TAG, description)

    def ensure_cell_run(self, cell_payload: dict[str, Any], tags: dict[str, str]) -> str:
        """The run of a cell (found by run key, else created under the study's parent run)."""
        found = self._search(RUN_KEY_TAG, tags[RUN_KEY_TAG])
        if found and found[0].data.params:
            self.tags_seen[found[0].info.run_id] = dict(found[0].data.tags)
            return found[0].info.run_id
        benchmarks = [b for b in tags.get("unisd.benchmarks", "").split(",") if b]
        if not set(benchmarks) <= set(self.benchmarks):
            self.describe(None, benchmarks)
        tags = {**tags, ARM_TAG: layout.arm_label(tags.get("unisd.method", ""),
                                                  tags.get("unisd.subset", ""),
                                                  tags.get("unisd.cell", ""))}
        # No run yet, or a driver killed right after create_run left one without params:
        # (re)log them; same key, same resolved config, so the values are identical.
        run_id = found[0].info.run_id if found else self._create_cell_run(tags)
        if not found:
            datasets = _dataset_inputs(cell_payload)
            with_retries(lambda: self.client.log_inputs(run_id, datasets=datasets),
                         transient=(*LOCKED, *DATASET_RACE))
        params = [Param(key, value) for key, value in flatten(cell_payload).items()]
        for start in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[start:start + 100])
        self.log_json(run_id, cell_payload, "config/cell.json")
        if not found:  # the tags it was created with (a found run's: read again when claimed)
            self.tags_seen[run_id] = {**tags, "unisd.study": self.study_name}
        return run_id

    def _create_cell_run(self, tags: dict[str, str]) -> str:
        """Create the run; if a retried request created a second one, keep the oldest only."""
        created = self.client.create_run(
            self.experiment_id, run_name=layout.run_name(tags),
            tags={**tags, **layout.provenance_tags(self.study_name), PARENT_TAG: "false",
                  "mlflow.parentRunId": self.parent_run_id, "unisd.study": self.study_name,
                  "unisd.status": "pending"}).info.run_id
        runs = self._search(RUN_KEY_TAG, tags[RUN_KEY_TAG])
        keep = runs[0].info.run_id if runs else created
        for run in runs[1:]:
            if not run.data.params:  # never logged to: a twin from a retried create_run
                self.client.delete_run(run.info.run_id)
        return keep

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_evaluation(self, run_id: str, results: dict[str, Any]) -> None:
        """Scores per benchmark as metrics, items as ``items/<benchmark>.jsonl``."""
        metrics, tags = _evaluation_batch(results)
        self.client.log_batch(run_id, metrics=metrics,
                              tags=[RunTag(k, v) for k, v in tags.items()])
        self._log_items(run_id, results)

    def record_cell(self, run_id: str, results: dict[str, Any], files: list[tuple[Path, str]],
                    tags: dict[str, str]) -> None:
        """A cell's whole record in few requests: items and ``files`` (path, artifact folder)
        first, then one batch of scores and ``tags`` with status ``done``, then the run closed.
        Each part overwrites itself when repeated (a record retried after a dead driver)."""
        self._log_items(run_id, results)
        for path, folder in files:
            self.log_file(run_id, path, folder)
        metrics, version_tags = _evaluation_batch(results)
        batch = [RunTag(k, str(v)) for k, v in {**version_tags, **tags, "unisd.status": "done",
                                                "unisd.reason": ""}.items()]
        for start in range(0, max(len(batch), 1), 100):  # MLflow: at most 100 tags a request
            self.client.log_batch(run_id, metrics=metrics if start == 0 else [],
                                  tags=batch[start:start + 100])
        self.client.set_terminated(run_id, "FINISHED")

    def _log_items(self, run_id: str, results: dict[str, Any]) -> None:
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
        """Record the cell status (``done`` / ``failed`` / ``interrupted``) and close the run
        (FINISHED / FAILED / KILLED)."""
        self.set_tags(run_id, {"unisd.status": status, "unisd.reason": reason[:5000]})
        self.client.set_terminated(run_id, {"done": "FINISHED", "interrupted": "KILLED"}
                                   .get(status, "FAILED"))

    def finish_parent(self, status: str) -> None:
        self.client.set_terminated(self.parent_run_id, status)

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.tags)

    def cell_run_tags(self) -> dict[str, list[dict[str, str]]]:
        """The tags of every cell run of the study, by run key."""
        found: dict[str, list[dict[str, str]]] = {}
        for run in _all_runs(self.client, self.experiment_id):
            key = run.data.tags.get(RUN_KEY_TAG)
            if key:
                found.setdefault(key, []).append(dict(run.data.tags))
        return found

    def run_ids_by_key(self) -> dict[str, list[str]]:
        """Every cell run of the study by run key (a list, so duplicates would show)."""
        found: dict[str, list[str]] = {}
        for run in _all_runs(self.client, self.experiment_id):
            key = run.data.tags.get(RUN_KEY_TAG)
            if key:
                found.setdefault(key, []).append(run.info.run_id)
        return found


def log_study_report(study_name: str, tracking_uri: str, files: list[Path],
                     metrics: dict[str, float]) -> tuple[str, str | None]:
    """Attach a report (files, tables, plots, contribution metrics) to the study's parent run.

    Files in a ``plots`` folder go to ``report/plots``, the rest to ``report``; CSV tables are
    also logged as MLflow tables (``report/tables/<stem>.json``) and PNG plots as images keyed
    ``report/<stem>`` at step = the report's number (``unisd.report_count``). MLflow metric
    names allow only some characters, so others are replaced by ``_``. The contribution metrics
    go, per component, on its contribution run (step = the report's number), not on the parent:
    there each chart of the chart view would hold a single bar.
    Returns the parent's id and the components view's UI path (None without contributions).
    """
    tracker = StudyTracker(study_name, tracking_uri)
    parent = tracker.parent_run_id
    for path in files:
        folder = "report/plots" if Path(path).parent.name == "plots" else "report"
        tracker.log_file(parent, Path(path), folder)
    count = int(tracker.client.get_run(parent).data.tags.get("unisd.report_count", "0"))
    mlflow_study.log_report_tables(tracker.client, parent, files)
    mlflow_study.log_report_images(tracker.client, parent, files, step=count)
    tracker.set_tags(parent, {"unisd.report_count": str(count + 1)})
    series = {component: {_metric_name(name): value for name, value in values.items()}
              for component, values in layout.contribution_series(metrics).items()}
    mlflow_study.log_contribution_runs(
        tracker.client, tracker.experiment_id, parent, series, step=count,
        extra_tags={"unisd.study": study_name, **layout.provenance_tags(study_name)})
    return parent, (layout.components_view_path(tracker.experiment_id) if series else None)


def describe_study(study_name: str, tracking_uri: str, *, description: str | None,
                   study_file: Path | None, cells: list[dict[str, Any]]) -> str:
    """The study's description, file and resolved grid on its experiment and parent run.

    ``cells``: the cells' resolved payloads, each with its ``run_key``. Returns the UI path
    of the arms-side-by-side view (append it to the server's address).
    """
    tracker = StudyTracker(study_name, tracking_uri)
    grid = layout.cell_overview(cells)
    benchmarks = list(dict.fromkeys(b for row in grid for b in row["benchmarks"].split(",") if b))
    tracker.describe(description, benchmarks)
    mlflow_study.log_study_definition(tracker.client, tracker.parent_run_id, study_file, grid)
    return layout.comparison_view_path(tracker.experiment_id)


def _evaluation_batch(results: dict[str, Any]) -> tuple[list[Metric], dict[str, str]]:
    """Scores (and their unweighted mean, a runs-table column) as metrics; task versions as tags."""
    now = int(time.time() * 1000)
    metrics: list[Metric] = []
    if results:
        mean = sum(float(result["score"]) for result in results.values()) / len(results)
        metrics.append(Metric(MEAN_SCORE, mean, now, 0))
    for benchmark, result in results.items():
        metrics.append(Metric(f"score/{benchmark}", float(result["score"]), now, 0))
        for name, value in (result.get("metrics") or {}).items():
            if isinstance(value, (int, float)):
                metrics.append(Metric(f"{benchmark}/{name}", float(value), now, 0))
    tags = {f"unisd.task_version.{benchmark}": str(result.get("task_version"))
            for benchmark, result in results.items()}
    return metrics, tags


def _metric_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-. /:" else "_" for c in name)[:250]


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


def _dataset_inputs(cell_payload: dict[str, Any]) -> list[DatasetInput]:
    return [DatasetInput(Dataset(name=entry["name"], digest=entry["digest"],
                                 source_type=entry["source_type"], source=entry["source"]),
                         tags=[InputTag("mlflow.data.context", entry["context"])])
            for entry in layout.dataset_inputs(cell_payload)]


def _all_runs(client: MlflowClient, experiment_id: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def load_study_records(study_name: str, tracking_uri: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(scores, items)`` frames as docs/architecture.md "Result records" defines them.

    Raises ``KeyError`` when there is no such study; a SQLite store that does not exist is not
    created (opening it would leave an empty ``mlflow.db`` behind).
    """
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///"))
        if not database.is_absolute():
            database = Path.cwd() / database
        if not database.exists():
            raise KeyError(f"no MLflow store at {database}: the study has not been run there")
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
