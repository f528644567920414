"""The only module that imports ``ray``: start or join a cluster, run steps as tasks, wait, cancel.

A local cluster (the default) binds to 127.0.0.1 with a small object store (steps exchange small
JSON results; checkpoints travel through the output folder). Ray 2.60 turns token auth on by
default; a loopback-only local cluster sets ``RAY_AUTH_MODE=disabled`` unless the user set it
(design.md), while ``address=...`` leaves the user's setting alone so that head and client agree.
``_node_ip_address="127.0.0.1"`` alone is not enough on Linux: the node still advertises its
outward address and the GCS listens on every interface (measured with ``ss -ltn``), which with
auth disabled would let any host on the network submit tasks. Ray keeps to loopback only when
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is in the environment when ``ray`` is imported, so this
module imports ``ray`` lazily and sets it (unless the user did) before a local start; joining a
cluster leaves it unset, since a driver on a cluster node must advertise that node's address.

Inside every task the process runs ``torch.set_num_threads`` with the task's CPU count: Ray
already sets ``OMP_NUM_THREADS`` for tasks, but torch reads it only at import, and a reused worker
may have imported torch earlier; on a 2-core machine oversubscription costs more than it gives.

Departures from the paper: none (the authors' code has no scheduler).
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

OBJECT_STORE_BYTES = 256 * 1024 * 1024
# Ray retries a task whose worker process died (killed, segfault) this many times; application
# errors are not retried by Ray but by the runner, which can change the batch on OOM.
SYSTEM_RETRIES = 2
LOOPBACK_ONLY_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": bind and advertise loopback


def _ray(*, local: bool = False) -> ModuleType:
    """The ``ray`` module; before its first import for a local start, keep Ray on loopback."""
    if local and "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ONLY_VARIABLE, "0")
    import ray

    return ray


@dataclass(frozen=True)
class TaskHandle:
    """A submitted step: the Ray object ref and the step id it computes."""

    step_id: str
    ref: Any


def connect(address: str | None = None, *, num_cpus: int | None = None) -> dict[str, float]:
    """Start a local cluster (``address=None``) or join one; returns its total resources.

    ``address`` is anything ``ray.init`` accepts (``auto``, ``host:port``, ``ray://...``);
    None means ``$RAY_ADDRESS`` when set (a Ray job), else a new local cluster.
    Calling it again in the same process reuses the connection. Workers of a local cluster
    inherit this process's environment (``UNISD_CACHE_DIR``, offline flags); a cluster's nodes
    use their own (docs/cluster.md).
    """
    # Inside `ray job submit` the job's cluster is in RAY_ADDRESS: join it, never start another.
    address = address or os.environ.get("RAY_ADDRESS") or None
    ray = _ray(local=address is None)
    if ray.is_initialized():
        return dict(ray.cluster_resources())
    if address is None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=num_cpus, object_store_memory=OBJECT_STORE_BYTES,
                 include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    else:
        ray.init(address=address, log_to_driver=False)
    return dict(ray.cluster_resources())


def shutdown() -> None:
    """Leave the cluster (and stop it when this process started it)."""
    if "ray" not in sys.modules:
        return
    ray = _ray()
    if ray.is_initialized():
        ray.shutdown()


def submit(step_id: str, function: Callable[..., Any], payload: Any, *, num_cpus: float,
           num_gpus: float = 0.0, memory_gb: float | None = None) -> TaskHandle:
    """Run ``function(payload)`` as a remote task with the declared resources."""
    options: dict[str, Any] = {
        "num_cpus": num_cpus, "num_gpus": num_gpus, "max_retries": SYSTEM_RETRIES,
        "retry_exceptions": False, "name": step_id,
    }
    if memory_gb:
        options["memory"] = int(memory_gb * 1024**3)
    ref = _remote_step().options(**options).remote(function, payload, num_cpus)
    return TaskHandle(step_id=step_id, ref=ref)


@functools.cache
def _remote_step() -> Any:
    return _ray().remote(_run_step)


def _run_step(function: Callable[..., Any], payload: Any, num_cpus: float) -> Any:
    import torch  # local: the driver needs no torch threads, only workers do

    torch.set_num_threads(max(1, int(num_cpus)))
    return function(payload)


def wait_any(handles: list[TaskHandle], timeout_s: float) -> list[TaskHandle]:
    """Return as soon as at least one handle finished, or after ``timeout_s``."""
    if not handles:
        return []
    by_ref = {handle.ref: handle for handle in handles}
    ray = _ray()
    ready, pending = ray.wait(list(by_ref), num_returns=1, timeout=timeout_s)
    if ready and pending:
        more, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
        ready = [*ready, *more]
    return [by_ref[ref] for ref in ready]


def result(handle: TaskHandle) -> tuple[Any, BaseException | None]:
    """``(value, None)`` for a finished task, ``(None, error)`` when it raised or died.

    A task error arrives as the original exception when Ray can rebuild it (``RayTaskError``
    subclasses it), so ``isinstance(error, torch.OutOfMemoryError)`` works for the caller.
    """
    ray = _ray()
    try:
        return ray.get(handle.ref), None
    except ray.exceptions.RayTaskError as error:  # the step raised
        cause = error.as_instanceof_cause()
        return None, cause
    except ray.exceptions.RayError as error:  # worker died beyond retries, cancelled, ...
        return None, error


def is_cancelled(error: BaseException | None) -> bool:
    return isinstance(error, _ray().exceptions.TaskCancelledError)


def cancel(handles: list[TaskHandle], *, force: bool = True) -> None:
    """Cancel running tasks (``force`` kills the worker process; its state is on disk)."""
    for handle in handles:
        try:
            _ray().cancel(handle.ref, force=force)
        except Exception:  # already finished or gone: nothing to cancel
            pass
