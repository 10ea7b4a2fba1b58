"""Freed host memory kept in the process while a CPU training runs (kernels/host_memory.py)."""

import os
import resource

import pytest
import torch
from training_helpers import train_args, write_text

from triform.cli import main
from triform.kernels import host_memory
from triform.kernels.host_memory import freed_memory_kept, glibc

glibc_only = pytest.mark.skipif(glibc() is None, reason="mallopt is glibc's")
STEP_MIB = (64, 16, 64, 8)  # a training step's activations: several sizes, each over glibc's mmap threshold


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
def test_a_repeated_step_reuses_its_freed_memory_inside_and_hands_it_back_after():
    held, _ = step()
    assert held < 16  # glibc's default: each block is unmapped when freed
    with freed_memory_kept() as kept:
        assert kept
        held, _ = step()
        assert held > sum(STEP_MIB) / 2  # kept for the next step
        (again, faults), (third, _) = step(), step()
    # fresh mappings would fault in 38,000 pages of 4 KiB; the kept heap serves them again
    assert faults < 1000
    assert again < 16 and third < 16  # and does not grow step by step
    assert step()[0] < 16  # defaults back


@glibc_only
def test_leaving_returns_the_unused_heap_and_nested_uses_restore_when_the_last_leaves():
    before = resident_mib()
    with freed_memory_kept():
        with freed_memory_kept():
            step()
        assert resident_mib() - before > sum(STEP_MIB) / 2
    assert resident_mib() - before < 16


def test_off_or_without_glibc_nothing_changes(monkeypatch):
    with freed_memory_kept(enabled=False) as kept:
        assert not kept
    monkeypatch.setattr(host_memory, "glibc", lambda: None)
    with freed_memory_kept() as kept:
        assert not kept


@pytest.mark.parametrize("flag, expected", [((), True), (("--train.keep_freed_memory", "false"), False)])
def test_a_cpu_training_runs_with_freed_memory_kept_unless_turned_off(tmp_path, monkeypatch, flag, expected):
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
