"""How :mod:`evaluation.sandbox` isolates one process: the mode, its command line, and the probe.

Modes (:func:`isolation_mode`, recorded with every code item and as the run tag
``unisd.sandbox.mode``):

- ``bwrap-root``: the evaluator runs as root (CI, containers). bubblewrap sets up new mount, pid,
  network, ipc, uts (and cgroup where possible) namespaces as root, then ``setpriv`` drops the
  process to a fresh unprivileged uid/gid (a random one in ``UID_RANGE`` per process, so
  RLIMIT_NPROC counts that process tree alone), clears supplementary groups, empties every
  capability set including the bounding set, and sets no_new_privs.
- ``bwrap-user``: the evaluator is an ordinary user. bubblewrap adds a user namespace (uid 65534
  inside, the caller's uid outside, no capabilities, no nested user namespaces).
- ``processes`` (weak, only on explicit opt-in ``UNISD_SANDBOX=processes``): plain child
  processes with resource limits, a scrubbed environment and a temporary working folder. No
  filesystem, pid or network isolation: for machines without namespaces, on trusted models only.

In both bwrap modes the process sees a read-only view of /usr (and the /bin, /lib links), a few
files of /etc (dynamic loader, passwd/group, timezone, alternatives), the interpreter's prefixes
and site-packages, the runner file, its own /proc and a minimal /dev; its working folder (also
HOME and TMPDIR) and /tmp are private tmpfs of ``WORKDIR_MB`` each. The environment is cleared.

Without bwrap (or where it cannot create namespaces) :func:`isolation_mode` raises
:class:`SandboxUnavailable` naming what is missing, unless the weak mode is opted into.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import site
import subprocess
import sys
from pathlib import Path

RUNNER = Path(__file__).with_name("sandbox_runner.py")
SANDBOX_RUNNER = "/run/unisd/sandbox_runner.py"
WORKDIR = "/sandbox"
WORKDIR_MB = 64
UID_RANGE = (200_000, 1_200_000)
OPT_IN_VARIABLE = "UNISD_SANDBOX"
WEAK_MODE = "processes"
_ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime",
              "passwd", "group", "nsswitch.conf")
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                     "NUMEXPR_NUM_THREADS")


class SandboxUnavailable(RuntimeError):
    """No isolation can be had here and the weak mode was not opted into."""


def sandbox_environment(home: str) -> dict[str, str]:
    """The whole environment a sandboxed process gets (nothing of the evaluator's)."""
    environment = {"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"}
    environment.update({name: "1" for name in _THREAD_VARIABLES})
    return environment


def _read_only_paths() -> list[str]:
    """Interpreter prefixes and site-packages outside /usr, outermost first, deduplicated."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                  *site.getsitepackages(), str(Path(sys.executable).resolve().parent.parent)}
    paths: list[str] = []
    for path in sorted(os.path.realpath(p) for p in candidates if os.path.isdir(p)):
        if path == "/usr" or path.startswith("/usr/") or path == "/":
            continue
        if not any(path.startswith(kept + "/") or path == kept for kept in paths):
            paths.append(path)
    # Also under the name sys.executable uses, when a symlink makes it differ from the real path.
    for path in sorted({sys.prefix, sys.exec_prefix}):
        if os.path.isdir(path) and path not in paths and not path.startswith("/usr/"):
            paths.append(path)
    return paths


def _root_filesystem() -> list[str]:
    arguments = ["--ro-bind", "/usr", "/usr"]
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = f"/{top}"
        if os.path.islink(host):
            arguments += ["--symlink", os.readlink(host), host]
        elif os.path.isdir(host):
            arguments += ["--ro-bind", host, host]
    for name in _ETC_FILES:
        if os.path.exists(f"/etc/{name}"):
            arguments += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    for path in _read_only_paths():
        arguments += [*_traversable_parents(path), "--ro-bind", path, path]
    return arguments


def _traversable_parents(path: str) -> list[str]:
    """bwrap creates missing parents of a mount point as 0700 root: make them 0755 so that the
    unprivileged uid can reach the interpreter (e.g. one under /root/.pyenv)."""
    arguments: list[str] = []
    parent = Path(path).parent
    for ancestor in reversed([parent, *parent.parents][:-1]):  # skip "/"
        arguments += ["--perms", "0755", "--dir", str(ancestor)]
    return arguments


def _bwrap_arguments(as_root: bool) -> list[str]:
    namespaces = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                  "--unshare-cgroup-try"]
    if not as_root:
        namespaces = ["--unshare-user", "--uid", "65534", "--gid", "65534", "--disable-userns",
                      *namespaces]
    size = ["--perms", "1777", "--size", str(WORKDIR_MB * 1024 * 1024)]
    return [
        shutil.which("bwrap") or "bwrap", *namespaces, "--die-with-parent", "--new-session",
        # /tmp first: an interpreter that lives under /tmp is then bound inside it.
        *size, "--tmpfs", "/tmp",
        *_root_filesystem(),
        "--perms", "0755", "--dir", os.path.dirname(SANDBOX_RUNNER),
        "--ro-bind", str(RUNNER), SANDBOX_RUNNER,
        "--proc", "/proc", "--dev", "/dev",
        *size, "--tmpfs", WORKDIR,
        "--remount-ro", "/",
        "--chdir", WORKDIR, "--clearenv",
        *[item for name, value in sandbox_environment(WORKDIR).items()
          for item in ("--setenv", name, value)],
    ]


def _drop_privileges() -> list[str]:
    uid = str(UID_RANGE[0] + secrets.randbelow(UID_RANGE[1] - UID_RANGE[0]))
    return [
        "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
        "--bounding-set=-all", "--no-new-privs", "--",
    ]


def wrap(mode: str, argv: list[str]) -> list[str]:
    """``argv`` (a command as the sandbox sees it) wrapped in ``mode``'s isolation."""
    if mode == WEAK_MODE:
        return argv
    if mode == "bwrap-root":
        return [*_bwrap_arguments(as_root=True), *_drop_privileges(), *argv]
    return [*_bwrap_arguments(as_root=False), *argv]


def runner_command(mode: str, role: str, limits_json: str, descriptors: list[int],
                   weak_workdir: str) -> list[str]:
    """The argv of one runner process; ``weak_workdir`` serves the weak mode only (the bwrap
    modes work in their private tmpfs at WORKDIR)."""
    runner, workdir = (str(RUNNER), weak_workdir) if mode == WEAK_MODE else (SANDBOX_RUNNER,
                                                                              WORKDIR)
    argv = [sys.executable, "-I", "-B", runner, role, limits_json, workdir,
            *(str(descriptor) for descriptor in descriptors)]
    return wrap(mode, argv)


def _missing(mode: str) -> str | None:
    """Why ``mode`` cannot run here (a sentence naming the missing piece), or None."""
    if shutil.which("bwrap") is None:
        return ("bubblewrap (`bwrap`) is not installed; install it with `apt-get install "
                "bubblewrap` (or `make setup` as root)")
    if mode == "bwrap-root" and shutil.which("setpriv") is None:
        return "`setpriv` (util-linux) is not installed; it drops the sandbox to an unprivileged uid"
    probe = wrap(mode, [sys.executable, "-I", "-c", "pass"])
    try:
        done = subprocess.run(probe, capture_output=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.SubprocessError) as error:
        return f"bwrap could not be started: {error}"
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip()[-300:]
        need = ("creating mount/pid/net namespaces as root" if mode == "bwrap-root" else
                "unprivileged user namespaces (kernel.unprivileged_userns_clone / "
                "user.max_user_namespaces, or an AppArmor profile for bwrap)")
        return f"bwrap cannot isolate here ({need}): {detail}"
    return None


@functools.lru_cache(maxsize=1)
def _probe() -> tuple[str, str | None]:
    mode = "bwrap-root" if os.geteuid() == 0 else "bwrap-user"
    return mode, _missing(mode)


def isolation_mode() -> str:
    """The mode code runs in here; raises SandboxUnavailable when there is none and no opt-in."""
    mode, missing = _probe()
    if missing is None:
        return mode
    if os.environ.get(OPT_IN_VARIABLE, "") == WEAK_MODE:
        return WEAK_MODE
    raise SandboxUnavailable(
        f"refusing to run generated code without isolation: {missing}. To run it anyway with "
        f"resource limits only (no filesystem, process or network isolation), set "
        f"{OPT_IN_VARIABLE}={WEAK_MODE}."
    )


def describe_mode() -> str:
    """The mode for run tags: the mode name, or ``unavailable`` (never raises)."""
    try:
        return isolation_mode()
    except SandboxUnavailable:
        return "unavailable"
