"""What this machine is, as far as kernel speed goes: the CPU's model, family and vendor, the instruction sets
that decide which kernels are fast (AVX2, AVX512, AVX512-BF16, AMX), and torch's version (the number
of threads is part of each choice's own key).

A kernel choice measured on one machine says nothing about another (oneDNN's fp32 products were
faster than MKL's on an AMD EPYC, slower on an Intel Xeon with AMX), so every stored choice carries
this fingerprint and is used only where it matches. The family and model numbers count because a
virtual machine's model name may be as bare as `AMD EPYC` on CPUs of two generations (Zen 4: family
25; Zen 5: family 26), whose fastest kernels differ.
"""

from __future__ import annotations

import platform
from functools import cache

import torch

# /proc/cpuinfo flag -> the name shown; the instruction sets the kernels of oneDNN and MKL dispatch on.
ISA_FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX512",
    "avx512_vnni": "AVX512-VNNI",
    "avx512_bf16": "AVX512-BF16",
    "avx512_fp16": "AVX512-FP16",
    "amx_tile": "AMX",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
}


@cache
def cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty off Linux)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if not line.strip():
                    break
                name, _, value = line.partition(":")
                fields[name.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    return cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_family() -> str | None:
    """`family 26 model 2`, from /proc/cpuinfo's numbers; None where they are not given."""
    fields = cpuinfo()
    if "cpu family" not in fields:
        return None
    return f"family {fields['cpu family']} model {fields.get('model', '?')}"


def cpu_vendor() -> str:
    return cpuinfo().get("vendor_id", "unknown")


def isa_flags() -> list[str]:
    """The instruction sets of ISA_FLAGS this CPU has, by their shown names."""
    flags = set(cpuinfo().get("flags", "").split())
    if not flags:  # no /proc/cpuinfo: what torch itself detects
        found = {"AVX512-BF16": torch.cpu._is_avx512_bf16_supported(), "AMX": torch.cpu._is_amx_tile_supported()}
        return [name for name, present in found.items() if present]
    return [shown for flag, shown in ISA_FLAGS.items() if flag in flags]


def machine_name(cpu: str, isa: list[str] | None, family: str | None = None) -> str:
    """A machine as reports name it, `AMD EPYC (family 26 model 2; AVX2, AVX512)`: a CPU model with its
    family and instruction sets, where they are known (a stored run may not have recorded them)."""
    known = "; ".join(part for part in (family, ", ".join(isa or [])) if part)
    return f"{cpu} ({known})" if known else cpu


def this_machine() -> str:
    """This machine's `machine_name`: one table per machine in the reports that benchmarks write."""
    return machine_name(cpu_model(), isa_flags(), cpu_family())


def fingerprint() -> dict:
    """What a measured kernel choice depends on; a stored choice is used only where all of it matches."""
    return {
        "cpu": cpu_model(),
        "family": cpu_family(),
        "vendor": cpu_vendor(),
        "isa": isa_flags(),
        "torch": torch.__version__,
        "onednn": torch.backends.mkldnn.is_available(),
    }
