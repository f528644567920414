"""Study-level records on the parent run: the study file, the resolved grid, report tables, plots,
and the per-component contribution runs under it (why: :mod:`pipelines.mlflow_layout`).

Helpers of :mod:`pipelines.mlflow_adapter` (the two together are the only modules that import
``mlflow``). Each takes an ``MlflowClient`` and a run id and is idempotent: re-running
``unisd study run`` or ``unisd report`` replaces what it logged before instead of adding to it.
(MLflow's own ``log_table`` appends rows to an existing table file, which would double a report
table on every ``unisd report``; :func:`log_table` writes the same ``split`` JSON and the same
``mlflow.loggedArtifacts`` entry, but replaces the file.)

Tables show in the run's Artifacts tab as tables and can be read back with
``MlflowClient().load_table(experiment_id, "report/tables/main_table.json")``; plots are logged as
images (``log_image`` with a key), which the run's and the experiment's chart views show.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from pipelines import mlflow_layout as layout

LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"


def log_table(client: MlflowClient, run_id: str, frame: pd.DataFrame, artifact_file: str) -> None:
    """``frame`` as an MLflow table at ``artifact_file`` (``.json``), replacing an older one."""
    folder_name, _, file_name = artifact_file.rpartition("/")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / file_name
        frame.to_json(path, orient="split", index=False, date_format="iso")
        client.log_artifact(run_id, str(path), folder_name or None)
    listed = json.loads(client.get_run(run_id).data.tags.get(LOGGED_ARTIFACTS_TAG, "[]"))
    entry = {"path": artifact_file, "type": "table"}
    if entry not in listed:
        client.set_tag(run_id, LOGGED_ARTIFACTS_TAG, json.dumps([*listed, entry]))


def log_report_tables(client: MlflowClient, run_id: str, files: list[Path]) -> list[str]:
    """Every CSV table of a report as ``report/tables/<stem>.json``; -> the artifact paths."""
    logged = []
    for path in files:
        path = Path(path)
        if path.suffix != ".csv" or not path.exists() or path.stat().st_size == 0:
            continue
        try:
            frame = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            continue
        artifact = f"report/tables/{path.stem}.json"
        log_table(client, run_id, frame, artifact)
        logged.append(artifact)
    return logged


def log_report_images(client: MlflowClient, run_id: str, files: list[Path],
                      step: int = 0) -> list[str]:
    """Every PNG plot of a report as an image keyed by its file stem, at ``step`` (the report's
    number: a re-made report adds a step instead of a second image at the same one)."""
    from PIL import Image, UnidentifiedImageError

    keys = []
    for path in files:
        path = Path(path)
        if path.suffix.lower() != ".png" or not path.exists():
            continue
        try:
            with Image.open(path) as image:
                client.log_image(run_id, image.convert("RGB"), key=f"report/{path.stem}",
                                 step=step)
        except (OSError, UnidentifiedImageError):  # not a readable PNG: the file is still there
            continue
        keys.append(f"report/{path.stem}")
    return keys


def log_study_definition(client: MlflowClient, run_id: str, study_file: Path | None,
                         grid: list[dict[str, Any]]) -> None:
    """The study file under ``study/`` and the resolved grid as the table ``study/grid.json``."""
    if study_file is not None and Path(study_file).exists():
        client.log_artifact(run_id, str(study_file), "study")
    if grid:
        log_table(client, run_id, pd.DataFrame(grid), "study/grid.json")


def log_contribution_runs(client: MlflowClient, experiment_id: str, parent_run_id: str,
                          series: dict[str, dict[str, float]], *, step: int,
                          extra_tags: dict[str, str]) -> dict[str, str]:
    """One run per component, found by its tags or created (a re-made report logs at the next
    ``step``, so each chart shows the latest report); -> {component: run id}. Not nested under
    the parent (``unisd.parent_run`` names it instead): the UI lists a nested run's parent in
    its place and charts the parent's metrics, not the component's.

    ``series``: :func:`pipelines.mlflow_layout.contribution_series`, names already MLflow-safe.
    Also stores the components view on the experiment."""
    run_ids = {}
    for component, values in sorted(series.items()):
        found = client.search_runs(
            [experiment_id], max_results=1,
            filter_string=(f"tags.`{layout.RUN_KIND_TAG}` = '{layout.CONTRIBUTION_KIND}' and "
                           f"tags.`{layout.COMPONENT_TAG}` = '{component}'"))
        run_id = found[0].info.run_id if found else client.create_run(
            experiment_id, run_name=layout.contribution_run_name(component),
            tags={**extra_tags, layout.RUN_KIND_TAG: layout.CONTRIBUTION_KIND,
                  layout.COMPONENT_TAG: component, layout.STUDY_PARENT_ID_TAG: parent_run_id}
        ).info.run_id
        now = int(time.time() * 1000)
        metrics = [Metric(name, float(value), now, step) for name, value in values.items()]
        for start in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[start:start + 1000])
        if not found:
            client.set_terminated(run_id, "FINISHED")
        run_ids[component] = run_id
    if run_ids:
        client.set_experiment_tag(experiment_id,
                                  layout.SHARED_VIEW_PREFIX + layout.COMPONENTS_VIEW_KEY,
                                  json.dumps(layout.components_view()))
    return run_ids
