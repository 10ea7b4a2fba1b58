"""Freed host memory kept in the process while a CPU training runs (kernels/host_memory.py)."""

import os
import resource

import pytest
import torch
from training_helpers import train_args, write_text

from triform.cli import main
from triform.kernels import host_memory
from triform.kernels.host_memory import freed_memory_kept, glibc, hand_back_freed_memory

glibc_only = pytest.mark.skipif(glibc() is None, reason="mallopt is glibc's")
# A training step's activations: several sizes, each over glibc's largest mmap threshold (32 MiB), so
# that with its defaults each is mapped and unmapped whatever the process allocated before
STEP_MIB = (64, 40, 64, 48)


def resident_mib() -> float:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def step() -> tuple[float, int]:
    """(MiB still resident, page faults taken) after a step's tensors are written and freed."""
    before, faults = resident_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tensors = [torch.ones(mib * 2**18) for mib in STEP_MIB]  # float32: 4 bytes each
    del tensors
    return resident_mib() - before, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


@glibc_only
def test_a_repeated_step_reuses_its_freed_memory_inside_and_leaving_hands_it_back():
    hand_back_freed_memory()  # what an earlier test left free in the heap is not resident
    before = resident_mib()
    with freed_memory_kept() as kept:
        assert kept
        held, _ = step()
        assert held > sum(STEP_MIB) * 3 / 4  # kept for the next step
        (again, faults), (third, _) = step(), step()
        assert resident_mib() - before > sum(STEP_MIB) * 3 / 4
    # fresh mappings would fault in every page (55,296 of 4 KiB); the kept heap serves most again (a
    # block glibc cannot reuse for its aligned successor is mapped anew: some MiB)
    pages = sum(STEP_MIB) * 2**20 // os.sysconf("SC_PAGE_SIZE")
    assert faults < pages / 4
    assert again < sum(STEP_MIB) / 4 and third < sum(STEP_MIB) / 4  # nor does it grow a step's worth a step
    assert resident_mib() - before < sum(STEP_MIB) / 4  # the unused heap went back on leaving


class FakeLibrary:
    def __init__(self):
        self.calls = []

    def mallopt(self, parameter, value):
        self.calls.append(("mallopt", parameter, value))

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))


def test_the_settings_hold_inside_and_glibcs_defaults_return_when_the_last_user_leaves(monkeypatch):
    library = FakeLibrary()
    monkeypatch.setattr(host_memory, "glibc", lambda: library)
    kept = [("mallopt", host_memory.M_MMAP_MAX, 0), ("mallopt", host_memory.M_TRIM_THRESHOLD, 2**31 - 1)]
    restored = [
        ("mallopt", host_memory.M_MMAP_MAX, 65536),
        ("mallopt", host_memory.M_TRIM_THRESHOLD, 128 * 1024),
        ("malloc_trim", 0),
    ]
    with freed_memory_kept():
        with freed_memory_kept():  # a second user (a nested or concurrent training) changes nothing
            assert library.calls == kept
        assert library.calls == kept  # nor does its leaving
    assert library.calls == kept + restored


def test_off_or_without_glibc_nothing_changes(monkeypatch):
    with freed_memory_kept(enabled=False) as kept:
        assert not kept
    monkeypatch.setattr(host_memory, "glibc", lambda: None)
    with freed_memory_kept() as kept:
        assert not kept


@pytest.mark.parametrize("flag, expected", [((), False), (("--train.keep_freed_memory", "true"), True)])
def test_a_cpu_training_keeps_freed_memory_when_asked(tmp_path, monkeypatch, flag, expected):
    asked = []
    real = freed_memory_kept

    def recording(enabled=True):
        asked.append(enabled)
        return real(enabled)

    monkeypatch.setattr("triform.train.run.freed_memory_kept", recording)
    train_file, valid_file = write_text(tmp_path / "train.txt", 60), write_text(tmp_path / "valid.txt", 10, seed=1)
    argv = train_args(tmp_path / "run", train_file, valid_file, 2, "--preset", "tiny-gpt", "--train.device", "cpu")
    assert main([*argv, *flag]) == 0
    assert asked == [expected]
