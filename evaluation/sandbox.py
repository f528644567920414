"""Isolated execution of generated code with its tests (method.md 5; the authors run it in-process).

Each call of :func:`run_program` runs ``code + tests`` in a fresh ``python -I -B`` process
(:mod:`evaluation.sandbox_runner`) and returns an :class:`ExecutionResult`; whatever the program
does, the evaluator survives and the item scores 0 with the reason recorded.

Layers, outermost first:
- ``unshare --net --pid --fork --kill-child`` when the kernel allows it (probed once; the result
  is ``ExecutionResult.isolation``): no network interface but a downed loopback, and a PID
  namespace in which the program cannot see or signal the evaluator, and whose processes die with
  its first process. Without it the socket guard below is the only network barrier.
- A new session (process group) that the evaluator SIGKILLs after every run, so leftovers die.
- A wall-clock timeout (evaluator side) and RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_FSIZE (output
  and file size: stdout/stderr go to files in the temporary directory, never into our memory),
  RLIMIT_NOFILE, RLIMIT_CORE and RLIMIT_NPROC (the last does not bind root, which we run as here).
- An empty temporary working directory that is also HOME and TMPDIR, and a scrubbed environment.
- A ``sys.addaudithook`` guard installed before the program runs, the one layer that binds root:
  it refuses fork/exec/spawn/system/subprocess (so a fork bomb stops at its first fork), signals
  to any process, socket connect/bind/send/resolve, ctypes loading, and any open-for-write,
  remove, rmdir, rename, chmod, mkdir, link or truncate whose resolved path is outside the
  temporary directory. A refusal is sticky: the item scores 0 even if the program catches it.

Threat model, honestly: this guards against accidents of generated code (an ``rm -rf``, a
runaway loop, a fork, a stray request), not against code written to escape; ctypes-free C
extensions, ``/proc`` tricks or a writable mount would get through. Use a container or VM for
untrusted code at scale.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RUNNER = Path(__file__).with_name("sandbox_runner.py")
OUTPUT_LIMIT_MB = 16
TAIL_CHARS = 2000


@dataclass(frozen=True)
class ExecutionResult:
    """Outcome of one program: ``passed`` only when every test ran and none failed."""

    passed: bool
    reason: str
    isolation: str = ""
    duration_s: float = 0.0
    stdout_tail: str = ""
    stderr_tail: str = ""


@functools.lru_cache(maxsize=1)
def namespace_prefix() -> tuple[str, ...]:
    """The ``unshare`` command prefix when this kernel lets us create the namespaces, else ()."""
    command = ("unshare", "--net", "--pid", "--fork", "--kill-child")
    if shutil.which("unshare") is None:
        return ()
    try:
        probe = subprocess.run(
            (*command, sys.executable, "-I", "-c", "pass"),
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    return command if probe.returncode == 0 else ()


def _scrubbed_environment(workdir: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "1",
    }


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - TAIL_CHARS))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _read_verdict(read_fd: int, nonce: str) -> dict | None:
    chunks = []
    while select.select([read_fd], [], [], 0)[0]:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    for line in b"".join(chunks).decode("utf-8", "replace").splitlines():
        try:
            verdict = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(verdict, dict) and verdict.get("nonce") == nonce:
            return verdict
    return None


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _reason_without_verdict(timed_out: bool, returncode: int | None, stderr: str) -> str:
    if timed_out:
        return "timeout"
    if "MemoryError" in stderr:
        return "memory_limit"
    if returncode is not None and returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else ""
        if name == "SIGXCPU":
            return "cpu_time_limit"
        if name == "SIGXFSZ":
            return "output_limit"
        return f"killed ({name or returncode})"
    if "File too large" in stderr or "EFBIG" in stderr:
        return "output_limit"
    return f"no_verdict (exit status {returncode}; the program ended before its tests finished)"


def run_program(
    code: str, tests: str, *, timeout_s: float = 10.0, memory_mb: int = 1024
) -> ExecutionResult:
    """Run ``code`` followed by ``tests`` in an isolated process; passed iff all tests ran clean."""
    workdir = tempfile.mkdtemp(prefix="unisd-sandbox-")
    nonce = secrets.token_hex(16)
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    try:
        Path(workdir, "program.py").write_text(f"{code}\n\n{tests}\n", encoding="utf-8")
        limits = {
            "cpu_s": max(1, int(timeout_s) + 1),
            "memory_mb": memory_mb,
            "file_mb": OUTPUT_LIMIT_MB,
            "nproc": 64,
        }
        command = (
            *namespace_prefix(),
            sys.executable, "-I", "-B", str(RUNNER), workdir, json.dumps(limits), str(write_fd),
        )
        stdout_path, stderr_path = Path(workdir, ".stdout"), Path(workdir, ".stderr")
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=stdout, stderr=stderr,
                cwd=workdir, env=_scrubbed_environment(workdir), start_new_session=True,
                pass_fds=(write_fd,),
            )
        os.close(write_fd)
        write_fd = -1
        timed_out = _communicate(process, nonce, timeout_s)
        verdict = _read_verdict(read_fd, nonce)
        stdout_tail, stderr_tail = _tail(stdout_path), _tail(stderr_path)
        if verdict is not None and not timed_out:
            status, detail = verdict["status"], verdict.get("detail", "")
            reason = status if not detail else f"{status}: {detail}"
        else:
            reason = _reason_without_verdict(timed_out, process.returncode, stderr_tail)
        return ExecutionResult(
            passed=verdict is not None and verdict["status"] == "passed" and not timed_out,
            reason=reason,
            isolation="namespaces+guard" if namespace_prefix() else "guard",
            duration_s=time.monotonic() - started,
            stdout_tail=stdout_tail,
            stderr_tail=stderr_tail,
        )
    finally:
        for descriptor in (read_fd, write_fd):
            if descriptor >= 0:
                os.close(descriptor)
        shutil.rmtree(workdir, ignore_errors=True)


def _communicate(process: subprocess.Popen, nonce: str, timeout_s: float) -> bool:
    """Send the nonce, wait up to ``timeout_s``; kill the whole group either way. True on timeout."""
    timed_out = False
    try:
        process.stdin.write((nonce + "\n").encode())
        process.stdin.close()
    except (BrokenPipeError, OSError):
        pass
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    _kill_group(process)
    return timed_out
