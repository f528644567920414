"""The sandboxed side of :mod:`evaluation.sandbox`: one file, two roles, standard library only.

Run as ``python -I -B sandbox_runner.py <role> <limits-json> <workdir> <fd>...`` inside the
isolation :mod:`evaluation.sandbox_isolation` builds; never imported by the evaluator for anything
but its plain-data codec in tests.

- ``program`` (untrusted): reads the generated code (plus any test setup code) from stdin, sets
  its resource limits, executes it as ``__main__`` in the working folder, then serves calls: each
  request names one of its top-level callables with plain-data arguments, each reply carries the
  plain-data return value (or the exception the call raised).
- ``judge`` (trusted test code, in a *separate* sandbox): reads the tests from stdin, binds every
  top-level callable of the program (except names of builtins) as a proxy that calls across the
  pipe, runs the tests, and writes the verdict to a descriptor only the evaluator holds.

Only plain data crosses (None, bool, int, float, complex, str, bytes, list, tuple, dict, set,
frozenset; numpy scalars and subclasses of those types are converted on the program side). So
an object whose ``__eq__`` always says yes cannot reach the tests, and nothing the program does
inside its own interpreter (frames, ``sys.modules``, patched builtins) touches the judge's.

Departure from the usual harness (human-eval, MBPP's): there the tests run in the program's own
interpreter. Here arguments and results are copies, so a program mutating an argument in place is
invisible to the tests, a test passing a function or a class instance to the program fails with a
``not_plain_data`` reason, and the tests see only the program's callables (not its modules or
module-level values: the tests import what they use, as HumanEval's and MBPP's do).
"""

from __future__ import annotations

import base64
import builtins
import errno
import json
import os
import resource
import sys

FRAME_LIMIT = 16 * 1024 * 1024


class NotPlainData(TypeError):
    """A value that cannot cross the process boundary."""


class ProgramEnded(Exception):
    """The program's process closed its side of the channel (it exited or was killed)."""


class ProtocolError(Exception):
    """The program sent something that is not a well-formed reply."""


def encode(value: object, depth: int = 0) -> object:
    """Plain data -> a JSON-able tree with tagged containers (tuple, dict, set, bytes, ...)."""
    if depth > 500:
        raise NotPlainData("a value nested more than 500 levels deep")
    kind = type(value)
    if value is None or kind in (bool, str, float):
        return value
    if kind is int:
        return value if -(2**53) < value < 2**53 else {"I": format(value, "x")}
    if kind is list:
        return [encode(item, depth + 1) for item in value]
    if kind is tuple:
        return {"t": [encode(item, depth + 1) for item in value]}
    if kind is dict:
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if kind in (set, frozenset):
        tag = "s" if kind is set else "f"
        return {tag: [encode(item, depth + 1) for item in value]}
    if kind in (bytes, bytearray):
        return {"b" if kind is bytes else "B": base64.b64encode(value).decode("ascii")}
    if kind is complex:
        return {"c": [value.real, value.imag]}
    return encode(_plain_equivalent(value), depth + 1)


def _plain_equivalent(value: object) -> object:
    """The plain value an honest numeric or container subclass stands for (numpy scalars too)."""
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        return value.item()
    for base in (bool, int, float, complex, str, bytes, tuple, list, dict, frozenset, set):
        if isinstance(value, base):
            return base(value)
    raise NotPlainData(f"a value of type {type(value).__name__}")


def decode(node: object) -> object:
    """Inverse of :func:`encode`, for untrusted input: anything unexpected is a ProtocolError."""
    if node is None or type(node) in (bool, int, float, str):
        return node
    if type(node) is list:
        return [decode(item) for item in node]
    if type(node) is not dict or len(node) != 1:
        raise ProtocolError(f"unexpected {type(node).__name__} in a reply")
    ((tag, payload),) = node.items()
    try:
        if tag == "I":
            return int(payload, 16)
        if tag in ("t", "s", "f"):
            items = [decode(item) for item in payload]
            return {"t": tuple, "s": set, "f": frozenset}[tag](items)
        if tag == "d":
            return {decode(key): decode(value) for key, value in payload}
        if tag in ("b", "B"):
            data = base64.b64decode(payload, validate=True)
            return data if tag == "b" else bytearray(data)
        if tag == "c":
            return complex(float(payload[0]), float(payload[1]))
    except (TypeError, ValueError) as error:
        raise ProtocolError(f"malformed {tag!r} value: {error}") from None
    raise ProtocolError(f"unknown tag {tag!r}")


class Channel:
    """Newline-delimited JSON frames over two pipe descriptors, bounded in size."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._reader = os.fdopen(read_fd, "rb")
        self._writer = os.fdopen(write_fd, "wb")

    def send(self, message: dict) -> None:
        self._writer.write(json.dumps(message).encode("utf-8") + b"\n")
        self._writer.flush()

    def receive(self) -> dict:
        line = self._reader.readline(FRAME_LIMIT + 1)
        if not line:
            raise ProgramEnded("the program's process ended")
        if len(line) > FRAME_LIMIT or not line.endswith(b"\n"):
            raise ProtocolError("a reply larger than the frame limit")
        try:
            message = json.loads(line)
        except (ValueError, RecursionError) as error:
            raise ProtocolError(f"a reply that is not JSON: {error}") from None
        if not isinstance(message, dict):
            raise ProtocolError("a reply that is not an object")
        return message


def set_limits(limits: dict) -> None:
    """Hard = soft, so the program cannot raise them back (that needs a capability it lacks)."""
    megabyte = 1024 * 1024
    cpu = int(limits["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] * megabyte,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_mb"] * megabyte,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["nproc"],) * 2)


def describe_error(error: BaseException) -> dict:
    try:
        message = repr(error.code) if isinstance(error, SystemExit) else str(error)
    except Exception:  # noqa: BLE001 - a program's exception whose __str__ itself fails
        message = "<unprintable>"
    reported_errno = getattr(error, "errno", None) if isinstance(error, OSError) else None
    return {"type": type(error).__name__, "message": str(message)[-400:],
            "errno": reported_errno if type(reported_errno) is int else None}


def _callable_names(namespace: dict) -> list[str]:
    return [name for name, value in list(namespace.items())
            if not name.startswith("__") and callable(value)]


def serve_program(limits: dict, read_fd: int, write_fd: int) -> None:
    source = sys.stdin.read()
    sys.stdin.close()
    channel = Channel(read_fd, write_fd)
    set_limits(limits)
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        code = compile(source, "program.py", "exec")
    except (SyntaxError, ValueError) as error:
        channel.send({"loaded": False, "syntax": True, "error": describe_error(error)})
        return
    try:
        exec(code, namespace)  # noqa: S102 - running the candidate is the point
    except BaseException as error:  # noqa: BLE001 - any failure of the candidate is reported
        channel.send({"loaded": False, "error": describe_error(error)})
        return
    channel.send({"loaded": True, "callables": _callable_names(namespace)})
    while True:
        try:
            request = channel.receive()
        except ProgramEnded:
            return
        channel.send(_answer(namespace, request))


def _answer(namespace: dict, request: dict) -> dict:
    try:
        args = decode(request["args"])
        kwargs = decode(request["kwargs"])
        value = namespace[request["call"]](*args, **kwargs)
    except BaseException as error:  # noqa: BLE001 - the judge re-raises it on its side
        return {"raised": describe_error(error)}
    try:
        return {"value": encode(value)}
    except NotPlainData as error:
        return {"not_plain": str(error)}
    except RecursionError:
        return {"not_plain": "a value nested too deeply"}


_BUILTIN_NAMES = frozenset(dir(builtins))


class NotPlainReturn(TypeError):
    """The program returned a value that is not plain data (e.g. an always-equal object)."""


def _printable(text: str) -> str:
    return "".join(char if char.isprintable() else "?" for char in text)


def _rebuild_error(info: object) -> BaseException:
    """The judge-side stand-in for an exception the program raised (a builtin type when it is
    one, else RuntimeError), tagged with what the program reported."""
    info = info if isinstance(info, dict) else {}
    name = _printable(str(info.get("type", "Exception")))[:80]
    message = _printable(str(info.get("message", "")))[-400:]
    reported_errno = info.get("errno") if type(info.get("errno")) is int else None
    builtin = getattr(builtins, name, None)
    error: BaseException = RuntimeError(f"{name}: {message}")
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        try:
            error = builtin(message)
        except Exception:  # noqa: BLE001 - a type with another signature keeps RuntimeError
            pass
    error.unisd_program = {"type": name, "message": message, "errno": reported_errno}
    return error


class ProgramProxy:
    """Calls into the program's process: plain data out, plain data (or its exception) back."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def function(self, name: str):
        def call(*args, **kwargs):
            return self.call(name, args, kwargs)

        call.__name__ = call.__qualname__ = name
        return call

    def call(self, name: str, args: tuple, kwargs: dict) -> object:
        try:
            request = {"call": name, "args": encode(list(args)), "kwargs": encode(dict(kwargs))}
        except NotPlainData as error:
            raise NotPlainData(f"the tests passed {error} to {name}()") from None
        try:
            self.channel.send(request)
        except (BrokenPipeError, OSError):
            raise ProgramEnded("the program's process ended") from None
        reply = self.channel.receive()
        if "value" in reply:
            return decode(reply["value"])
        if "raised" in reply:
            raise _rebuild_error(reply["raised"])
        if "not_plain" in reply:
            detail = _printable(str(reply["not_plain"]))[:200]
            raise NotPlainReturn(f"{name}() returned {detail}, which is not plain data")
        raise ProtocolError("a reply without value, raised or not_plain")


def _bind_program(namespace: dict, names: object, proxy: ProgramProxy) -> None:
    """The program's top-level callables, as proxies the tests call. Nothing else is bound: not
    the program's modules or values, and never a name of a builtin (a program defining ``abs``
    or ``len`` would otherwise answer the tests' own checks)."""
    if not isinstance(names, list):
        raise ProtocolError("the program's callables are not a list")
    for name in names:
        if not (isinstance(name, str) and name.isidentifier()):
            raise ProtocolError("a malformed callable name")
        if name not in _BUILTIN_NAMES:
            namespace[name] = proxy.function(name)


def _program_status(info: object, while_loading: bool) -> tuple[str, str]:
    info = info if isinstance(info, dict) else {}
    name = _printable(str(info.get("type", "")))[:80]
    message = _printable(str(info.get("message", "")))[-400:]
    text = f"{name}: {message}" + (" (while loading the program)" if while_loading else "")
    if name == "SystemExit":
        return "exit_called", f"SystemExit({message})"
    if name == "MemoryError":
        return "memory_limit", "the program raised MemoryError"
    if info.get("errno") == errno.EFBIG:
        return "file_size_limit", text
    if info.get("errno") == errno.ENOSPC:
        return "disk_limit", text
    return "program_raised", text


def _classify(error: BaseException) -> tuple[str, str]:
    program = getattr(error, "unisd_program", None)
    if isinstance(program, dict):
        return _program_status(program, while_loading=False)
    if isinstance(error, NotPlainReturn):
        return "not_plain_data", str(error)
    if isinstance(error, NotPlainData):
        return "not_plain_data", f"{error}, which is not plain data (unsupported by the sandbox)"
    if isinstance(error, ProgramEnded):
        return "program_ended", "the program's process ended before the tests finished"
    if isinstance(error, ProtocolError):
        return "protocol_error", str(error)
    if isinstance(error, AssertionError):
        return "assertion_failed", f"AssertionError: {error}"
    if isinstance(error, MemoryError):
        return "memory_limit", "the tests ran out of memory"
    return "error", f"{type(error).__name__}: {error}"


def _judge(channel: Channel, tests: str) -> tuple[str, str]:
    try:
        hello = channel.receive()
    except (ProgramEnded, ProtocolError) as error:
        return _classify(error)
    if type(hello.get("loaded")) is not bool:
        return "protocol_error", "the program's first message is not a load report"
    if not hello["loaded"]:
        if hello.get("syntax"):
            info = hello.get("error") if isinstance(hello.get("error"), dict) else {}
            return "syntax_error", f"{info.get('type')}: {info.get('message')}"
        return _program_status(hello.get("error"), while_loading=True)
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        _bind_program(namespace, hello.get("callables"), ProgramProxy(channel))
        exec(compile(tests, "tests.py", "exec"), namespace)  # noqa: S102 - the dataset's tests
    except BaseException as error:  # noqa: BLE001 - any failure scores 0 with its reason
        return _classify(error)
    return "passed", ""


def run_judge(limits: dict, write_fd: int, read_fd: int, verdict_fd: int) -> None:
    tests = sys.stdin.read()
    sys.stdin.close()
    verdict = os.fdopen(verdict_fd, "w")
    set_limits(limits)
    status, detail = _judge(Channel(read_fd, write_fd), tests)
    verdict.write(json.dumps({"status": status, "detail": _printable(str(detail))[-500:]}))
    verdict.close()


def main() -> None:
    role, limits, workdir = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    descriptors = [int(argument) for argument in sys.argv[4:]]
    os.chdir(workdir)
    if role == "program":
        sys.path.insert(0, workdir)
        serve_program(limits, *descriptors)
    elif role == "judge":
        run_judge(limits, *descriptors)
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main()
