"""The ``unisd`` console script: validate, plan, run and watch a study; build its report.

``unisd study validate|plan|run|status FILE`` and ``unisd report FILE [--out DIR]``. Every command
validates the whole study first; an invalid study prints every error and exits with code 2
(no traceback), before anything runs. Heavy imports (Ray, MLflow, statsmodels, matplotlib) happen
inside the commands that need them, so ``validate`` and ``plan`` answer in seconds.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ablations.study import StudySpec, load_study
from ablations.study_errors import StudyValidationError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="UniSD ablation studies: validate, plan, run, report.")
study_app = typer.Typer(no_args_is_help=True, help="Work with a study file.")
app.add_typer(study_app, name="study")
console = Console(width=120)
INVALID_STUDY_EXIT = 2

StudyFile = typer.Argument(..., help="The study YAML file.")


OutputDir = typer.Option(
    None, "--output-dir",
    help="Study output folder (overrides the study's output_dir; default runs/<name>). "
         "Give the same folder to run, status and report.",
)


def _load(path: Path, output_dir: Optional[Path] = None) -> StudySpec:
    try:
        spec = load_study(path)
    except StudyValidationError as exc:
        console.print(f"[bold red]invalid study[/] {exc.source}: {len(exc.errors)} error(s)")
        for error in exc.errors:
            console.print("  - " + error.render(), style="red", markup=False, highlight=False)
        raise typer.Exit(INVALID_STUDY_EXIT) from None
    return spec if output_dir is None else spec.model_copy(update={"output_dir": str(output_dir)})


def _expand(spec: StudySpec) -> list:
    from ablations.grid import expand_grid

    return expand_grid(spec)


@study_app.command("validate")
def validate(path: Path = StudyFile) -> None:
    """Check a study file; list every error at once."""
    spec = _load(path)
    cells = _expand(spec)
    console.print(f"[green]valid[/] study [bold]{spec.name}[/]: {len(spec.models)} model(s), "
                  f"{len(spec.training_sets)} training set(s), {len(spec.subsets())} subset(s), "
                  f"{len(spec.presets)} preset(s), {len(spec.seeds)} seed(s) -> "
                  f"{len(cells)} cells")


@study_app.command("plan")
def plan(path: Path = StudyFile,
         cells: bool = typer.Option(False, "--cells", help="List every cell.")) -> None:
    """Show the expanded grid, the jobs by kind and the estimated GPU hours."""
    from ablations.plan import JOB_KINDS, plan_cells

    spec = _load(path)
    expanded = _expand(spec)
    estimate = plan_cells(expanded)
    counts = Counter((cell.model, cell.method) for cell in expanded)
    grid = Table(title=f"study {spec.name}: {len(expanded)} cells")
    for column in ("model", "method", "cells"):
        grid.add_column(column)
    for (model, method), count in sorted(counts.items()):
        grid.add_row(model, method, str(count))
    console.print(grid)
    jobs = Table(title="jobs and estimated GPU time (costs.yaml)")
    for column in ("kind", "jobs", "GPU seconds", "GPU hours"):
        jobs.add_column(column, justify="right")
    for kind in JOB_KINDS:
        seconds = estimate.seconds[kind]
        jobs.add_row(kind, str(estimate.jobs[kind]), f"{seconds:,.0f}", f"{seconds / 3600:,.1f}")
    jobs.add_row("total", str(sum(estimate.jobs.values())), f"{estimate.total_seconds:,.0f}",
                 f"{estimate.gpu_hours:,.1f}")
    console.print(jobs)
    for model, seconds in sorted(estimate.seconds_by_model.items()):
        console.print(f"  {model}: {seconds / 3600:,.1f} GPU hours")
    if cells:
        for cell in expanded:
            console.print(f"  {cell.name}  {cell.method}  {cell.subset}  "
                          f"{','.join(cell.benchmarks)}", markup=False)


@study_app.command("run")
def run(path: Path = StudyFile,
        address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address."),
        tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow URI."),
        max_retries: int = typer.Option(2, "--max-retries", min=0),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
        output_dir: Optional[Path] = OutputDir) -> None:
    """Run (or resume) every cell of the study on Ray, recording into MLflow."""
    from pipelines.runner import run_study

    spec = _load(path, output_dir)
    cells = _expand(spec)
    outcome = run_study(cells, study_name=spec.name, output_dir=spec.resolved_output_dir(),
                        tracking_uri=tracking_uri or spec.resolved_tracking_uri(),
                        ray_address=address or spec.ray_address, max_retries=max_retries,
                        progress=progress)
    table = Table(title=f"study {spec.name}")
    for column in ("cell", "status", "reason"):
        table.add_column(column)
    for name in sorted(outcome.cells):
        cell = outcome.cells[name]
        table.add_row(name, cell.status, cell.reason[:80])
    console.print(table)
    console.print(f"tracking URI: {outcome.tracking_uri}")
    if not outcome.ok:
        raise typer.Exit(1)


@study_app.command("status")
def status(path: Path = StudyFile, output_dir: Optional[Path] = OutputDir) -> None:
    """Show the state of every step and cell of a study (from its output folder)."""
    from pipelines.runner import study_status

    spec = _load(path, output_dir)
    try:
        state = study_status(spec.resolved_output_dir())
    except FileNotFoundError as exc:
        console.print(f"[yellow]{exc}[/]: the study has not been run yet")
        raise typer.Exit(1) from None
    console.print("steps: " + ", ".join(f"{k} {v}" for k, v in state.summary.items()))
    table = Table(title=f"study {state.study_name}")
    for column in ("cell", "status", "reason"):
        table.add_column(column)
    for cell in sorted(state.cells, key=lambda c: c["cell"]):
        table.add_row(cell["cell"], cell["status"], str(cell["reason"] or "")[:80])
    console.print(table)


@app.command("report")
def report(path: Path = StudyFile,
           out: Optional[Path] = typer.Option(None, "--out", help="Folder for the report."),
           tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri"),
           plots: bool = typer.Option(True, "--plots/--no-plots"),
           attach: bool = typer.Option(True, "--attach/--no-attach",
                                       help="Attach files and metrics to the MLflow parent run."),
           duplicates: str = typer.Option(
               "error", "--duplicates",
               help="More than one finished run for one cell: 'error' (default) or 'latest'."),
           include_versions: bool = typer.Option(
               False, "--include-versions",
               help="Also report runs of other library versions (matched by cell name; the "
                    "version is shown next to the model)."),
           output_dir: Optional[Path] = OutputDir,
           ) -> None:
    """Tables (Markdown, LaTeX, CSV), plots and contributions from the study's MLflow records.

    Only the cells of the study file as it now expands are analysed; other runs of the
    experiment are left out and counted in a note.
    """
    from ablations.report import build_report
    from ablations.report.gains import gains_table_display
    from ablations.report.display import main_table_display
    from ablations.report.render import markdown_table
    from ablations.report.scope import DuplicateRunsError, scope_records
    from pipelines.mlflow_adapter import load_study_records
    from unisd_core.version import LIBRARY_VERSION

    spec = _load(path, output_dir)
    uri = tracking_uri or spec.resolved_tracking_uri()
    try:
        scores, items = load_study_records(spec.name, uri)
        scoped = scope_records(scores, items, _expand(spec), duplicates=duplicates,
                               include_versions=include_versions,
                               current_version=LIBRARY_VERSION)
    except KeyError as exc:
        console.print(f"[red]no records[/]: {exc}")
        raise typer.Exit(1) from None
    except (DuplicateRunsError, ValueError) as exc:
        console.print(f"[red]cannot report[/]: {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from None
    out_dir = out or spec.resolved_output_dir() / "report"
    try:
        built = build_report(scoped.scores, scoped.items, out_dir, with_plots=plots,
                             notes=scoped.notes)
    except ValueError as exc:
        console.print(f"[red]no report[/]: {exc}")
        raise typer.Exit(1) from None
    shown, foot = main_table_display(built.main)
    console.print(markdown_table(shown, foot), markup=False, highlight=False)
    console.print("Gains over the base model (points)", markup=False, highlight=False)
    shown, foot = gains_table_display(built.gains)
    console.print(markdown_table(shown, foot), markup=False, highlight=False)
    for note in built.notes:
        console.print(f"[yellow]note[/]: {note}", highlight=False)
    console.print(f"wrote {len(built.files)} files to {out_dir}")
    if attach:
        _attach(spec.name, uri, built)


def _attach(study_name: str, uri: str, built) -> None:
    """Files and contribution metrics onto the study's parent run (pipelines' MLflow adapter)."""
    from pipelines.mlflow_adapter import log_study_report

    log_study_report(study_name, uri, built.files, built.metrics)
    console.print(f"attached {len(built.files)} files and {len(built.metrics)} metrics to the "
                  f"parent run of {study_name}")
