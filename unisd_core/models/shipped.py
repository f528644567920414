"""The pretrained tiny bases shipped with the package, and the SHA-256 manifest checked on load.

A base pretrained on CPU differs between machines (AVX2 and AVX-512 kernels round differently,
and 800 AdamW steps amplify it), so every number of the CPU demo used to depend on the machine
that built it (issue 14). The three bases ``tiny-qwen2-synth`` (seed 0), ``tiny-qwen2-synth-s1``
and ``tiny-qwen2-synth-s2`` are therefore built once and shipped as files under
``unisd_core/models/bases/<name>/`` (safetensors weights, config, generation config, tokenizer,
the build marker; about 2 MB each). ``bases/MANIFEST.json`` records, per base, the seed, the
pretraining settings, the data spec, the library versions it was built with and the SHA-256 of
every file; :func:`shipped_base_dir` checks the hashes before handing the folder out, so a
corrupted or half-edited base is refused with a clear message instead of loading silently.

Rebuild one (minutes, one thread): ``python -m unisd_core.models.pretrain --seed S --ship``
(writes the folder and its manifest entry). A rebuild on another CPU gives other bytes, hence
another hash: that is the point of shipping. ``python -m unisd_core.models.pretrain --check``
verifies all three.

Departures from the paper: the paper starts from released instruct models; these bases exist
only so that CPU runs measure real effects (issues 7 and 14).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

BASES_DIR = Path(__file__).with_name("bases")
MANIFEST = BASES_DIR / "MANIFEST.json"
# Name -> pretraining seed. The first is the demo's base.
SHIPPED_SEEDS: dict[str, int] = {"tiny-qwen2-synth": 0, "tiny-qwen2-synth-s1": 1,
                                 "tiny-qwen2-synth-s2": 2}
FAMILY = "qwen2"


class ShippedBaseError(OSError):
    """A shipped base whose files are missing or do not match the manifest."""


def base_name(seed: int) -> str:
    """The shipped name of the base pretrained with ``seed``."""
    for name, value in SHIPPED_SEEDS.items():
        if value == seed:
            return name
    raise ValueError(f"no shipped base for seed {seed}; shipped seeds: {sorted(SHIPPED_SEEDS.values())}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest() -> dict[str, Any]:
    if not MANIFEST.is_file():
        return {}
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


def check_base(name: str) -> Path:
    """The folder of shipped base ``name`` after checking every file against the manifest."""
    if name not in SHIPPED_SEEDS:
        raise ValueError(f"unknown shipped base {name!r} (known: {', '.join(SHIPPED_SEEDS)})")
    entry = read_manifest().get(name)
    folder = BASES_DIR / name
    rebuild = f"rebuild it with `python -m unisd_core.models.pretrain --seed {SHIPPED_SEEDS[name]} --ship`"
    if entry is None:
        raise ShippedBaseError(f"shipped base {name!r} has no entry in {MANIFEST}; {rebuild}")
    for filename, expected in sorted(entry["files"].items()):
        path = folder / filename
        if not path.is_file():
            raise ShippedBaseError(f"shipped base {name!r}: {path} is missing; {rebuild}")
        found = file_sha256(path)
        if found != expected:
            raise ShippedBaseError(
                f"shipped base {name!r}: {filename} has SHA-256 {found[:16]}..., the manifest "
                f"says {expected[:16]}... (corrupted or edited); {rebuild}")
    return folder


def ship(name: str, write_folder: Any, entry: dict[str, Any]) -> Path:
    """Write base ``name`` with ``write_folder(staging)``, move it into place, record its hashes
    (and ``entry``: seed, settings, data spec, versions) in the manifest. Atomic per step."""
    BASES_DIR.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=BASES_DIR))
    try:
        write_folder(staging)
        files = {p.name: file_sha256(p) for p in sorted(staging.iterdir()) if p.is_file()}
        target = BASES_DIR / name
        if target.exists():
            shutil.rmtree(target)
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    with open(MANIFEST.with_suffix(".lock"), "w") as lock:  # two seeds built at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = read_manifest()
        manifest[name] = {**entry, "files": files}
        tmp = MANIFEST.with_suffix(f".json.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(MANIFEST)
    return target
