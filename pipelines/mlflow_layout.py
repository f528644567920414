"""How a study looks in the MLflow UI: run names, the arm label, experiment and source tags, the view.

Pure functions (no ``mlflow`` import); :mod:`pipelines.mlflow_adapter` applies them. What they
fix (issue 16.1): MLflow 3 opens an experiment without a kind tag on the GenAI overview, shows
nested children collapsed, and shows no metric columns by default (its default columns are
Source, Models and Dataset). So the experiment is tagged as a model-training one
(``mlflow.experimentKind``), carries the study's description (``mlflow.note.content``), and holds
a *shared view* (``mlflow.sharedViewState.<key>``, what the UI's own "Share" button writes): the
child runs only, grouped by arm, with the score columns shown. Open it at
``<ui>/#/experiments/<id>/runs?workflowType=machine_learning&viewStateShareKey=<key>``
(:func:`comparison_view_path`): MLflow 3.17's UI ignores the kind tag in favour of its
per-browser GenAI / Model training switch (default GenAI), which ``workflowType`` sets.

The arm label is the report's row label (``Base``, ``SDFT``, ``SD+EMA``, ``UniSD*``): method
plus component subset, independent of seed, model and dataset, so grouping by ``unisd.arm``
puts the seeds of one configuration together (grouping by ``unisd.subset`` would mix base, SFT
and SDFT under ``none``). :func:`arm_label` is also the report's row label
(``ablations.report.tables.row_label`` is this function), so the two cannot drift apart.

Contributions (16.1, "named so the chart view groups them usefully"): MLflow's chart view draws
one chart per metric with one bar per visible run, in sections named by the metric's first path
part. A study-level number logged on the parent alone is one bar per chart. So ``unisd report``
also keeps one *contribution run* per component next to the parent (tag ``unisd.run_kind =
contribution``; not nested, since the UI would list and chart the parent in its place), carrying ``main_effect/<model>/<training set>/<benchmark>`` and
``shapley/<model>/<training set>/<benchmark>`` (points): in the components view
(:func:`components_view_path`) each chart compares the five components on one cell of the grid,
a section per estimate. Cell runs and the arms view are unchanged (they filter on
``unisd.study_parent = 'false'``, a tag contribution runs do not carry).
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import json
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from evaluation.sandbox_isolation import describe_mode as sandbox_mode
from unisd_core.config import COMPONENT_NAMES
from unisd_core.version import LIBRARY_VERSION

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"  # the UI's "Machine learning" experiment type
NOTE_TAG = "mlflow.note.content"
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."
VIEW_KEY = "unisd-arms"
ARM_TAG = "unisd.arm"
PARENT_TAG = "unisd.study_parent"
MEAN_SCORE = "score/mean"
RUN_KIND_TAG = "unisd.run_kind"
CONTRIBUTION_KIND = "contribution"
COMPONENT_TAG = "unisd.component"
STUDY_PARENT_ID_TAG = "unisd.parent_run"  # contribution runs: the study's parent run id
COMPONENTS_VIEW_KEY = "unisd-components"
# the report's flat metric names: contribution/<model>/<training set>/<benchmark>/<component>/<kind>
CONTRIBUTION_PREFIX = "contribution"
CONTRIBUTION_ESTIMATES = {"main": "main_effect", "shapley": "shapley"}
METHOD_NAMES = {"base": "Base", "sft": "SFT", "sdft": "SDFT", "gkd": "GKD", "ssd": "SSD",
                "opsd": "OPSD", "unisd_star": "UniSD*"}
COMPONENT_SHORT = {"agreement": "AGR", "contrastive": "CON", "feature_matching": "FM",
                   "ema": "EMA", "clipping": "CLIP"}
VERSIONED_PACKAGES = ("torch", "transformers", "peft", "ray", "mlflow", "lm_eval", "pydantic")
_SEPARATOR = "__"  # ablations.grid.cell_name: <model>__<training set>__<label>__seed<k>


def arm_label(method: str, subset: str, cell: str) -> str:
    """``Base`` / ``SFT`` / ``SDFT`` / ``UniSD*`` / ``SD+AGR+EMA`` (the report's row label)."""
    parts = str(cell).split(_SEPARATOR)
    if len(parts) == 4 and parts[2] == "unisd_star":
        return METHOD_NAMES["unisd_star"]
    if method != "unisd":
        return METHOD_NAMES.get(method, method)
    return "SD+" + "+".join(COMPONENT_SHORT.get(p, p) for p in str(subset).split("+"))


def run_name(tags: Mapping[str, str]) -> str:
    """``SD+EMA · tiny-qwen2 · scienceqa · seed 0``: the arm first, since the UI cuts long names."""
    model = str(tags.get("unisd.model", "?")).rstrip("/").rsplit("/", 1)[-1]
    return " · ".join((tags.get(ARM_TAG, "?"), model, str(tags.get("unisd.training_set", "?")),
                       f"seed {tags.get('unisd.seed', '?')}"))


def source_tags(git_sha: str, study_name: str, user: str) -> dict[str, str]:
    """MLflow's standard source tags (the UI's Source and User columns, ``mlflow.source.*``)."""
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": f"unisd study {study_name}",
            "mlflow.user": user}
    if git_sha and git_sha != "unknown":
        tags["mlflow.source.git.commit"] = git_sha
    return tags


def comparison_view(benchmarks: list[str]) -> dict[str, Any]:
    """The shared view state: child runs, grouped by arm (mean over seeds), score columns on."""
    scores = [f"score/{name}" for name in benchmarks] + [MEAN_SCORE]
    columns = ["attributes.`Run Name`", f"tags.`{ARM_TAG}`", "tags.`unisd.seed`",
               *(f"metrics.`{name}`" for name in scores), "tags.`unisd.env.fingerprint`"]
    return {"searchFilter": f"tags.`{PARENT_TAG}` = 'false'",
            "orderByKey": f"metrics.`{MEAN_SCORE}`", "orderByAsc": False,
            "selectedColumns": columns,
            "groupBy": {"aggregateFunction": "average",
                        "groupByKeys": [{"mode": "tag", "groupByData": ARM_TAG}]},
            "compareRunCharts": None, "viewMaximized": False, "runListHidden": False}


def experiment_tags(description: str | None, benchmarks: list[str]) -> dict[str, str]:
    """Kind (model training), description and the comparison view, as experiment tags."""
    tags = {EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND,
            SHARED_VIEW_PREFIX + VIEW_KEY: json.dumps(comparison_view(benchmarks))}
    if description:
        tags[NOTE_TAG] = description
    return tags


def view_benchmarks(experiment_tags: Mapping[str, str]) -> list[str]:
    """The benchmarks an experiment's stored arms view already shows."""
    try:
        view = json.loads(experiment_tags.get(SHARED_VIEW_PREFIX + VIEW_KEY, "{}"))
    except ValueError:
        return []
    prefix = "metrics.`score/"
    return [column[len(prefix):-1] for column in view.get("selectedColumns", [])
            if column.startswith(prefix) and column != f"metrics.`{MEAN_SCORE}`"]


def comparison_view_path(experiment_id: str) -> str:
    """The UI path (after the server's address) of the arms-side-by-side view."""
    return (f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={VIEW_KEY}")


def contribution_series(metrics: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """The report's flat contribution metrics regrouped per component, for the contribution runs:
    ``{component: {"<main_effect|shapley>/<model>/<training set>/<benchmark>": points}}``.

    Names are read from the right (component and estimate are known words; the model slug, the
    training set and the benchmark contain no ``/``); other metrics are left out."""
    series: dict[str, dict[str, float]] = {}
    for name, value in metrics.items():
        parts = name.split("/")
        if (len(parts) < 6 or parts[0] != CONTRIBUTION_PREFIX
                or parts[-2] not in COMPONENT_NAMES or parts[-1] not in CONTRIBUTION_ESTIMATES):
            continue
        where = "/".join(parts[1:-2])
        series.setdefault(parts[-2], {})[f"{CONTRIBUTION_ESTIMATES[parts[-1]]}/{where}"] = value
    return series


def contribution_run_name(component: str) -> str:
    """``EMA · contribution`` (the component's short label first, as in the arm labels)."""
    return f"{COMPONENT_SHORT.get(component, component)} · contribution"


def components_view() -> dict[str, Any]:
    """The shared view state of the contribution runs (one per component)."""
    return {"searchFilter": f"tags.`{RUN_KIND_TAG}` = '{CONTRIBUTION_KIND}'",
            "orderByKey": "attributes.start_time", "orderByAsc": True,
            "selectedColumns": ["attributes.`Run Name`", f"tags.`{COMPONENT_TAG}`"],
            "groupBy": None, "compareRunCharts": None, "viewMaximized": False,
            "runListHidden": False}


def components_view_path(experiment_id: str) -> str:
    """The UI path of the components view, opened on its charts (one bar per component)."""
    return (f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={COMPONENTS_VIEW_KEY}&compareRunsMode=CHART")


def cell_overview(cells: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The resolved grid as rows (the parent run's ``study/grid`` table): one per cell."""
    rows = []
    for cell in cells:
        components = (cell.get("train") or {}).get("components") or {}
        row = {"cell": cell["name"], "arm": arm_label(cell["method"], cell["subset"], cell["name"]),
               "method": cell["method"], "subset": cell["subset"], "model": cell["model"],
               "training_set": cell["training_set"], "seed": cell["seed"],
               "benchmarks": ",".join(cell["benchmarks"]), "run_key": cell.get("run_key", "")}
        row.update({name: bool(components.get(name)) for name in COMPONENT_NAMES})
        rows.append(row)
    return rows


def dataset_inputs(cell: Mapping[str, Any]) -> list[dict[str, str]]:
    """The cell's data as MLflow dataset inputs (the runs table's default Dataset column): the
    training set (context ``training``, trained cells only) and each benchmark (``evaluation``).
    ``source`` is the configured source, or ``unisd sample`` for the shipped/generated data."""
    data = cell.get("data") or {}
    evaluation = cell.get("eval") or {}
    entries = []
    if cell.get("train"):
        entries.append((cell["training_set"], data.get("source"), data.get("limit"), "training"))
    for benchmark in cell.get("benchmarks", []):
        entries.append((benchmark, (data.get("eval_sources") or {}).get(benchmark),
                        evaluation.get("limit"), "evaluation"))
    inputs = []
    for name, source, limit, context in entries:
        identity = json.dumps([name, context, source, limit, data.get("seed")])  # split too
        inputs.append({"name": name, "source": str(source or "unisd sample"),
                       "source_type": "local" if source and str(source).startswith("/") else
                       ("hub" if source else "unisd"),
                       "digest": hashlib.sha256(identity.encode()).hexdigest()[:16],
                       "context": context})
    return inputs


def provenance_tags(study_name: str = "") -> dict[str, str]:
    """Git SHA, library versions and MLflow's source tags (parent and cell runs)."""
    process = _process_provenance()
    return {**process, **source_tags(process["unisd.git_sha"], study_name, _user())}


@functools.cache
def _process_provenance() -> dict[str, str]:
    """What one process reports for every run it makes, found once: the git call, the package
    metadata and the sandbox probe cost ~0.14 s (measured under load), 12 minutes of a 5,376-cell
    driver (benchmarks/RESULTS.md 6b); the code a process runs does not change under it."""
    tags = {"unisd.git_sha": _git_sha(), "unisd.version.unisd": LIBRARY_VERSION}
    for package in VERSIONED_PACKAGES:
        try:
            tags[f"unisd.version.{package}"] = metadata.version(package.replace("_", "-"))
        except metadata.PackageNotFoundError:
            tags[f"unisd.version.{package}"] = "absent"
    tags["unisd.sandbox.mode"] = sandbox_mode()  # of this machine; each code item records its own
    return tags


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return "unknown"


def _git_sha() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True)
        return done.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
