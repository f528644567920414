"""The simulated cluster's services on loopback: PostgreSQL, an MLflow server, Ray head and nodes.

Each service is a process group started in its own session and stopped by that group (never
``ray stop``, which would kill other users' Ray). Every port is a free loopback port, so several
simulations (and other people's Ray instances) can share the machine.

- PostgreSQL (Debian's ``postgresql`` package): a private cluster made with ``initdb`` in a
  temporary folder, run as an unprivileged user (``postgres`` when started as root), trust auth
  on 127.0.0.1 only. When the binaries or the ``psycopg2`` driver are missing,
  :func:`start_postgres` returns None with the reason and the caller falls back to SQLite.
- MLflow: ``mlflow server`` on that database (or SQLite) with ``--serve-artifacts`` into a shared
  artifact folder, as docs/cluster.md recommends; uvicorn's access log is kept to count requests.
- Ray: a head with no GPUs (the driver job runs there) and N worker nodes, each a separate
  ``ray start --block`` advertising logical GPUs, CPUs and memory, with ``RAY_AUTH_MODE=disabled``
  (loopback only, as the tests do) and ``UNISD_SIM_NODE=<name>`` so steps can say where they ran.

Departures from a real cluster: one machine, so "nodes" share CPU, disk and the kernel; the GPUs
are logical resources only.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

NODE_PORTS = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
              "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")
HEAD_PORTS = ("port", "dashboard-port", "ray-client-server-port", *NODE_PORTS)
OBJECT_STORE_BYTES = 80 * 1024**2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(1.0)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")


@dataclass
class Service:
    """One process group started by this module."""

    name: str
    process: subprocess.Popen
    log: Path
    cleanup: Path | None = None  # a folder removed once the group stopped

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, first: int = signal.SIGTERM, grace_s: float = 10) -> None:
        for sig, grace in ((first, grace_s), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        if self.cleanup is not None:
            shutil.rmtree(self.cleanup, ignore_errors=True)


def start(name: str, command: list[str], log: Path, env: dict | None = None,
          user: str | None = None) -> Service:
    preexec = None
    if user is not None:
        entry = pwd.getpwnam(user)

        def preexec() -> None:
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
    process = subprocess.Popen(command, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                               start_new_session=True, preexec_fn=preexec)
    return Service(name, process, log)


# ---- PostgreSQL ------------------------------------------------------------------------------

def postgres_unavailable() -> str | None:
    """Why a private PostgreSQL cannot run here (None when it can)."""
    if _pg_bin("initdb") is None:
        return "PostgreSQL is not installed (apt-get install -y postgresql)"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "the psycopg2 driver is missing (pip install -c constraints.txt psycopg2-binary)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


def start_postgres() -> tuple[Service, str]:
    """A private PostgreSQL on a free loopback port; -> (service, SQLAlchemy URI of db mlflow).

    Its folder is a fresh temporary one (the server's user must be able to reach it), removed
    when the service stops."""
    import tempfile

    user = "postgres" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="unisd-pg-"))
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir(exist_ok=True)
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (folder, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    log = folder / "postgres.log"
    init = start("initdb", [_pg_bin("initdb"), "-D", str(data), "-U", "unisd", "--auth=trust",
                            "-E", "UTF8", "--no-sync"], folder / "initdb.log", user=user)
    if init.process.wait(timeout=120) != 0:
        message = (folder / "initdb.log").read_text()[-2000:]
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {message}")
    port = free_port()
    server = start("postgres", [_pg_bin("postgres"), "-D", str(data), "-p", str(port),
                                "-k", str(sockets), "-c", "listen_addresses=127.0.0.1",
                                "-c", "max_connections=200"], log, user=user)
    server.cleanup = folder
    isready = [_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port)]
    try:
        wait_for(lambda: server.alive() and subprocess.run(
            isready, capture_output=True).returncode == 0, 60, "PostgreSQL")
    except TimeoutError:
        server.stop()
        raise
    created = subprocess.run([_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                              "unisd", "mlflow"], capture_output=True, text=True)
    if created.returncode != 0:
        server.stop()
        raise RuntimeError(f"createdb failed: {created.stderr}")
    return server, f"postgresql+psycopg2://unisd@127.0.0.1:{port}/mlflow"


# ---- MLflow ----------------------------------------------------------------------------------

def start_mlflow(backend_uri: str, artifacts: Path, log: Path, workers: int = 2,
                 port: int | None = None) -> tuple[Service, str]:
    """The server on ``port`` (default: a free one; a restart passes the old one)."""
    port = port or free_port()
    artifacts.mkdir(parents=True, exist_ok=True)
    server = start("mlflow", [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
        "--artifacts-destination", str(artifacts), "--serve-artifacts", "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers)], log)
    uri = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if not server.alive():
            raise RuntimeError(f"the MLflow server exited: {log.read_text()[-3000:]}")
        try:
            return urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200
        except OSError:
            return False
    wait_for(healthy, 120, "the MLflow server")
    return server, uri


# ---- Ray ---------------------------------------------------------------------------------------

@dataclass
class RayCluster:
    head: Service
    nodes: list[Service] = field(default_factory=list)
    gcs_address: str = ""
    dashboard: str = ""
    temp_dir: str = ""

    def stop(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(self.nodes) + 1) as pool:
            list(pool.map(lambda service: service.stop(grace_s=5), [*self.nodes, self.head]))
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _ray() -> str:
    return str(Path(sys.executable).parent / "ray")


def start_ray(folder: Path, env: dict, *, nodes: int, gpus_per_node: int,
              cpus_per_gpu: int = 8, memory_gb_per_gpu: int = 96) -> RayCluster:
    """Head (no GPUs, the job server) and ``nodes`` worker nodes of ``gpus_per_node`` GPUs."""
    import tempfile

    folder.mkdir(parents=True, exist_ok=True)
    temp_dir = tempfile.mkdtemp(prefix="raysim", dir="/tmp")  # AF_UNIX paths: 107 bytes at most
    ports = {name: free_port() for name in HEAD_PORTS}
    head = start("ray-head", [
        _ray(), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
        "--dashboard-host", "127.0.0.1", "--include-dashboard", "true", "--num-cpus", "1",
        "--num-gpus", "0", "--object-store-memory", str(OBJECT_STORE_BYTES),
        "--temp-dir", temp_dir, *[f"--{name}={port}" for name, port in ports.items()]],
        folder / "head.log", env={**env, "UNISD_SIM_NODE": "head"})
    cluster = RayCluster(head, gcs_address=f"127.0.0.1:{ports['port']}",
                         dashboard=f"http://127.0.0.1:{ports['dashboard-port']}",
                         temp_dir=temp_dir)

    def job_server_up() -> bool:
        if not head.alive():
            raise RuntimeError(f"the Ray head exited: {(folder / 'head.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{cluster.dashboard}/api/jobs/", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False
    try:
        wait_for(job_server_up, 180, "the Ray head's job server")
        for index in range(nodes):
            cluster.nodes.append(_join_node(cluster, folder, env, index + 1, gpus_per_node,
                                            cpus_per_gpu, memory_gb_per_gpu))
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _join_node(cluster: RayCluster, folder: Path, env: dict, number: int, gpus: int,
               cpus_per_gpu: int, memory_gb_per_gpu: int, attempts: int = 3) -> Service:
    """Start node ``number`` and wait until the cluster counts it (one at a time: raylets
    started together on two busy cores time out registering; a node that did is started again).
    """
    seen: list[str] = []
    for _ in range(attempts):
        node = start_node(cluster, folder, env, f"node{number}", gpus, cpus_per_gpu,
                          memory_gb_per_gpu)
        try:
            wait_for(lambda: not node.alive() or _alive_nodes(cluster, env, seen) >= number + 1,
                     180, f"node{number}")
        except TimeoutError:
            node.stop()
            raise TimeoutError(f"node{number} did not join; last `ray status`:\n"
                               f"{seen[-1] if seen else ''}") from None
        if node.alive():
            return node
    raise RuntimeError(f"node{number} exited {attempts} times: "
                       f"{(folder / f'node{number}.log').read_text()[-2000:]}")


def start_node(cluster: RayCluster, folder: Path, env: dict, name: str, gpus: int,
               cpus_per_gpu: int, memory_gb_per_gpu: int) -> Service:
    ports = {port: free_port() for port in NODE_PORTS}
    return start(name, [
        _ray(), "start", "--block", "--address", cluster.gcs_address, "--node-ip-address",
        "127.0.0.1", "--num-gpus", str(gpus), "--num-cpus", str(gpus * cpus_per_gpu),
        "--memory", str(gpus * memory_gb_per_gpu * 1024**3),
        "--object-store-memory", str(OBJECT_STORE_BYTES),
        *[f"--{port}={number}" for port, number in ports.items()]],
        folder / f"{name}.log", env={**env, "UNISD_SIM_NODE": name})


def _alive_nodes(cluster: RayCluster, env: dict, seen: list[str]) -> int:
    """ALIVE nodes per the dashboard's state API (HTTP: a `ray` CLI call per poll costs seconds
    of CPU on this machine)."""
    import json

    try:
        with urllib.request.urlopen(f"{cluster.dashboard}/api/v0/nodes?limit=1000",
                                    timeout=10) as response:
            payload = json.loads(response.read())
    except (OSError, ValueError) as error:
        seen.append(repr(error))
        return -1
    seen.append(json.dumps(payload)[:3000])
    rows = payload.get("data", {}).get("result", {}).get("result", [])
    return sum(row.get("state") == "ALIVE" for row in rows)
