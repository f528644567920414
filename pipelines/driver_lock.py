"""Who drives a study folder: the driver lock, its probe, and the driver's own record.

One driver per study folder holds an exclusive ``flock`` on ``<output>/driver.lock``; the kernel
drops it when the driver dies, however it dies, so a free lock means that no driver is running
(``study status`` uses this to tell steps that nobody runs any more from steps that run).
``<output>/driver.json`` says which driver ran last (pid, host, start) and how it ended
(``finished`` or ``interrupted``); a driver killed outright never writes its end.

Refusals are :class:`StudyRefusal` errors with a message for the user (the CLI prints it and
exits non-zero, no traceback): a second driver on the same folder, an output folder that cannot
be written.

Departures from the paper: none.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

LOCK_FILE = "driver.lock"
DRIVER_FILE = "driver.json"


class StudyRefusal(RuntimeError):
    """A run that must not start; the message says why and what to do instead."""


def _writable_folder(output_dir: Path) -> None:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise StudyRefusal(f"cannot write to the study's output folder {output_dir} "
                           f"({error.strerror or error}); give a writable one with "
                           "--output-dir") from None


@contextlib.contextmanager
def driver_lock(output_dir: Path, *, watch_hint: str) -> Iterator[None]:
    """Hold the folder's driver lock for the ``with`` body, or raise :class:`StudyRefusal`.

    ``watch_hint`` is the command that shows the study's progress (named in the refusal).
    A brief shared lock held by :func:`driver_alive` is waited out (a few tries).
    """
    _writable_folder(output_dir)
    with (output_dir / LOCK_FILE).open("a+") as handle:
        for attempt in range(5):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == 4:
                    raise StudyRefusal(_busy_message(output_dir, watch_hint)) from None
                time.sleep(0.1)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}@{socket.gethostname()}\n")
        handle.flush()
        yield


def _busy_message(output_dir: Path, watch_hint: str) -> str:
    last = read_driver_record(output_dir) or {}
    who = f" (pid {last['pid']} on {last['host']})" if last.get("pid") else ""
    return (f"another driver{who} is running the study in {output_dir}; "
            f"watch it with `{watch_hint}` instead of starting a second one")


def driver_alive(output_dir: Path) -> bool:
    """True while a driver holds the lock of ``output_dir`` (probe with a brief shared lock)."""
    path = Path(output_dir) / LOCK_FILE
    if not path.exists():
        return False
    try:
        handle = path.open("r")
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def write_driver_record(output_dir: Path, **fields: Any) -> None:
    """Merge ``fields`` into ``driver.json`` (atomic, durable)."""
    from pipelines.state import write_json_atomic

    record = {**(read_driver_record(output_dir) or {}), **fields}
    write_json_atomic(Path(output_dir) / DRIVER_FILE, record)


def start_driver_record(output_dir: Path) -> None:
    from pipelines.state import write_json_atomic

    write_json_atomic(Path(output_dir) / DRIVER_FILE, {
        "pid": os.getpid(), "host": socket.gethostname(), "started_at": time.time()})


def read_driver_record(output_dir: Path) -> dict[str, Any] | None:
    path = Path(output_dir) / DRIVER_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class interrupts_as_keyboard_interrupt:
    """SIGTERM (``ray job stop``, ``kill``) stops the study like Ctrl-C (main thread only)."""

    def __enter__(self) -> None:
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)

    @staticmethod
    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
