"""Shared measuring helpers of the benchmark scripts: peak resident memory of a process, wall
time, fresh-subprocess workers and plain-text tables.

Peak memory on CPU is the kernel's own high-water mark of the resident set (``VmHWM`` in
``/proc/self/status``). Before the measured region a worker resets that mark (writing ``5`` to
``/proc/self/clear_refs``, Linux >= 4.0) and reads its current RSS as the baseline; the figure
reported is ``VmHWM - baseline``: the extra memory the measured code needed at its worst moment,
inputs excluded. torch's CPU allocator caches nothing; glibc, left alone, keeps blocks under its
dynamic mmap threshold (up to 32 MiB: a [256, 32k] float32 chunk is just under it) in its heap
after free, which made repeated identical runs differ by 2x. Workers therefore start with
``MALLOC_MMAP_THRESHOLD_=1048576``: every block of 1 MiB or more is its own mapping, returned to
the kernel on free, so the mark follows live tensors (repeats then agree to a few MiB). Where the
reset is refused the worker falls back to ``ru_maxrss`` (which then also covers the import peak;
the report says which method was used). Each variant runs in its own fresh interpreter so that no
variant inherits another's heap.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "BENCH_RESULT "


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak extra resident memory (MiB) over a region: ``with PeakMemory() as peak: ...``,
    then ``peak.mib`` and ``peak.method``."""

    def __enter__(self) -> "PeakMemory":
        self.method = "VmHWM-reset"
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.method = "ru_maxrss"
        rss = _status_kib("VmRSS")
        if rss is None:  # not Linux: ru_maxrss is the only portable source
            self.method = "ru_maxrss"
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.baseline_kib = rss
        self.mib = 0.0
        return self

    def __exit__(self, *exc) -> None:
        if self.method == "VmHWM-reset":
            peak = _status_kib("VmHWM") or 0
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.mib = max(0, peak - self.baseline_kib) / 1024.0


class CudaPeakMemory:
    """The CUDA counterpart of :class:`PeakMemory`: ``max_memory_allocated`` over the region minus
    what was allocated on entry (exact for tensors; the caching allocator's reserve is not counted)."""

    method = "cuda-max-allocated"

    def __enter__(self) -> "CudaPeakMemory":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.baseline = torch.cuda.memory_allocated()
        self.mib = 0.0
        return self

    def __exit__(self, *exc) -> None:
        import torch

        torch.cuda.synchronize()
        self.mib = (torch.cuda.max_memory_allocated() - self.baseline) / 2 ** 20


@contextmanager
def timed(sink: dict, key: str, synchronize=None):
    """Adds the wall seconds of the block to ``sink[key]`` (list of repeats); ``synchronize`` (e.g.
    ``torch.cuda.synchronize``) is called before reading the clock at both ends."""
    if synchronize:
        synchronize()
    start = time.perf_counter()
    yield
    if synchronize:
        synchronize()
    sink.setdefault(key, []).append(time.perf_counter() - start)


def emit(result: dict) -> None:
    """Worker side: print one JSON result line that :func:`run_worker` picks up."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_worker(script: Path, args: list[str], *, timeout_s: float = 1800, env: dict | None = None) -> dict:
    """Run ``python script --worker args`` in a fresh interpreter; return its result dict, or
    ``{"error": ...}`` if it failed (an out-of-memory kill is reported, not hidden)."""
    command = [sys.executable, str(script), "--worker", *args]
    python_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    full_env = {**os.environ, "PYTHONPATH": python_path, "MALLOC_MMAP_THRESHOLD_": "1048576", **(env or {})}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=full_env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout_s:.0f}s"}
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    reason = f"exit {done.returncode}" + (" (killed: out of memory?)" if done.returncode in (-9, 137) else "")
    return {"error": reason, "stderr_tail": done.stderr[-1500:]}


def machine_line() -> str:
    """One line naming the machine and the date, for the tables and RESULTS.md."""
    try:
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{mem_kib / 1024 ** 2:.0f} GiB"
    except (OSError, ValueError, IndexError):
        memory = "? GiB"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{platform.node()} | {os.cpu_count()} cores | {memory} | {platform.machine()} | "
            f"python {platform.python_version()} | load(1m) {load:.2f} | {stamp}")


def table(headers: list[str], rows: list[list], *, floatfmt: str = "{:.3g}") -> str:
    """Markdown table (prints readably in a terminal too)."""
    def cell(value) -> str:
        if isinstance(value, float):
            return floatfmt.format(value)
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else 0.5 * (ordered[middle - 1] + ordered[middle])
