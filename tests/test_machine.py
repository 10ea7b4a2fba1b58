"""The machine a kernel choice or a benchmark figure belongs to, named from what the system reports:
/proc/cpuinfo on x86 and Arm Linux, sysctl on macOS."""

import pytest

from triform.kernels import machine

# The first processor of /proc/cpuinfo as Linux reports an AWS Graviton3 (Neoverse V1)
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc \
dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 \
i8mm bf16 dgh rng
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
CPU revision\t: 1

processor\t: 1
BogoMIPS\t: 2100.00
"""
# An x86 one, as a virtual machine reports it
EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx avx2 avx512f avx512bw avx512_vnni avx512_bf16 sha_ni

"""
# sysctl machdep.cpu hw.optional on an Apple M2, in part
APPLE_M2 = {
    "machdep.cpu.brand_string": "Apple M2",
    "machdep.cpu.core_count": "8",
    "hw.optional.arm64": "1",
    "hw.optional.AdvSIMD": "1",
    "hw.optional.arm.FEAT_DotProd": "1",
    "hw.optional.arm.FEAT_BF16": "1",
    "hw.optional.arm.FEAT_I8MM": "1",
    "hw.optional.arm.FEAT_SME": "0",
}


@pytest.fixture
def reported(monkeypatch):
    """Make cpuinfo() answer with the given fields, for the test's length."""

    def report(fields: dict[str, str]) -> None:
        monkeypatch.setattr(machine, "cpuinfo", lambda: fields)

    return report


def test_an_x86_machine_is_named_by_model_family_and_instruction_sets(reported):
    reported(machine.first_processor(EPYC))
    assert machine.this_machine() == "AMD EPYC (family 26 model 2; AVX2, AVX512, AVX512-VNNI, AVX512-BF16)"
    assert machine.cpu_vendor() == "AuthenticAMD"


def test_an_arm_linux_machine_is_named_by_its_core_and_features(reported):
    reported(machine.first_processor(GRAVITON3))
    assert machine.cpu_model() == "Arm Neoverse-V1"
    assert machine.cpu_family() == "implementer 0x41 part 0xd40 r1p1"
    assert machine.cpu_vendor() == "Arm"
    assert machine.isa_flags() == ["NEON", "DOTPROD", "SVE", "BF16", "I8MM"]  # not sve2, sme: absent
    fingerprint = machine.fingerprint()
    assert (fingerprint["cpu"], fingerprint["family"]) == ("Arm Neoverse-V1", "implementer 0x41 part 0xd40 r1p1")


def test_an_unknown_arm_core_is_named_by_its_numbers(reported):
    fields = machine.first_processor(GRAVITON3) | {"CPU implementer": "0x6d", "CPU part": "0x123"}
    reported(fields)
    assert machine.cpu_model() == "Arm implementer 0x6d part 0x123" and machine.cpu_vendor() == "0x6d"


def test_a_mac_is_named_by_sysctl_s_brand_string_and_its_present_features(reported):
    reported(APPLE_M2)
    assert machine.this_machine() == "Apple M2 (NEON, DOTPROD, BF16, I8MM)"  # FEAT_SME is 0: not shown
    assert machine.cpu_vendor() == "Apple" and machine.cpu_family() is None


def test_sysctl_s_lines_are_read_as_fields(monkeypatch):
    class Done:
        stdout = "machdep.cpu.brand_string: Apple M2\nhw.optional.arm.FEAT_BF16: 1\nsysctl: unknown oid\n"

    monkeypatch.setattr(machine.subprocess, "run", lambda *args, **kwargs: Done())
    fields = machine.sysctl_fields()
    assert fields["machdep.cpu.brand_string"] == "Apple M2" and fields["hw.optional.arm.FEAT_BF16"] == "1"
    monkeypatch.setattr(machine.subprocess, "run", lambda *args, **kwargs: (_ for _ in ()).throw(OSError("none")))
    assert machine.sysctl_fields() == {}
