"""A local Ray cluster started by the runner stays on loopback (advertised address and sockets).

With auth disabled on a local cluster (design.md), a GCS listening on every interface would let
any host on the network run tasks here; ``_node_ip_address="127.0.0.1"`` alone did not prevent it
(the node advertised its outward address and the GCS listened on ``*``). The check runs in a fresh
interpreter, since the loopback setting must be in place before ``ray`` is first imported.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

PROBE = """
import json, psutil
from pipelines import ray_adapter
ray_adapter.connect(num_cpus=1)
import ray
nodes = [node["NodeManagerAddress"] for node in ray.nodes()]
listening = set()
for process in psutil.Process().children(recursive=True):  # this cluster's processes only
    try:
        for connection in process.net_connections(kind="inet"):
            if connection.status == psutil.CONN_LISTEN:
                listening.add(connection.laddr.ip)
    except psutil.Error:
        pass
ray_adapter.shutdown()
print(json.dumps({"nodes": nodes, "listening": sorted(listening)}))
"""


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 (a dual-stack socket)
    return (mapped or ip).is_loopback


def test_local_cluster_binds_and_advertises_only_loopback() -> None:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env=environment, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["nodes"] == ["127.0.0.1"], found
    assert found["listening"], "no listening socket of the cluster found"
    assert all(_loopback(ip) for ip in found["listening"]), found
