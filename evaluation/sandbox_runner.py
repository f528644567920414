"""The child side of :mod:`evaluation.sandbox`: run one program under limits and guards.

Executed as ``python -I -B sandbox_runner.py <tmpdir> <limits-json> <verdict-fd>``, never
imported by the evaluator. Order matters: resource limits, then the working directory, then the
audit hook, then the program. The outcome is one JSON line written to the verdict descriptor (a
pipe the evaluator holds), tagged with a nonce read from stdin, so a program that exits early
(``exit()``, ``os._exit``) or prints a fake verdict never counts as passed.

This is a guard against accidents of generated code (stray writes, deletions, forks, network),
not a security boundary: code that really wants out can get out (a C extension, /proc tricks,
inspecting this runner's frames). The audit hook is the only guard that binds root; see
:mod:`evaluation.sandbox`.
Standard library only: it runs before and apart from the project.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import sys

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_ALLOWED_WRITE = ("/dev/null",)
_BLOCKED_EVENTS = {
    "os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
    "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill", "os.setsid",
    "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyaddr", "ctypes.dlopen", "ctypes.dlsym",
    "os.chroot", "resource.setrlimit", "resource.prlimit", "sys.addaudithook",
}
_PATH_EVENTS = {
    "os.remove", "os.rmdir", "os.rename", "shutil.rmtree", "os.mkdir", "os.chmod", "os.chown",
    "os.symlink", "os.link", "os.truncate", "os.utime", "os.chflags", "os.lchflags",
    "os.setxattr", "os.removexattr", "shutil.move", "shutil.copyfile", "shutil.copytree",
}


class SandboxViolation(PermissionError):
    """Raised by the audit hook; its message names the refused event."""


def _inside(root: str, path: object, dir_fd: object = None) -> bool:
    if isinstance(path, int):
        return True  # an already-open descriptor: it was checked when opened
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
        return False
    path = os.fspath(path)
    if isinstance(dir_fd, int) and dir_fd >= 0 and not os.path.isabs(path):
        path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
    resolved = os.path.realpath(path)
    return resolved in _ALLOWED_WRITE or resolved == root or resolved.startswith(root + os.sep)


def _refuse(refused: list[str], message: str) -> None:
    # Remembered so that a program swallowing the exception still scores 0.
    refused.append(message)
    raise SandboxViolation(message)


def _install_guard(root: str, refused: list[str]) -> None:
    def hook(event: str, args: tuple) -> None:
        if event in _BLOCKED_EVENTS:
            _refuse(refused, f"sandbox refused {event}")
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS
            )
            if writing and not _inside(root, path):
                _refuse(refused, f"sandbox refused open for write outside tmp: {path!r}")
        elif event in _PATH_EVENTS:
            paths = [arg for arg in args if isinstance(arg, (str, bytes, os.PathLike))]
            dir_fd = next((arg for arg in args if isinstance(arg, int)), None)
            if event in {"shutil.copyfile", "shutil.copytree", "shutil.move"}:
                paths = paths[1:]  # the source is only read
            for path in paths:
                if not _inside(root, path, dir_fd):
                    _refuse(refused, f"sandbox refused {event} outside tmp: {path!r}")

    sys.addaudithook(hook)


def _set_limits(limits: dict) -> None:
    megabyte = 1024 * 1024
    cpu = int(limits["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] * megabyte,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_mb"] * megabyte,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Binds ordinary users only; for root the guard refuses forks instead.
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["nproc"],) * 2)


def _report(channel, nonce: str, status: str, detail: str = "") -> None:
    channel.write(json.dumps({"nonce": nonce, "status": status, "detail": detail[-500:]}) + "\n")
    channel.flush()


def main() -> None:
    root, limits = os.path.realpath(sys.argv[1]), json.loads(sys.argv[2])
    nonce = sys.stdin.readline().strip()
    sys.stdin.close()
    channel = os.fdopen(int(sys.argv[3]), "w", closefd=True)
    with open(os.path.join(root, "program.py"), encoding="utf-8") as handle:
        source = handle.read()
    _set_limits(limits)
    os.chdir(root)
    sys.path.insert(0, root)
    try:
        code = compile(source, "program.py", "exec")
    except (SyntaxError, ValueError) as error:
        _report(channel, nonce, "syntax_error", f"{type(error).__name__}: {error}")
        return
    refused: list[str] = []
    _install_guard(root, refused)
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(code, namespace)  # noqa: S102 - running the candidate is the point
    except BaseException as error:  # noqa: BLE001 - any failure of the candidate scores 0
        status, detail = _classify(error)
    else:
        status, detail = "passed", ""
    if refused:  # a refusal is the reason even when the program swallowed the exception
        status, detail = "blocked", refused[0]
    _report(channel, nonce, status, detail)


def _classify(error: BaseException) -> tuple[str, str]:
    if isinstance(error, SystemExit):
        return "exit_called", f"SystemExit({error.code!r})"
    if isinstance(error, MemoryError):
        return "memory_limit", "MemoryError"
    if isinstance(error, OSError) and error.errno == errno.EFBIG:
        return "output_limit", f"{type(error).__name__}: {error}"
    if isinstance(error, AssertionError):
        return "assertion_failed", f"AssertionError: {error}"
    return "error", f"{type(error).__name__}: {error}"


if __name__ == "__main__":
    main()
