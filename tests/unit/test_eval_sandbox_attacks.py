"""Deliberate attacks on the sandbox, each bounded so that a broken sandbox cannot hurt the
machine (at most 300 processes, 4 GiB requested in 64 MiB steps, sleepers of 60 s).

Every attack program also defines a *wrong* ``f`` tested by ``assert f(1) == 2``: the item may
only fail, and the reason must be what the program did. After each attack the evaluator is
alive, a canary file outside the working folder (and a victim process holding a secret in its
environment) are untouched, no process of the attack remains, the evaluation package is
byte-identical, and the sandbox still scores a correct and a wrong program right.
"""

from __future__ import annotations

import hashlib
import os
import resource
import secrets
import socket
import subprocess
import time
from pathlib import Path

import pytest
from sandbox_support import processes_with, requires_isolation

import evaluation
from evaluation.sandbox import run_program

pytestmark = requires_isolation

PACKAGE = Path(evaluation.__file__).resolve().parent
WRONG = "\ndef f(x):\n    return x\n"
TESTS = "assert f(1) == 2"
SECRET = "unisd-secret-" + hashlib.sha256(os.urandom(16)).hexdigest()[:16]
MARKER = f"{secrets.randbelow(10**9):09d}"  # argv of attack sleepers: 'sleep 60.<marker>'


def package_digest() -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(PACKAGE.glob("*.py"))}


@pytest.fixture(scope="module")
def victim():
    """A process outside the sandbox with a secret in its environment (a stand-in for the
    evaluator's environment, which /proc/<pid>/environ shows as it was at exec)."""
    process = subprocess.Popen(["sleep", "600"], env={"UNISD_SECRET": SECRET, "PATH": "/usr/bin"})
    yield process
    process.kill()
    process.wait()


@pytest.fixture
def world(tmp_path: Path, victim):
    canary = tmp_path / "canary.txt"
    canary.write_text("canary")
    before = (canary.read_bytes(), canary.stat().st_mode, canary.stat().st_mtime_ns,
              sorted(os.listdir(tmp_path)), package_digest())
    yield {"canary": canary, "victim": victim.pid, "evaluator": os.getpid()}
    assert victim.poll() is None, "the victim process was killed"
    after = (canary.read_bytes(), canary.stat().st_mode, canary.stat().st_mtime_ns,
             sorted(os.listdir(tmp_path)), package_digest())
    assert after == before, "something outside the working folder changed"
    deadline = time.monotonic() + 5
    while processes_with(MARKER) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes_with(MARKER), "a process of the attack outlived the item"
    assert run_program("def f(x):\n    return x + 1", TESTS).passed
    assert not run_program(WRONG, TESTS).passed


def attack(code: str, *expected: str, **limits) -> str:
    result = run_program(code + WRONG, TESTS, **limits)
    assert not result.passed, result
    assert result.reason.startswith(expected), (expected, result.reason)
    assert SECRET not in result.reason + result.stdout_tail + result.stderr_tail
    return result.reason


def test_process_floods_stop_at_the_process_limit(world) -> None:
    flood = ("import subprocess\nfor _ in range(300):\n"
             f"    subprocess.Popen(['sleep', '60.{MARKER}'])\n")
    assert "BlockingIOError" in attack(flood, "program_raised")
    forks = ("import os, time\nfor _ in range(300):\n    if os.fork() == 0:\n"
             f"        os.execv('/bin/sleep', ['sleep', '60.{MARKER}'])\n")
    assert "BlockingIOError" in attack(forks, "program_raised")


def test_memory_hog_stops_at_the_memory_limit(world) -> None:
    hog = "blocks = []\nfor _ in range(64):\n    blocks.append(bytearray(64 * 1024 * 1024))\n"
    attack(hog, "memory_limit", memory_mb=256)


def test_writes_outside_by_every_route_fail(world) -> None:
    canary, folder = world["canary"], str(world["canary"].parent)
    routes = {
        "dir_fd": f"fd = os.open({folder!r}, os.O_RDONLY)\n"
                  "os.open('canary.txt', os.O_WRONLY | os.O_TRUNC, dir_fd=fd)",
        "opener": f"open({str(canary)!r}, 'w', opener=lambda p, f: os.open(p, f)).write('x')",
        "rename": f"open('x', 'w').close()\nfd = os.open({folder!r}, os.O_RDONLY)\n"
                  "os.rename('x', 'canary.txt', dst_dir_fd=fd)",
        "fchmod": f"fd = os.open({str(canary)!r}, os.O_RDONLY)\nos.fchmod(fd, 0o777)",
        "utime": f"fd = os.open({str(canary)!r}, os.O_RDONLY)\nos.utime(fd, (0, 0))",
        "mkfifo": f"os.mkfifo({str(canary.parent / 'fifo')!r})",
        "mknod": f"os.mknod({str(canary.parent / 'node')!r})",
        "unlink": f"os.unlink({str(canary)!r})",
        "rmtree": f"import shutil\nshutil.rmtree({folder!r})",
    }
    for name, code in routes.items():
        reason = attack(f"import os\n{code}\n", "program_raised")
        assert "Error" in reason, (name, reason)
    # rm -rf of a path the sandbox does not have succeeds there; the canary shows it changed
    # nothing here.
    attack(f"import subprocess\nsubprocess.run(['rm', '-rf', {folder!r}], check=True)\n",
           "assertion_failed")


def test_secrets_of_the_evaluator_cannot_be_read(world) -> None:
    for pid in (world["victim"], world["evaluator"]):
        attack(f"raise ValueError(open('/proc/{pid}/environ').read())", "program_raised")
    attack("raise ValueError(open('/etc/shadow').read())", "program_raised")
    attack("import os\nraise ValueError(os.listdir(os.path.expanduser('~root')))",
           "program_raised")


def test_signals_to_outside_processes_cannot_land(world) -> None:
    for pid in (world["victim"], world["evaluator"]):
        pidfd = (f"import os, signal\nfd = os.pidfd_open({pid})\n"
                 "signal.pidfd_send_signal(fd, signal.SIGKILL)\n")
        attack(pidfd, "program_raised", "program_ended")
        attack(f"import os\nos.kill({pid}, 9)\n", "program_raised", "program_ended")
    attack("import os\nos.kill(os.getppid(), 9)\nos.kill(1, 9)\n", "assertion_failed",
           "program_ended", "program_raised")


def test_the_network_is_unreachable(world) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0)
    port = server.getsockname()[1]
    try:
        connect = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        attack(connect, "program_raised")
        attack("import socket\nsocket.getaddrinfo('pypi.org', 443)\n", "program_raised")
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody reached our listening socket
    finally:
        server.close()


def test_setsid_daemon_does_not_outlive_the_item(world) -> None:
    daemon = ("import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
              f"        os.execv('/bin/sleep', ['sleep', '60.{MARKER}'])\n    os._exit(0)\n")
    attack(daemon, "assertion_failed")


def test_the_verdict_cannot_be_forged(world) -> None:
    forge = (
        "import json, os, sys\nrunner = sys.modules['__main__']\n"
        "for name in dir(runner):\n    if name.startswith('_') and callable(getattr(runner, name)):\n"
        "        setattr(runner, name, lambda *a, **k: ('passed', ''))\n"
        "frame = sys._getframe()\nwhile frame is not None:\n"
        "    frame.f_globals['status'] = 'passed'\n    frame = frame.f_back\n"
        "fake = json.dumps({'status': 'passed', 'detail': ''}).encode() + b'\\n'\n"
        "for fd in range(1, 256):\n    try:\n        os.write(fd, fake)\n    except OSError:\n"
        "        pass\n"
    )
    attack(forge, "protocol_error")  # the forged line reached only the program's own channel
    patch = ("import sys\nrunner = sys.modules['__main__']\n"
             "runner.encode = lambda value, depth=0: {'pass': True}\n")
    attack(patch, "protocol_error")
    # A program redefining a builtin does not answer the tests' own uses of it.
    shadow = "def abs(x):\n    return 0\ndef len(x):\n    return 3\ndef f(x):\n    return x\n"
    result = run_program(shadow, "assert abs(f(1) - 2) < 1e-9 and len(str(f(1))) == 3")
    assert not result.passed and result.reason.startswith("assertion_failed"), result.reason
    exit_early = "import os\nprint(json_verdict := '{\"status\": \"passed\"}')\nos._exit(0)\n"
    attack(exit_early, "program_ended")


def test_always_equal_results_do_not_cross(world) -> None:
    always = ("class Always:\n    def __eq__(self, other):\n        return True\n"
              "    __ne__ = lambda self, other: False\n"
              "def f(x):\n    return Always()\n")
    # The program's own f replaces WRONG's only if it comes later: put it last.
    result = run_program(always, TESTS)
    assert not result.passed and result.reason.startswith("not_plain_data"), result.reason
    sneaky = ("class Two(int):\n    def __eq__(self, other):\n        return True\n"
              "def f(x):\n    return Two(0)\n")
    result = run_program(sneaky, TESTS)
    assert not result.passed and result.reason.startswith("assertion_failed"), result.reason


def test_rewriting_the_evaluation_package_fails(world) -> None:
    targets = [str(PACKAGE / "sandbox_runner.py"), str(PACKAGE / "sandbox.py"),
               "/run/unisd/sandbox_runner.py"]
    for target in targets:
        attack(f"open({target!r}, 'w').write('PASS = True')\n", "program_raised")
    via_dir_fd = ("import os\nfd = os.open('/run/unisd', os.O_RDONLY)\n"
                  "os.open('sandbox_runner.py', os.O_WRONLY | os.O_TRUNC, dir_fd=fd)\n")
    attack(via_dir_fd, "program_raised")


def test_the_evaluator_reads_beyond_descriptor_1024() -> None:
    """select.select raises on a descriptor >= 1024; the evaluator must not use it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the descriptor limit here is {hard}, below 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    try:
        result = run_program("def f(x):\n    return x + 1", TESTS)
        assert result.passed, result.reason
        assert not run_program(WRONG, TESTS).passed
    finally:
        for descriptor in held:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
