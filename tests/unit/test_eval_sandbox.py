"""The sandbox survives hostile-by-accident programs: each scores 0 with a reason, the evaluator
lives on (a clean program still passes afterwards) and nothing outside the temporary directory
changes (a sentinel working tree and a sentinel HOME are compared byte for byte)."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from evaluation.sandbox import ExecutionResult, run_program
from evaluation.scorers import score_code


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes() if path.is_file() else b"<dir>"
        for path in sorted(root.rglob("*"))
    }


@pytest.fixture
def sentinel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fake working tree (our cwd) and a fake HOME, each holding files that must survive."""
    tree, home = tmp_path / "tree", tmp_path / "home"
    for root in (tree, home):
        (root / "sub").mkdir(parents=True)
        (root / "keep.txt").write_text("precious")
        (root / "sub" / "deep.txt").write_text("also precious")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tree)
    before = {"tree": snapshot(tree), "home": snapshot(home)}
    yield tree, home
    assert snapshot(tree) == before["tree"], "the working tree changed"
    assert snapshot(home) == before["home"], "HOME changed"


def assert_scored_zero(result: ExecutionResult, *expected_reasons: str) -> None:
    assert not result.passed
    assert result.reason, "a failure must carry a reason"
    assert any(word in result.reason for word in expected_reasons), result.reason
    # The evaluator is alive and the sandbox still works after the incident.
    assert run_program("def f(x):\n    return x + 1", "assert f(1) == 2", timeout_s=10).passed


def test_clean_program_passes_and_failing_test_fails(sentinel) -> None:
    assert run_program("def f(x):\n    return 2 * x", "assert f(3) == 6").passed
    failed = run_program("def f(x):\n    return x", "assert f(3) == 6")
    assert not failed.passed and failed.reason.startswith("assertion_failed")


def test_infinite_loop(sentinel) -> None:
    assert_scored_zero(run_program("while True:\n    pass", "", timeout_s=1.5), "timeout", "cpu")


def test_fork_bomb(sentinel) -> None:
    bomb = "import os\nwhile True:\n    os.fork()"
    assert_scored_zero(run_program(bomb, "", timeout_s=3), "os.fork")
    shell_bomb = "import os\nos.system(':(){ :|:& };:')"
    assert_scored_zero(run_program(shell_bomb, "", timeout_s=3), "os.system")


def test_memory_hog(sentinel) -> None:
    hog = "blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 1024 * 1024))"
    assert_scored_zero(run_program(hog, "", timeout_s=10, memory_mb=256), "memory")


def test_write_outside_temporary_directory(sentinel) -> None:
    tree, home = sentinel
    code = (
        f"open({str(tree / 'keep.txt')!r}, 'w').write('overwritten')\n"
        f"open({str(home / 'new.txt')!r}, 'w').write('new')"
    )
    assert_scored_zero(run_program(code, ""), "open for write")


def test_deleting_tree_and_home_is_refused(sentinel) -> None:
    tree, home = sentinel
    code = (
        "import os, shutil\n"
        f"for path in ({str(tree)!r}, {str(home)!r}):\n"
        "    try:\n"
        "        shutil.rmtree(path)\n"
        "    except Exception:\n"
        "        pass\n"  # swallowing the refusal must not help
        f"os.remove({str(tree / 'keep.txt')!r})\n"
    )
    assert_scored_zero(run_program(code, ""), "shutil.rmtree", "os.remove")
    shell = f"import subprocess\nsubprocess.run(['rm', '-rf', {str(tree)!r}])"
    assert_scored_zero(run_program(shell, ""), "subprocess.Popen")
    # A relative deletion hits the sandbox's own empty directory, never our cwd.
    relative = "import os\nassert set(os.listdir('.')) <= {'program.py', '.stdout', '.stderr'}"
    assert run_program(relative, "").passed


def test_network_connection_is_refused(sentinel) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    accepted: list[object] = []

    def accept() -> None:
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)"
    result = run_program(code, "")
    thread.join()
    server.close()
    assert not accepted, "the program reached our listening socket"
    assert_scored_zero(result, "socket")


def test_killing_the_parent_is_refused(sentinel) -> None:
    code = f"import os, signal\nos.kill({os.getpid()}, signal.SIGKILL)\nos.kill(os.getppid(), 9)"
    assert_scored_zero(run_program(code, ""), "os.kill")


def test_huge_output_is_capped(sentinel) -> None:
    code = "import sys\nwhile True:\n    sys.stdout.write('x' * 1_000_000)"
    result = run_program(code, "", timeout_s=20)
    assert len(result.stdout_tail) <= 4000, "the output must not come back whole"
    assert_scored_zero(result, "output_limit")


def test_exit_before_the_tests_scores_zero(sentinel) -> None:
    good = "def f(x):\n    return x + 1\n"
    tests = "assert f(1) == 2"
    assert_scored_zero(run_program(good + "exit(0)", tests), "exit_called")
    assert_scored_zero(run_program(good + "import os\nos._exit(0)", tests), "no_verdict")
    assert_scored_zero(run_program(good + "print('passed')\nraise SystemExit", tests), "exit")


def test_syntax_error_and_score_code_use_the_first_python_block(sentinel) -> None:
    assert_scored_zero(run_program("def f(:", ""), "syntax_error")
    text = "Here:\n```python\ndef add(a, b):\n    return a + b\n```\n```python\nbroken(\n```"
    score, code, reason = score_code(text, "assert add(2, 3) == 5")
    assert (score, reason) == (1.0, "passed") and "broken" not in code


def test_guard_alone_still_refuses_without_namespaces(sentinel, monkeypatch) -> None:
    """Where unshare is not permitted (e.g. an unprivileged container) the audit guard is the
    barrier: network, forks and writes outside are still refused."""
    import evaluation.sandbox as sandbox

    monkeypatch.setattr(sandbox, "namespace_prefix", lambda: ())
    tree, _ = sentinel
    network = sandbox.run_program("import socket\nsocket.socket().connect(('127.0.0.1', 9))", "")
    assert network.isolation == "guard"
    assert_scored_zero(network, "socket.connect")
    assert_scored_zero(sandbox.run_program("import os\nos.fork()", ""), "os.fork")
    write = f"open({str(tree / 'x.txt')!r}, 'w')"
    assert_scored_zero(sandbox.run_program(write, ""), "open for write")
