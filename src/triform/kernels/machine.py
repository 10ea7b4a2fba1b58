"""What this machine is, as far as kernel speed goes: the CPU's model, family and vendor, the instruction sets
that decide which kernels are fast (AVX2, AVX512, AVX512-BF16, AMX), and torch's version (the number
of threads is part of each choice's own key).

A kernel choice measured on one machine says nothing about another (oneDNN's fp32 products were
faster than MKL's on an AMD EPYC, slower on an Intel Xeon with AMX), so every stored choice carries
this fingerprint and is used only where it matches. The family and model numbers count because a
virtual machine's model name may be as bare as `AMD EPYC` on CPUs of two generations (Zen 4: family
25; Zen 5: family 26), whose fastest kernels differ.

Read from /proc/cpuinfo on Linux (on Arm, where it names no model, from the core's implementer and
part numbers) and from sysctl on macOS; elsewhere from what the platform module and torch report.
"""

from __future__ import annotations

import platform
import subprocess
from functools import cache

import torch

# /proc/cpuinfo flag -> the name shown; the instruction sets the kernels of oneDNN and MKL dispatch on,
# and on Arm (the `Features` line) those of torch's and the compilers' vector code: NEON, the int8 dot
# product, SVE and the bf16 and int8 matrix products.
ISA_FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX512",
    "avx512_vnni": "AVX512-VNNI",
    "avx512_bf16": "AVX512-BF16",
    "avx512_fp16": "AVX512-FP16",
    "amx_tile": "AMX",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
    "asimd": "NEON",
    "asimddp": "DOTPROD",
    "sve": "SVE",
    "sve2": "SVE2",
    "bf16": "BF16",
    "i8mm": "I8MM",
    "sme": "SME",
}
# macOS's sysctl names for the same (hw.optional), on Apple silicon and on Intel Macs
SYSCTL_FLAGS = {
    "hw.optional.avx2_0": "AVX2",
    "hw.optional.avx512f": "AVX512",
    "hw.optional.avx512vnni": "AVX512-VNNI",
    "hw.optional.AdvSIMD": "NEON",
    "hw.optional.arm.FEAT_DotProd": "DOTPROD",
    "hw.optional.arm.FEAT_BF16": "BF16",
    "hw.optional.arm.FEAT_I8MM": "I8MM",
    "hw.optional.arm.FEAT_SME": "SME",
}
# Arm's /proc/cpuinfo has no model name: the designer (`CPU implementer`) and the design (`CPU part`)
# name the core. Those of common servers and boards; any other is shown by its numbers.
ARM_IMPLEMENTERS = {"0x41": "Arm", "0x48": "HiSilicon", "0x4e": "NVIDIA", "0x51": "Qualcomm", "0x61": "Apple"}
ARM_IMPLEMENTERS |= {"0xc0": "Ampere"}
ARM_PARTS = {
    ("0x41", "0xd08"): "Cortex-A72",
    ("0x41", "0xd0b"): "Cortex-A76",
    ("0x41", "0xd0c"): "Neoverse-N1",
    ("0x41", "0xd40"): "Neoverse-V1",
    ("0x41", "0xd49"): "Neoverse-N2",
    ("0x41", "0xd4f"): "Neoverse-V2",
    ("0x48", "0xd01"): "Kunpeng-920",
}


def first_processor(text: str) -> dict[str, str]:
    """The fields of the first processor of a /proc/cpuinfo text."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    return fields


@cache
def cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo; on macOS, sysctl's (`sysctl_fields`); else empty."""
    try:
        with open("/proc/cpuinfo") as file:
            return first_processor(file.read())
    except OSError:
        pass
    return sysctl_fields() if platform.system() == "Darwin" else {}


def sysctl_fields() -> dict[str, str]:
    """macOS's description of the CPU, by sysctl: machdep.cpu.* (the brand string) and hw.optional.*
    (an instruction set each, 1 where present)."""
    try:
        done = subprocess.run(
            ["sysctl", "machdep.cpu", "hw.optional"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    fields = {}
    for line in done.stdout.splitlines():
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    return fields


def cpu_model() -> str:
    fields = cpuinfo()
    if "model name" in fields:
        return fields["model name"]
    if "machdep.cpu.brand_string" in fields:
        return fields["machdep.cpu.brand_string"]
    if "CPU implementer" in fields:
        implementer, part = fields["CPU implementer"], fields.get("CPU part", "?")
        designer = ARM_IMPLEMENTERS.get(implementer, f"Arm implementer {implementer}")
        return f"{designer} {ARM_PARTS.get((implementer, part), f'part {part}')}"
    return platform.processor() or platform.machine()


def cpu_family() -> str | None:
    """`family 26 model 2`, from /proc/cpuinfo's numbers (on Arm, `implementer 0x41 part 0xd40 r1p1`);
    None where they are not given."""
    fields = cpuinfo()
    if "cpu family" in fields:
        return f"family {fields['cpu family']} model {fields.get('model', '?')}"
    if "CPU implementer" in fields:
        revision = f"r{int(fields.get('CPU variant', '0'), 0)}p{fields.get('CPU revision', '?')}"
        return f"implementer {fields['CPU implementer']} part {fields.get('CPU part', '?')} {revision}"
    return None


def cpu_vendor() -> str:
    fields = cpuinfo()
    if "vendor_id" in fields:
        return fields["vendor_id"]
    if "CPU implementer" in fields:
        return ARM_IMPLEMENTERS.get(fields["CPU implementer"], fields["CPU implementer"])
    return fields.get("machdep.cpu.vendor") or ("Apple" if "hw.optional.arm64" in fields else "unknown")


def isa_flags() -> list[str]:
    """The instruction sets of ISA_FLAGS this CPU has, by their shown names."""
    fields = cpuinfo()
    flags = set(fields.get("flags", "").split()) | set(fields.get("Features", "").split())
    if flags:
        return [shown for flag, shown in ISA_FLAGS.items() if flag in flags]
    if any(name.startswith("hw.optional.") for name in fields):  # macOS
        return [shown for name, shown in SYSCTL_FLAGS.items() if fields.get(name) == "1"]
    # neither: what torch itself detects
    found = {"AVX512-BF16": torch.cpu._is_avx512_bf16_supported(), "AMX": torch.cpu._is_amx_tile_supported()}
    return [name for name, present in found.items() if present]


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
