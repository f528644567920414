"""Concurrent first use of a tiny model from several processes (as Ray workers do) builds it once.

Separate interpreters race on an empty cache; each must get the same finished folder, with no
staging folder left behind and weights identical to a build made alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unisd_core.models.zoo import build_tiny_model

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUILD = (
    "import torch; torch.set_num_threads(1)\n"
    "from unisd_core.models.zoo import build_tiny_model\n"
    "print(build_tiny_model('tiny-gemma3'))\n"
)


def test_processes_racing_on_an_empty_cache_share_one_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    racing_cache = tmp_path / "racing"
    env = {**os.environ, "UNISD_CACHE_DIR": str(racing_cache), "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen([sys.executable, "-c", BUILD], cwd=ROOT, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    # a deadline against hangs, not a speed claim: two builds on two busy cores can take minutes
    outputs = [process.communicate(timeout=600) for process in processes]
    assert all(process.returncode == 0 for process in processes), [err for _, err in outputs]
    folders = {stdout.strip().splitlines()[-1] for stdout, _ in outputs}
    assert len(folders) == 1
    folder = Path(folders.pop())
    leftovers = [p.name for p in (racing_cache / "models").iterdir() if p.is_dir() and p != folder]
    assert leftovers == []

    monkeypatch.setenv("UNISD_CACHE_DIR", str(tmp_path / "alone"))
    alone = build_tiny_model("tiny-gemma3")
    assert alone.name == folder.name
    raced, single = load_file(folder / "model.safetensors"), load_file(alone / "model.safetensors")
    assert all(torch.equal(raced[key], single[key]) for key in single)
    # Other interpreters (other hash seeds) trained the same BPE merges.
    tokenizer_raced = json.loads((folder / "tokenizer.json").read_text())["model"]
    tokenizer_single = json.loads((alone / "tokenizer.json").read_text())["model"]
    assert tokenizer_raced == tokenizer_single
