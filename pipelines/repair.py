"""Damaged outputs, found and named before they are used: the files a finished step left behind,
and the checkpoints a training step would resume from.

A ``done`` state says a step finished; it does not prove its files survived (a disk that filled
up, a copy cut short, a hand edit). Before the driver hands a finished step's outputs to a step
that still has to run, :func:`damaged_output` checks them (records, model folder, results) and
names the first damaged file; the driver then runs the step again. Inside a training step,
:func:`set_aside_damaged_training` moves a checkpoint whose ``state.pt`` or ``meta.json`` cannot
be read (and a ``train_result.json`` that cannot be read, or that points at a damaged model) out
of the way, so training resumes from the previous checkpoint, or from the start when there is
none (the library keeps only the newest checkpoint). Checks read headers, never whole weights.

Departures from the paper: none (the paper has no fault handling).
"""

from __future__ import annotations

import json
import struct
import time
import zipfile
from pathlib import Path
from typing import Any

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.pt"  # the names of unisd_core.training.checkpoint / loop
META_FILE = "meta.json"
RESULT_FILE = "train_result.json"


def damaged_output(kind: str, result: dict[str, Any]) -> str | None:
    """A sentence naming the damaged output of a finished step of ``kind``; None when intact."""
    if kind == "prepare":
        return damaged_jsonl(Path(result.get("records_path", "")))
    if kind == "train":
        return damaged_model(Path(result.get("model_dir", "")))
    if kind in ("evaluate", "base_eval"):
        return damaged_json(Path(result.get("results_path", "")), want=dict)
    return None


def damaged_json(path: Path, *, want: type | None = None) -> str | None:
    try:
        raw = path.read_bytes()
    except OSError as error:
        return f"{path} cannot be read ({error.strerror or error})"
    if not raw.strip():
        return f"{path} is empty ({len(raw)} bytes)"
    try:
        value = json.loads(raw.decode("utf-8"))
    except ValueError as error:
        return f"{path} is not valid JSON ({error})"[:400]
    if want is not None and not isinstance(value, want):
        return f"{path} holds a {type(value).__name__}, not a {want.__name__}"
    return None


def damaged_jsonl(path: Path) -> str | None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as error:
        return f"{path} cannot be read ({error})"[:400]
    if not any(lines):
        return f"{path} is empty"
    for number, line in enumerate(lines, 1):
        if line:
            try:
                json.loads(line)
            except ValueError:
                return f"{path} line {number} is not valid JSON"
    return None


def damaged_model(folder: Path) -> str | None:
    """A saved model folder: config.json readable, every file non-empty, safetensors whole."""
    if not folder.is_dir():
        return f"model folder {folder} is missing"
    problem = damaged_json(folder / "config.json", want=dict)
    if problem:
        return problem
    weights = [path for path in folder.iterdir()
               if path.suffix in (".safetensors", ".bin")]
    if not weights:
        return f"model folder {folder} holds no weights"
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.stat().st_size == 0:
            return f"{path} is empty (0 bytes)"
        if path.suffix == ".safetensors" and not safetensors_whole(path):
            return f"{path} is truncated (shorter than its header says)"
    return None


def safetensors_whole(path: Path) -> bool:
    """The file is as long as its header says (a truncated copy is not)."""
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        end = max((entry["data_offsets"][1] for name, entry in header.items()
                   if name != "__metadata__"), default=0)
        return path.stat().st_size >= 8 + length + end
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return False


def damaged_checkpoint(folder: Path) -> str | None:
    """``state.pt`` must be a whole zip archive (torch.save's format), ``meta.json`` JSON."""
    problem = damaged_json(folder / META_FILE, want=dict)
    if problem:
        return problem
    state = folder / STATE_FILE
    try:
        size = state.stat().st_size
        with zipfile.ZipFile(state) as archive:  # reads the central directory at the end
            archive.infolist()
    except FileNotFoundError:
        return f"{state} is missing"
    except (OSError, zipfile.BadZipFile) as error:
        return f"{state} is damaged ({size} bytes: {error})"
    return None


def set_aside_damaged_training(train_dir: Path) -> list[str]:
    """Move damaged checkpoints (newest first) and a damaged result aside; -> what was moved."""
    moved: list[str] = []
    result = train_dir / RESULT_FILE
    if result.exists():
        problem = damaged_json(result, want=dict)
        if problem is None:
            model = Path(json.loads(result.read_text(encoding="utf-8")).get("model_dir", ""))
            model_problem = damaged_model(model)
            problem = f"its model is damaged: {model_problem}" if model_problem else None
        if problem:
            moved.append(_set_aside(result, problem))
    root = train_dir / CHECKPOINTS
    checkpoints = sorted((p for p in root.glob("step-*") if p.name[5:].isdigit()),
                         key=lambda p: int(p.name[5:]), reverse=True) if root.is_dir() else []
    for folder in checkpoints:
        if not (folder / META_FILE).exists() and not (folder / STATE_FILE).exists():
            continue
        problem = damaged_checkpoint(folder)
        if problem is None:
            break  # the newest readable checkpoint: training resumes from it
        moved.append(_set_aside(folder, problem))
    return moved


def _set_aside(path: Path, problem: str) -> str:
    target = path.with_name(f"damaged-{int(time.time())}-{path.name}")
    path.rename(target)
    return f"{problem}: moved to {target}"


def reset_damaged_inputs(deps_of: dict[str, list[str]], states: dict[str, Any],
                         save: Any) -> list[str]:
    """Driver side: a ``done`` step whose outputs a step still to run needs, and that are
    damaged, goes back to ``pending`` (with a history entry) and is saved; -> one note each.

    ``deps_of`` in topological order; walked backwards, so a chain of damaged steps is found in
    one pass.
    """
    notes = []
    for step_id in reversed(list(deps_of)):
        if states[step_id].status == "done":
            continue
        for dep in deps_of[step_id]:
            state = states[dep]
            problem = damaged_output(state.kind, state.result) if state.status == "done" else None
            if problem:
                notes.append(f"{state.label}: {problem}; the step runs again")
                state.history.append({"status": "damaged", "error": problem})
                state.status, state.error, state.result = "pending", "", {}
                save(state)
    return notes
