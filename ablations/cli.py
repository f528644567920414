"""The ``unisd`` console script: validate, plan, run and watch a study; build its report.

``unisd study validate|plan|run|status FILE`` and ``unisd report FILE [--out DIR]``. Every command
validates the whole study first; an invalid study prints every error and exits with code 2
(no traceback), before anything runs; a study file that does not exist exits with code 66
(``EX_NOINPUT``). Heavy imports (Ray, MLflow, statsmodels, matplotlib) happen inside the commands
that need them, so ``validate`` and ``plan`` answer in seconds.

``study run`` exits 0 when every cell is done, 1 when some failed, 3 when it refused to start (a
second driver on the folder, an unwritable folder, cells another folder records in the same MLflow
store: the message says which and names ``unisd study status``), and 130 when interrupted
(Ctrl-C, SIGTERM: "interrupted, re-run to resume").

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

from ablations.study import StudySpec, load_study, study_notes, with_output_dir
from ablations.study_errors import StudyValidationError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="UniSD ablation studies: validate, plan, run, report.")
study_app = typer.Typer(no_args_is_help=True, help="Work with a study file.")
app.add_typer(study_app, name="study")
INVALID_STUDY_EXIT = 2
REFUSED_EXIT = 3
INTERRUPTED_EXIT = 130  # as a shell reports a process ended by SIGINT
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
        spec = with_output_dir(load_study(path), output_dir)
    except StudyValidationError as exc:
        notes.print(f"[bold red]invalid study[/] {exc.source}: {len(exc.errors)} error(s)")
        for line in exc.lines():
            notes.print("  - " + line, style="red", markup=False, highlight=False)
        raise typer.Exit(INVALID_STUDY_EXIT) from None
    for note in study_notes(spec):  # accepted, but changed or unchecked: say so (stderr)
        typer.echo(f"note: {note}", err=True)
    return spec


InputCheck = typer.Option(
    True, "--check-inputs/--no-check-inputs",
    help="Check that the local model folders and data files the study names exist here "
         "(skip for a study whose inputs exist only on the cluster).")


def _check_inputs(path: Path, spec: StudySpec) -> None:
    """Missing local model folders and data files, listed like other study errors (exit 2)."""
    from ablations.study_inputs import missing_local_inputs

    errors = missing_local_inputs(spec)
    if errors:
        notes.print(f"[bold red]invalid study[/] {path}: {len(errors)} error(s)")
        for error in errors:
            notes.print("  - " + error.render(), style="red", markup=False, highlight=False)
        raise typer.Exit(INVALID_STUDY_EXIT)


def _expand(spec: StudySpec) -> list:
    from ablations.grid import expand_grid

    return expand_grid(spec)


@study_app.command("validate")
def validate(path: Path = StudyFile, check_inputs: bool = InputCheck) -> None:
    """Check a study file; list every error at once."""
    spec = _load(path)
    if check_inputs:
        _check_inputs(path, spec)
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


def _status_command(path: Path, output_dir: Optional[Path]) -> str:
    return f"unisd study status {path}" + (f" --output-dir {output_dir}" if output_dir else "")


@study_app.command("run")
def run(path: Path = StudyFile,
        address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address."),
        tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow URI."),
        max_retries: int = typer.Option(2, "--max-retries", min=0),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
        output_dir: Optional[Path] = OutputDir, check_inputs: bool = InputCheck) -> None:
    """Run (or resume) every cell of the study on Ray, recording into MLflow.

    Exit status: 0 all cells done, 1 some failed, 3 refused to start, 130 interrupted."""
    from pipelines.runner import StudyRefusal, run_study

    spec = _load(path, output_dir)
    if check_inputs:
        _check_inputs(path, spec)
    cells = _expand(spec)
    try:
        outcome = run_study(cells, study_name=spec.name, output_dir=spec.resolved_output_dir(),
                            tracking_uri=tracking_uri or spec.resolved_tracking_uri(),
                            ray_address=address or spec.ray_address, max_retries=max_retries,
                            progress=progress, watch_hint=_status_command(path, output_dir))
    except StudyRefusal as exc:
        notes.print(f"[bold red]refused[/]: {exc}", highlight=False)
        raise typer.Exit(REFUSED_EXIT) from None
    except KeyboardInterrupt:  # before the first step (e.g. while Ray starts): nothing ran
        notes.print("[yellow]interrupted, re-run to resume[/]", highlight=False)
        raise typer.Exit(INTERRUPTED_EXIT) from None
    table = Table(title=f"study {spec.name}")
    table.add_column("cell", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("reason", overflow="fold")
    for name in sorted(outcome.cells):
        cell = outcome.cells[name]
        table.add_row(name, cell.status, _reason(cell.reason, cell.log))
    console.print(table, highlight=False)
    for note in outcome.repairs:
        notes.print(f"[yellow]repaired[/]: {note}", highlight=False)
    console.print(f"tracking URI: {outcome.tracking_uri}")
    _describe_in_mlflow(spec, path, cells, outcome.tracking_uri)
    if outcome.interrupted:
        notes.print(f"[yellow]interrupted, re-run to resume[/]: unisd study run {path}"
                    + (f" --output-dir {output_dir}" if output_dir else ""), highlight=False)
        raise typer.Exit(INTERRUPTED_EXIT)
    if not outcome.ok:
        raise typer.Exit(1)


def _reason(reason: str, log: Optional[str]) -> str:
    """The whole reason (the table wraps it), and the step log to read for the rest."""
    return f"{reason} (log: {log})" if log else reason


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
    notes.print(f"arms side by side: {_ui_address(uri, view)}", markup=False, highlight=False)


def _ui_address(uri: str, view: str) -> str:
    """Where to open a UI path: the server itself, or ``mlflow ui`` on an embedded store."""
    return (f"mlflow ui --backend-store-uri {uri}, then open http://127.0.0.1:5000{view}"
            if uri.startswith("sqlite:") else f"{uri.rstrip('/')}{view}")


@study_app.command("status")
def status(path: Path = StudyFile, output_dir: Optional[Path] = OutputDir,
           steps: bool = typer.Option(False, "--steps", help="Also list every step."),
           as_json: bool = typer.Option(False, "--json", help="Print the whole state as JSON "
                                        "(driver, summary, steps with history, cells).")) -> None:
    """Show the state of every cell (and step) of a study, from its output folder.

    Works while the study runs, from another shell; tells a running driver from one that stopped.
    """
    import json

    from pipelines.state import DamagedStateError, study_status

    spec = _load(path, output_dir)
    try:
        state = study_status(spec.resolved_output_dir())
    except FileNotFoundError as exc:
        notes.print(f"[yellow]{exc}[/]: the study has not been run yet")
        raise typer.Exit(1) from None
    except DamagedStateError as exc:
        notes.print(f"[red]damaged[/]: {exc}", highlight=False)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(state.to_json(), indent=1, default=str))
        return
    console.print(state.driver["note"], highlight=False)
    console.print("steps: " + ", ".join(f"{k} {v}" for k, v in state.summary.items() if v))
    for row in state.steps:
        if row["status"] == "damaged":
            console.print(f"[red]damaged[/]: {row['error']}", highlight=False)
    if steps:
        console.print(_steps_table(state.steps), highlight=False)
    table = Table(title=f"study {state.study_name}")
    table.add_column("cell", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("reason", overflow="fold")
    for cell in sorted(state.cells, key=lambda c: c["cell"]):
        table.add_row(cell["cell"], cell["status"], str(cell["reason"] or ""))
    console.print(table, highlight=False)


def _steps_table(rows: list[dict]) -> Table:
    table = Table(title="steps")
    for column in ("step", "status", "attempts", "elapsed"):
        table.add_column(column, no_wrap=True)
    table.add_column("note", overflow="fold")
    for row in rows:
        attempts = str(row["attempts"])
        if row["ray_retries"]:
            attempts += f" ({row['ray_retries']} by Ray)"
        elapsed = row["elapsed_s"]
        note = row["error"] or ""
        if row["status"] == "failed" and row["log"]:
            note = f"{note} (log: {row['log']})"
        table.add_row(row["label"], row["status"], attempts,
                      "" if elapsed is None else f"{elapsed:,.0f} s", note)
    return table


@app.command("report")
def report(path: Path = StudyFile,
           out: Optional[Path] = typer.Option(None, "--out", help="Folder for the report."),
           tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri"),
           plots: bool = typer.Option(True, "--plots/--no-plots"),
           attach: bool = typer.Option(True, "--attach/--no-attach",
                                       help="Attach the files to the study's MLflow parent run and the "
                                            "contributions to one run per component."),
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
        notes.print(f"[red]no records[/]: {exc}")
        raise typer.Exit(1) from None
    except (DuplicateRunsError, ValueError) as exc:
        notes.print(f"[red]cannot report[/]: {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from None
    out_dir = out or spec.resolved_output_dir() / "report"
    try:
        built = build_report(scoped.scores, scoped.items, out_dir, with_plots=plots,
                             notes=scoped.notes)
    except ValueError as exc:
        notes.print(f"[red]no report[/]: {exc}")
        raise typer.Exit(1) from None
    shown, foot = main_table_display(built.main)
    console.print(markdown_table(shown, foot), markup=False, highlight=False)
    console.print("Gains over the base model (points)", markup=False, highlight=False)
    shown, foot = gains_table_display(built.gains)
    console.print(markdown_table(shown, foot), markup=False, highlight=False)
    for note in built.notes:
        notes.print(f"[yellow]note[/]: {note}", highlight=False)
    notes.print(f"wrote {len(built.files)} files to {out_dir}")
    if attach:
        _attach(spec.name, uri, built)


def _attach(study_name: str, uri: str, built) -> None:
    """Files onto the study's parent run, contributions onto one run per component (pipelines'
    MLflow adapter); prints the components view's address."""
    from pipelines.mlflow_adapter import log_study_report

    _, view = log_study_report(study_name, uri, built.files, built.metrics)
    notes.print(f"attached {len(built.files)} files to the parent run of {study_name} and "
                f"{len(built.metrics)} contribution metrics to its contribution runs")
    if view:
        notes.print(f"components side by side: {_ui_address(uri, view)}", markup=False,
                    highlight=False)
