"""The ``unisd`` console script: validate, plan, run and watch a study; build its report.

``unisd study validate|plan|run|status FILE`` and ``unisd report FILE [--out DIR]``. Every command
validates the whole study first; an invalid study prints every error and exits with code 2
(no traceback), before anything runs; a study file that does not exist exits with code 66
(``EX_NOINPUT``). Heavy imports (Ray, MLflow, statsmodels, matplotlib) happen inside the commands
that need them, so ``validate`` and ``plan`` answer in seconds.

Output conventions: results (tables) go to stdout, notes, progress remarks and errors to stderr;
printed to a terminal, lines fit its width; piped to a file or another program, nothing is
wrapped (a table is as wide as its content). The study's output folder (``output_dir`` in the
study, default ``runs/<name>``) is relative to the current directory, not to the study file.
"""

from __future__ import annotations

import sys
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
INVALID_STUDY_EXIT = 2
MISSING_FILE_EXIT = 66  # sysexits.h EX_NOINPUT: the input file does not exist or is unreadable


def _console(stderr: bool) -> Console:
    """A terminal gets its own width; a pipe or file gets no wrapping at all (soft wrap, and
    tables as wide as their content)."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=100_000, soft_wrap=True)


console = _console(stderr=False)  # results
notes = _console(stderr=True)  # notes, remarks, errors


def _version(value: bool) -> None:
    if value:
        from importlib import metadata

        from unisd_core.version import LIBRARY_VERSION

        console.print(f"unisd {metadata.version('unisd')} (library {LIBRARY_VERSION})",
                      markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """UniSD ablation studies: validate, plan, run, report."""

StudyFile = typer.Argument(..., help="The study YAML file.")


OutputDir = typer.Option(
    None, "--output-dir",
    help="Study output folder (overrides the study's output_dir; default runs/<name>, relative "
         "to the current directory, not to the study file). Give the same folder to run, "
         "status and report.",
)


def _load(path: Path, output_dir: Optional[Path] = None) -> StudySpec:
    if not path.is_file():
        what = "is a folder, not a study file" if path.is_dir() else "does not exist"
        notes.print(f"[bold red]no study file[/]: {path} {what}", highlight=False)
        raise typer.Exit(MISSING_FILE_EXIT)
    try:
        spec = load_study(path)
    except StudyValidationError as exc:
        notes.print(f"[bold red]invalid study[/] {exc.source}: {len(exc.errors)} error(s)")
        for error in exc.errors:
            notes.print("  - " + error.render(), style="red", markup=False, highlight=False)
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
    _describe_in_mlflow(spec, path, cells, outcome.tracking_uri)
    if not outcome.ok:
        raise typer.Exit(1)


def _describe_in_mlflow(spec: StudySpec, path: Path, cells: list, uri: str) -> None:
    """Description, study file, grid and the arms view on the study's MLflow experiment."""
    from pipelines.mlflow_adapter import describe_study

    try:
        view = describe_study(spec.name, uri, description=spec.description, study_file=path,
                              cells=[{**cell.model_dump(mode="json"), "run_key": cell.run_key()}
                                     for cell in cells])
    except Exception as exc:  # noqa: BLE001 - the runs are recorded; only the extras are missing
        notes.print(f"[yellow]note[/]: could not describe the study in MLflow: {exc}")
        return
    where = (f"mlflow ui --backend-store-uri {uri}, then open http://127.0.0.1:5000{view}"
             if uri.startswith("sqlite:") else f"{uri.rstrip('/')}{view}")
    notes.print(f"arms side by side: {where}", markup=False, highlight=False)


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
           replicates: int = typer.Option(2000, "--replicates", min=1),
           plots: bool = typer.Option(True, "--plots/--no-plots"),
           attach: bool = typer.Option(True, "--attach/--no-attach",
                                       help="Attach files and metrics to the MLflow parent run."),
           output_dir: Optional[Path] = OutputDir,
           ) -> None:
    """Tables (Markdown, LaTeX, CSV), plots and contributions from the study's MLflow records."""
    from ablations.report import build_report
    from ablations.report.render import markdown_table
    from ablations.report.gains import gains_table_display
    from ablations.report.tables import main_table_display
    from pipelines.mlflow_adapter import load_study_records

    spec = _load(path, output_dir)
    uri = tracking_uri or spec.resolved_tracking_uri()
    try:
        scores, items = load_study_records(spec.name, uri)
    except KeyError as exc:
        notes.print(f"[red]no records[/]: {exc}")
        raise typer.Exit(1) from None
    out_dir = out or spec.resolved_output_dir() / "report"
    try:
        built = build_report(scores, items, out_dir, n_replicates=replicates, with_plots=plots)
    except ValueError as exc:
        notes.print(f"[red]no report[/]: {exc}")
        raise typer.Exit(1) from None
    console.print(markdown_table(main_table_display(built.main)), markup=False)
    console.print("Gains over the base model (points; 95% paired bootstrap over items and seeds, "
                  "* = excludes zero)", markup=False, highlight=False)
    console.print(markdown_table(gains_table_display(built.gains)), markup=False,
                  highlight=False)
    for note in built.notes:
        notes.print(f"[yellow]note[/]: {note}", highlight=False)
    notes.print(f"wrote {len(built.files)} files to {out_dir}")
    if attach:
        _attach(spec.name, uri, built)


def _attach(study_name: str, uri: str, built) -> None:
    """Files and contribution metrics onto the study's parent run (pipelines' MLflow adapter)."""
    from pipelines.mlflow_adapter import log_study_report

    log_study_report(study_name, uri, built.files, built.metrics)
    notes.print(f"attached {len(built.files)} files and {len(built.metrics)} metrics to the "
                  f"parent run of {study_name}")
