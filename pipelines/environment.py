"""The machine a step ran on, as the ``unisd.env.*`` tags of a cell's MLflow run (issue 13.3).

Two users who get different numbers from the same study should be able to see why: the same
pinned torch runs different float kernels on an AVX2 and an AVX-512 CPU (design.md, environment
facts), a GPU run depends on the GPU, its driver and CUDA, and the dtype and thread counts change
the arithmetic. So every step reports :func:`collect_environment` (run in the worker, where the
arithmetic happens), and the driver turns the train and evaluate steps' facts plus the cell's
dtype into tags with :func:`environment_tags`:

``unisd.env.cpu_model``, ``cpu_flags`` (the instruction-set flags that select kernels, comma
list), ``cpu_capability`` (the kernel level torch dispatches to: ``AVX512``, ``AVX2``, ...),
``gpu``, ``gpu_driver``, ``cuda``, ``torch``, ``transformers``, ``peft``, ``lm_eval``,
``threads`` (``intra=N,interop=M``), ``dtype``, and ``fingerprint``: a short hash of all the
others except the dtype, so that one tag tells whether two runs share a machine and software
stack. The dtype is the cell's own setting (it is in the run key, and a study's base cell
legitimately differs from its trained cells), so it is recorded but does not split environments.

A cell whose train and evaluate steps ran on different machines gets ``train: X; eval: Y`` for
each fact that differs (and a fingerprint of that). Facts that do not apply read ``none`` (no
GPU), those that could not be read ``unknown``; a run recorded before this module existed has no
tags at all, which readers treat as "unknown".

Parsing is pure (:func:`parse_cpuinfo`, :func:`parse_nvidia_driver`, :func:`environment_tags`);
only :func:`collect_environment` reads the machine. torch is read only when the process has it
installed; the driver never needs to import it (it only combines the workers' facts).
"""

from __future__ import annotations

import hashlib
import importlib.util
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

ENV_TAG = "unisd.env."
# Flags that decide which float kernels run (x86: vector widths, FMA, bf16/fp16 and AMX units;
# ARM: NEON/SVE). Everything else in /proc/cpuinfo does not change results.
KERNEL_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16",
                "amx_int8", "asimd", "sve", "sve2")
PACKAGES = {"torch": "torch", "transformers": "transformers", "peft": "peft",
            "lm_eval": "lm-eval"}
FACTS = ("cpu_model", "cpu_flags", "cpu_capability", "gpu", "gpu_driver", "cuda", "torch",
         "transformers", "peft", "lm_eval", "threads")
FINGERPRINT_CHARS = 12


def parse_cpuinfo(text: str) -> tuple[str, str]:
    """``(model name, kernel flags as a comma list)`` from the text of ``/proc/cpuinfo``.

    x86 says ``model name`` and ``flags``; ARM says ``Features`` and often no model name (then
    ``CPU implementer``/``CPU part`` identify it).
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, separator, value = line.partition(":")
        if separator and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    model = fields.get("model name") or fields.get("Model") or fields.get("Hardware")
    if not model and "CPU implementer" in fields:
        model = f"implementer {fields['CPU implementer']} part {fields.get('CPU part', '?')}"
    present = set((fields.get("flags") or fields.get("Features") or "").split())
    flags = ",".join(flag for flag in KERNEL_FLAGS if flag in present)
    return (model or "unknown"), (flags or "none")


def parse_nvidia_driver(text: str) -> str:
    """The driver version from ``/proc/driver/nvidia/version`` (``... Kernel Module  550.54.15``)."""
    for line in text.splitlines():
        if line.startswith("NVRM version"):
            for word in line.split():
                if word[:1].isdigit() and "." in word:
                    return word
    return "unknown"


def environment_tags(train: Mapping[str, str] | None, evaluate: Mapping[str, str] | None,
                     dtype: str) -> dict[str, str]:
    """The ``unisd.env.*`` tags of a cell from its steps' facts (either may be missing)."""
    steps = [facts for facts in (train, evaluate) if facts]
    values: dict[str, str] = {}
    for fact in FACTS:
        seen = [str(facts.get(fact, "unknown")) for facts in steps]
        if not seen:
            values[fact] = "unknown"
        elif len(set(seen)) == 1:
            values[fact] = seen[0]
        else:
            values[fact] = f"train: {seen[0]}; eval: {seen[1]}"
    tags = {ENV_TAG + name: value[:5000] for name, value in values.items()}
    tags[ENV_TAG + "dtype"] = dtype
    tags[ENV_TAG + "fingerprint"] = fingerprint(values)  # the machine and software, not the dtype
    return tags


def fingerprint(values: Mapping[str, str]) -> str:
    """Short hash of every fact (sorted by name): equal iff every fact is equal."""
    text = "\n".join(f"{name}={values[name]}" for name in sorted(values))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:FINGERPRINT_CHARS]


def cell_dtype(cell_payload: Mapping[str, Any]) -> str:
    """The dtype a cell's config asks for: the train config's, else the evaluation's (``auto``:
    lm-eval loads the checkpoint in the dtype its config names)."""
    train = cell_payload.get("train") or {}
    return str(train.get("dtype", "auto (evaluation only)"))


def collect_environment() -> dict[str, str]:
    """This process's machine facts (the keys of :data:`FACTS`); never raises."""
    facts = {fact: "unknown" for fact in FACTS}
    try:
        facts["cpu_model"], facts["cpu_flags"] = parse_cpuinfo(
            Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        pass
    for fact, package in PACKAGES.items():
        try:
            facts[fact] = metadata.version(package)
        except metadata.PackageNotFoundError:
            facts[fact] = "absent"
    if importlib.util.find_spec("torch") is not None:
        facts.update(_torch_facts())
    return facts


def _torch_facts() -> dict[str, str]:
    import torch

    facts = {"threads": f"intra={torch.get_num_threads()},interop={torch.get_num_interop_threads()}",
             "cpu_capability": _safe(lambda: torch.backends.cpu.get_cpu_capability()),
             "gpu": "none", "gpu_driver": "none", "cuda": "none"}
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        names = sorted({torch.cuda.get_device_name(index) for index in range(count)})
        facts["gpu"] = f"{count} x {', '.join(names)}"
        facts["cuda"] = str(torch.version.cuda)
        facts["gpu_driver"] = _safe(lambda: parse_nvidia_driver(
            Path("/proc/driver/nvidia/version").read_text()))
    return facts


def _safe(read: Any) -> str:
    try:
        return str(read())
    except Exception:  # noqa: BLE001 - a fact we cannot read is "unknown", never a failed step
        return "unknown"
