"""The sandbox scores honest code right and accidents 0 with a reason naming what happened.

Honest programs (numpy, pandas, scipy, sympy and the standard modules generated code uses; file
operations inside the working folder) pass; wrong ones fail with the program's own failure as
the reason, never a sandbox artefact. Where no isolation can be had the sandbox refuses to run
code, and the weak mode runs only on explicit opt-in and says so in every reason.
"""

from __future__ import annotations

import pytest
from sandbox_support import MODE, requires_isolation

from evaluation import sandbox_isolation
from evaluation.sandbox import SandboxUnavailable, run_program
from evaluation.sandbox_runner import decode, encode
from evaluation.scorers import score_code, score_output

HONEST = {
    "numpy": ("import numpy as np\ndef f(xs):\n    return float(np.mean(np.array(xs)))",
              "assert f([1, 2, 3]) == 2.0"),
    "pandas": ("import pandas as pd\ndef f(xs):\n    frame = pd.DataFrame({'x': xs})\n"
               "    return frame.groupby(frame.x % 2).x.sum().to_dict()",
               "assert f([1, 2, 3, 4]) == {0: 6, 1: 4}"),
    "scipy": ("from scipy.special import comb\ndef f(n, k):\n    return comb(n, k, exact=True)",
              "assert f(10, 3) == 120"),
    "sympy": ("import sympy\ndef f(n):\n    return sympy.isprime(n)",
              "assert f(97) is True and f(91) is False"),
    "stdlib": ("import re, math, heapq, functools, itertools, collections\n"
               "def f(text):\n    words = re.findall(r'[a-z]+', text)\n"
               "    counts = collections.Counter(words)\n"
               "    top = heapq.nlargest(2, counts.items(), key=lambda kv: (kv[1], kv[0]))\n"
               "    pairs = list(itertools.combinations(sorted(counts), 2))\n"
               "    product = functools.reduce(lambda a, b: a * b, counts.values(), 1)\n"
               "    return top, len(pairs), product, math.isqrt(17)",
               "assert f('a b a c b a') == ([('a', 3), ('b', 2)], 3, 6, 4)"),
    "numpy scalars": ("import numpy as np\ndef f(x):\n    return np.int64(x) * 2, np.float32(0.5),"
                      " np.bool_(True)", "assert f(3) == (6, 0.5, True)"),
    "files": ("import os, pathlib, tempfile, shutil\n"
              "os.makedirs('a/b', exist_ok=True)\npathlib.Path('c/d').mkdir(parents=True)\n"
              "pathlib.Path('a/b/x.txt').write_text('hi')\nos.chmod('a/b/x.txt', 0o600)\n"
              "os.rename('a/b/x.txt', 'c/d/y.txt')\nshutil.rmtree('a')\n"
              "with tempfile.NamedTemporaryFile('w', delete=False) as handle:\n"
              "    handle.write('t')\n"
              "def f():\n    return pathlib.Path('c/d/y.txt').read_text(), os.path.exists('a')",
              "assert f() == ('hi', False)"),
}


@requires_isolation
@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_programs_pass(name: str) -> None:
    code, tests = HONEST[name]
    result = run_program(code, tests, timeout_s=60)
    assert result.passed, (result.reason, result.stderr_tail, result.judge_tail)
    assert result.isolation == MODE


@requires_isolation
def test_wrong_programs_fail_with_what_they_did() -> None:
    cases = [
        ("def f(x):\n    return x", "assert f(3) == 6, 'f(3)'", "assertion_failed: AssertionError: f(3)"),
        ("def f(x):\n    raise KeyError(x)", "assert f(3) == 6", "program_raised: KeyError: 3"),
        ("def f(:", "", "syntax_error: SyntaxError"),
        ("def f(x):\n    return x\nexit(0)", "assert f(1) == 1", "exit_called: SystemExit(0)"),
        ("import os\nos._exit(3)", "", "program_ended: the program exited with status 3"),
        ("x = 1 / 0", "", "program_raised: ZeroDivisionError: division by zero (while loading"),
        ("def f(x):\n    return x", "f(lambda: 1)", "not_plain_data: the tests passed a value"),
    ]
    for code, tests, reason in cases:
        result = run_program(code, tests)
        assert not result.passed and result.reason.startswith(reason), (reason, result.reason)


@requires_isolation
def test_exceptions_cross_as_their_builtin_type() -> None:
    code = "def f(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x"
    tests = "try:\n    f(-1)\nexcept ValueError as e:\n    assert str(e) == 'negative'\nassert f(2) == 2"
    assert run_program(code, tests).passed


@requires_isolation
def test_limits_are_named_in_the_reason() -> None:
    assert run_program("while True:\n    pass", "", timeout_s=1.5).reason == "timeout"
    hog = "blocks = []\nfor _ in range(64):\n    blocks.append(bytearray(64 * 1024 * 1024))"
    assert run_program(hog, "", memory_mb=256).reason.startswith("memory_limit")
    flood = "import sys\nfor _ in range(64):\n    sys.stdout.write('x' * 1_000_000)"
    flooded = run_program(flood, "")
    assert flooded.reason == "output_limit" and len(flooded.stdout_tail) <= 2000
    big = "open('big', 'wb').write(b'x' * (32 * 1024 * 1024))"
    assert run_program(big, "").reason.startswith("file_size_limit")
    many = "\n".join(f"open('f{i}', 'wb').write(b'x' * 15 * 1024 * 1024)" for i in range(6))
    assert run_program(many, "").reason.startswith("disk_limit")


def test_plain_data_codec_round_trips_exact_types() -> None:
    values = [None, True, 0, -(2**80), 1.5, float("inf"), "s", b"b", bytearray(b"y"), 1 + 2j,
              [1, (2, 3)], {"k": {4, 5}}, frozenset({6}), (), {(1, 2): [None]}]
    for value in values:
        again = decode(encode(value))
        assert again == value and type(again) is type(value)


@requires_isolation
def test_score_code_and_score_output_record_the_mode() -> None:
    text = "Here:\n```python\ndef add(a, b):\n    return a + b\n```\n```python\nbroken(\n```"
    score, code, reason = score_code(text, "assert add(2, 3) == 5")
    assert (score, reason) == (1.0, f"passed [sandbox: {MODE}]") and "broken" not in code
    metadata = {"tests": ["assert add(1, 1) == 3"], "test_setup_code": "import math"}
    outcome = score_output("mbpp", "", metadata, text)
    assert outcome.metrics["pass_at_1"] == 0.0
    assert outcome.reason.startswith("assertion_failed") and outcome.reason.endswith(f"[sandbox: {MODE}]")


@requires_isolation
def test_setup_code_runs_on_both_sides() -> None:
    metadata = {"tests": ["assert area(2) == 4 * math.pi"], "test_imports": ["import math"]}
    # The program relies on the test's import, as it would when run in one interpreter.
    outcome = score_output("mbpp", "", metadata, "def area(r):\n    return math.pi * r * r")
    assert outcome.metrics["pass_at_1"] == 1.0, outcome.reason


def test_refuses_without_isolation_unless_opted_in(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on PATH: the real probe fails
    monkeypatch.delenv("UNISD_SANDBOX", raising=False)
    sandbox_isolation._probe.cache_clear()
    try:
        with pytest.raises(SandboxUnavailable, match="bubblewrap.*UNISD_SANDBOX=processes"):
            run_program("def f():\n    return 1", "assert f() == 1")
        monkeypatch.setenv("UNISD_SANDBOX", "processes")
        assert sandbox_isolation.describe_mode() == "processes"
        passed = run_program("def f():\n    return 1", "assert f() == 1")
        assert passed.passed and passed.isolation == "processes"
        always_equal = "class A:\n    def __eq__(self, other):\n        return True\ndef f():\n    return A()"
        assert run_program(always_equal, "assert f() == 1").reason.startswith("not_plain_data")
        assert score_code("def f():\n    return 2", "assert f() == 1")[2].endswith("[sandbox: processes]")
    finally:
        sandbox_isolation._probe.cache_clear()


def test_runs_are_tagged_with_the_sandbox_mode() -> None:
    from pipelines.mlflow_layout import provenance_tags

    assert provenance_tags()["unisd.sandbox.mode"] == sandbox_isolation.describe_mode()
    assert sandbox_isolation.describe_mode() in ("bwrap-root", "bwrap-user", "processes",
                                                 "unavailable")
