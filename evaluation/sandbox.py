"""Running generated code against its tests, isolated by the operating system (method.md 5).

The authors run generated code in-process; we do not. Each :func:`run_program` starts two
sandboxed processes (:mod:`evaluation.sandbox_isolation` builds them, :mod:`evaluation.
sandbox_runner` runs inside):

- the **program** process executes the generated code (and the dataset's setup code) and then
  answers calls to its top-level functions;
- the **judge** process, in a separate sandbox, runs the dataset's tests; every name the program
  defined is a proxy that sends plain-data arguments across a pipe and gets a plain-data result
  (or the exception) back. The judge writes the verdict to a pipe only the evaluator holds.

The evaluator decides: an item passes only when the judge exited cleanly with a ``passed``
verdict before the wall-clock deadline, within the output limit. Whatever else happens scores 0
with a reason naming what the program did: ``assertion_failed`` (a test failed), ``error`` (the
tests raised, e.g. on a wrong return type), ``program_raised: ValueError: ...``, ``syntax_error``,
``exit_called``, ``program_ended`` (it exited or was killed mid-test), ``not_plain_data`` (it
returned an object, not data), ``timeout``, ``cpu_time_limit``, ``memory_limit``,
``file_size_limit``, ``disk_limit``, ``output_limit``; ``protocol_error`` when it wrote garbage
into its reply channel, ``harness_failed`` when the judge itself broke. The isolation mode is
appended by :func:`evaluation.scorers.score_code`.

Threat model. Guaranteed in the bwrap modes (given a kernel without an exploitable bug): the
program cannot read or write the evaluator's files or environment, cannot see or signal any
process outside its sandbox, has no network, cannot outlive the item (its pid namespace dies
with it), is bounded in CPU time, memory, processes, file size and working-folder size, and
cannot change the verdict: it shares no interpreter, memory or descriptor with the judge, and
all it can send is plain data, i.e. a return value it could have returned honestly.
Not guaranteed: protection from kernel exploits (no seccomp filter), a bound on kernel memory
(no cgroup: RLIMIT_AS bounds each process, but SysV shared memory in the sandbox's own IPC
namespace is not counted until the namespace dies with the item), protection from side channels,
or from a program that finds the expected outputs some other way (guessing, memorised answers);
the judge trusts the dataset's test code. In the weak ``processes`` mode (explicit opt-in) only
the limits and the process boundary of the verdict hold: the program runs as the evaluator's
user, can read what it can read, reach the network, and signal or trace the judge.

The former ``sys.addaudithook`` guard is gone: it blocked honest code (numpy's ctypes load) and
the OS layer makes its refusals redundant.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from evaluation.sandbox_isolation import (
    WEAK_MODE,
    SandboxUnavailable,
    isolation_mode,
    runner_command,
    sandbox_environment,
)

__all__ = ["ExecutionResult", "SandboxUnavailable", "isolation_mode", "run_program"]

OUTPUT_LIMIT_MB = 16
FILE_LIMIT_MB = 16
PROCESS_LIMIT = 64
TAIL_BYTES = 2000
VERDICT_LIMIT = 64 * 1024


@dataclass(frozen=True)
class ExecutionResult:
    """Outcome of one program: ``passed`` only when the judge saw every test pass."""

    passed: bool
    reason: str
    isolation: str = ""
    duration_s: float = 0.0
    stdout_tail: str = ""
    stderr_tail: str = ""
    judge_tail: str = ""


class _Stream:
    """Bytes read from one pipe: the first ``head`` bytes or the last ``tail``, and the count."""

    def __init__(self, head: int = 0, tail: int = TAIL_BYTES) -> None:
        self.kept = bytearray()
        self.total = 0
        self.head, self.tail = head, tail

    def add(self, data: bytes) -> None:
        self.total += len(data)
        if self.head:
            self.kept += data[: max(0, self.head - len(self.kept))]
        else:
            self.kept += data
            del self.kept[: -self.tail]

    def text(self) -> str:
        return self.kept.decode("utf-8", "replace")


@dataclass
class _Run:
    program: subprocess.Popen
    judge: subprocess.Popen
    streams: dict[int, tuple[str, _Stream]]
    verdict_fd: int


def run_program(
    code: str, tests: str, *, setup: str = "", timeout_s: float = 10.0, memory_mb: int = 1024
) -> ExecutionResult:
    """Run ``code`` (+ ``setup``) in one sandbox and ``tests`` in another; judge outside both.

    ``tests`` is the whole test program (it should include ``setup`` if it needs it); ``setup``
    also runs after the code in the program's process (MBPP's ``test_setup_code``).
    Raises :class:`SandboxUnavailable` when no isolation can be had and none was opted out of.
    """
    mode = isolation_mode()
    limits = json.dumps({"cpu_s": max(1, int(timeout_s) + 1), "memory_mb": memory_mb,
                         "file_mb": FILE_LIMIT_MB, "nproc": PROCESS_LIMIT})
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="unisd-sandbox-") as scratch:
        sources = {"program": f"{code}\n\n{setup}\n", "judge": f"{tests}\n"}
        for role, text in sources.items():
            Path(scratch, f"{role}.py").write_text(text, encoding="utf-8")
            Path(scratch, role).mkdir(mode=0o700)  # the weak mode's working folders
        run = _start(mode, limits, scratch)
        try:
            verdict, timed_out, overflow = _supervise(run, started + timeout_s)
        finally:
            _stop(run)
    streams = {name: stream for name, stream in run.streams.values()}
    reason = _reason(run, verdict, timed_out, overflow, mode, streams["judge"].text())
    return ExecutionResult(
        passed=(reason == "passed" and run.judge.returncode == 0),
        reason=reason,
        isolation=mode,
        duration_s=time.monotonic() - started,
        stdout_tail=streams["stdout"].text(),
        stderr_tail=streams["stderr"].text(),
        judge_tail=streams["judge"].text(),
    )


def _start(mode: str, limits: str, scratch: str) -> _Run:
    to_program_r, to_program_w = os.pipe()
    to_judge_r, to_judge_w = os.pipe()
    verdict_r, verdict_w = os.pipe()
    outputs = {name: os.pipe() for name in ("stdout", "stderr", "judge")}
    common = {"start_new_session": True, "cwd": "/", "close_fds": True}
    started: list[subprocess.Popen] = []
    try:
        with open(Path(scratch, "program.py"), "rb") as source:
            program = subprocess.Popen(
                runner_command(mode, "program", limits, [to_program_r, to_judge_w],
                               str(Path(scratch, "program"))),
                stdin=source, stdout=outputs["stdout"][1], stderr=outputs["stderr"][1],
                pass_fds=(to_program_r, to_judge_w),
                env=sandbox_environment(str(Path(scratch, "program"))), **common,
            )
        started.append(program)
        with open(Path(scratch, "judge.py"), "rb") as source:
            judge = subprocess.Popen(
                runner_command(mode, "judge", limits, [to_program_w, to_judge_r, verdict_w],
                               str(Path(scratch, "judge"))),
                stdin=source, stdout=outputs["judge"][1], stderr=subprocess.STDOUT,
                pass_fds=(to_program_w, to_judge_r, verdict_w),
                env=sandbox_environment(str(Path(scratch, "judge"))), **common,
            )
    except BaseException:
        for process in started:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for descriptor in (verdict_r, *(read for read, _ in outputs.values())):
            os.close(descriptor)
        raise
    finally:
        for descriptor in (to_program_r, to_program_w, to_judge_r, to_judge_w, verdict_w,
                           *(write for _, write in outputs.values())):
            os.close(descriptor)
    streams = {read: (name, _Stream()) for name, (read, _) in outputs.items()}
    return _Run(program, judge, streams, verdict_r)


def _supervise(run: _Run, deadline: float) -> tuple[bytes, bool, bool]:
    """Read every pipe (poll-based, no descriptor-number limit) until the judge has ended and
    its verdict pipe closed, the deadline passes or the output exceeds its limit.
    Returns (verdict bytes, timed_out, overflow)."""
    verdict = _Stream(head=VERDICT_LIMIT)
    selector = selectors.DefaultSelector()
    for descriptor in (*run.streams, run.verdict_fd):
        os.set_blocking(descriptor, False)
        selector.register(descriptor, selectors.EVENT_READ)
    limit, grace_until = OUTPUT_LIMIT_MB * 1024 * 1024, None
    try:
        while True:
            now = time.monotonic()
            if grace_until is None and run.judge.poll() is not None:
                grace_until = now + 2.0  # the judge is gone: collect what its pipe still holds
            if grace_until is None and now >= deadline:
                return bytes(verdict.kept), True, False
            if grace_until is not None and (
                now >= grace_until or run.verdict_fd not in selector.get_map()
            ):
                return bytes(verdict.kept), False, False
            wait = 0.05 if grace_until else min(deadline - now, 0.5)
            for key, _ in selector.select(timeout=wait):
                _drain(selector, key.fd, run.streams.get(key.fd, ("verdict", verdict))[1])
            if sum(stream.total for _, stream in run.streams.values()) > limit:
                return bytes(verdict.kept), False, True
    finally:
        selector.close()
        os.close(run.verdict_fd)
        for descriptor in run.streams:
            os.close(descriptor)


def _drain(selector: selectors.BaseSelector, descriptor: int, stream: _Stream) -> None:
    try:
        data = os.read(descriptor, 65536)
    except BlockingIOError:
        return
    if not data:
        selector.unregister(descriptor)
        return
    stream.add(data)


def _stop(run: _Run) -> None:
    """Kill both sandboxes (their pid namespaces die with them) and reap them."""
    if run.judge.returncode is not None and run.program.poll() is None:
        try:  # a program that ended on its own: give its exit status a moment to arrive
            run.program.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
    for process in (run.program, run.judge):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _signal_of(returncode: int | None, mode: str) -> int | None:
    """The signal that ended a process: bwrap reports 128 + signal, Popen a negative number."""
    if returncode is None:
        return None
    if returncode < 0:
        return -returncode
    if mode != WEAK_MODE and returncode > 128:
        return returncode - 128
    return None


def _program_end_reason(returncode: int | None, mode: str) -> str:
    number = _signal_of(returncode, mode)
    if number == signal.SIGXCPU:
        return "cpu_time_limit"
    if number == signal.SIGXFSZ:
        return "file_size_limit"
    if number is not None:
        name = signal.Signals(number).name if number in signal.valid_signals() else str(number)
        return f"program_ended: killed by {name}"
    return f"program_ended: the program exited with status {returncode} before the tests finished"


def _reason(run: _Run, verdict: bytes, timed_out: bool, overflow: bool, mode: str,
            judge_tail: str) -> str:
    if timed_out:
        return "timeout"
    if overflow:
        return "output_limit"
    try:
        parsed = json.loads(verdict.decode("utf-8", "replace"))
        status, detail = str(parsed["status"]), str(parsed.get("detail", ""))
    except (ValueError, KeyError, TypeError):
        last = next((line for line in reversed(judge_tail.splitlines()) if line.strip()), "")
        return (f"harness_failed: the judge exited with status {run.judge.returncode} and no "
                f"verdict ({last[-200:] or 'no output'})")
    if status == "program_ended":
        return _program_end_reason(run.program.returncode, mode)
    return status if not detail else f"{status}: {detail}"
