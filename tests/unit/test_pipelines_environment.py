"""The ``unisd.env.*`` tags: parsing, the fingerprint's sensitivity, mixed train/eval machines."""

from __future__ import annotations

import re
from pathlib import Path

from pipelines.environment import (
    ENV_TAG,
    FACTS,
    KERNEL_FLAGS,
    cell_dtype,
    collect_environment,
    environment_tags,
    parse_cpuinfo,
    parse_nvidia_driver,
)

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu vme sse4_2 avx avx2 fma avx512f avx512bw avx512_bf16 amx_tile amx_bf16 rdrand
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu vme sse4_2 avx avx2 fma avx512f avx512bw avx512_bf16 amx_tile amx_bf16 rdrand
"""
GRAVITON = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics sve
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""
FACT_VALUES = {fact: f"value-{fact}" for fact in FACTS}


def test_parse_cpuinfo_keeps_model_and_only_the_kernel_flags_in_a_fixed_order():
    model, flags = parse_cpuinfo(XEON)
    assert model == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    assert flags == "sse4_2,avx,avx2,fma,avx512f,avx512bw,avx512_bf16,amx_tile,amx_bf16"
    arm_model, arm_flags = parse_cpuinfo(GRAVITON)
    assert arm_model == "implementer 0x41 part 0xd40" and arm_flags == "asimd,sve"
    assert parse_cpuinfo("") == ("unknown", "none")


def test_parse_nvidia_driver_version():
    text = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC "
            "2024\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
    assert parse_nvidia_driver(text) == "550.54.15"
    assert parse_nvidia_driver("nothing here") == "unknown"


def test_tags_carry_every_agreed_name_and_the_dtype():
    tags = environment_tags(FACT_VALUES, FACT_VALUES, "bfloat16")
    agreed = {"cpu_model", "cpu_flags", "gpu", "gpu_driver", "cuda", "torch", "transformers",
              "peft", "lm_eval", "threads", "dtype", "fingerprint"}
    assert agreed <= {name.removeprefix(ENV_TAG) for name in tags}
    assert tags[ENV_TAG + "dtype"] == "bfloat16"
    assert tags[ENV_TAG + "torch"] == "value-torch"
    assert re.fullmatch(r"[0-9a-f]{12}", tags[ENV_TAG + "fingerprint"])


def test_fingerprint_changes_with_every_fact_and_only_then():
    reference = environment_tags(FACT_VALUES, FACT_VALUES, "float32")[ENV_TAG + "fingerprint"]
    assert environment_tags(dict(FACT_VALUES), FACT_VALUES, "float32")[
        ENV_TAG + "fingerprint"] == reference
    seen = {reference}
    for fact in FACTS:  # enumeration: each fact alone moves the fingerprint, to a new value
        changed = {**FACT_VALUES, fact: "other"}
        value = environment_tags(changed, changed, "float32")[ENV_TAG + "fingerprint"]
        assert value not in seen, fact
        seen.add(value)
    # the dtype is the cell's setting, not the machine: a base cell ("auto") and its trained
    # cells (float32) on one machine share an environment
    assert environment_tags(FACT_VALUES, FACT_VALUES, "auto (evaluation only)")[
        ENV_TAG + "fingerprint"] == reference


def test_train_and_eval_on_different_machines_show_both_values():
    evaluated = {**FACT_VALUES, "cpu_flags": "avx,avx2,fma"}
    trained = {**FACT_VALUES, "cpu_flags": "avx,avx2,fma,avx512f"}
    tags = environment_tags(trained, evaluated, "float32")
    assert tags[ENV_TAG + "cpu_flags"] == "train: avx,avx2,fma,avx512f; eval: avx,avx2,fma"
    assert tags[ENV_TAG + "torch"] == "value-torch"
    same = environment_tags(evaluated, evaluated, "float32")
    assert tags[ENV_TAG + "fingerprint"] != same[ENV_TAG + "fingerprint"]
    # a base cell has no train step; a record from before this module has no facts at all
    assert environment_tags(None, evaluated, "float32") == same
    assert set(environment_tags(None, None, "float32").values()) >= {"unknown"}


def test_cell_dtype_from_the_train_config_else_evaluation_only():
    assert cell_dtype({"train": {"dtype": "bfloat16"}}) == "bfloat16"
    assert cell_dtype({"train": None}).startswith("auto")


def test_collect_environment_reads_this_machine():
    facts = collect_environment()
    assert set(facts) == set(FACTS)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():  # an independent read of the same file
        text = cpuinfo.read_text()
        assert facts["cpu_model"] in text
        present = set(re.findall(r"^flags\s*:\s*(.*)$", text, re.M)[0].split()) \
            if re.search(r"^flags", text, re.M) else set()
        assert facts["cpu_flags"].split(",") == [f for f in KERNEL_FLAGS if f in present] or \
            (facts["cpu_flags"] == "none" and not present & set(KERNEL_FLAGS))
    import torch

    assert facts["torch"] == torch.__version__.split("+")[0] or \
        facts["torch"] == torch.__version__
    assert facts["threads"] == f"intra={torch.get_num_threads()}," \
                               f"interop={torch.get_num_interop_threads()}"
    if not torch.cuda.is_available():
        assert (facts["gpu"], facts["gpu_driver"], facts["cuda"]) == ("none", "none", "none")
