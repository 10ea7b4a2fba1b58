"""Freed host memory kept in the process for the next step, while a CPU training runs (glibc only).

glibc's malloc serves every block over its mmap threshold (at most 32 MiB) with its own `mmap`,
and `free` hands it straight back with `munmap`. A training step frees and reallocates the same
activations and gradients every step, so each one comes back as fresh pages that the kernel must
fault in and zero: a step of benchmarks/run.py's GPT (batch 16 x 256) took 98,000 page faults and
0.22 s of system time in fp32, 33,000 and 0.05 s in bf16, and none with this (AMD EPYC, 2 threads;
`python benchmarks/profile_training.py [--keep-freed-memory]`). With mmap off for malloc
(`M_MMAP_MAX` 0) and the heap never trimmed (`M_TRIM_THRESHOLD` at its largest), freed blocks stay
in the heap and the next step reuses them, and the faults are gone.

What it buys depends on the model and on what else runs in the process. GPT-2 small fine-tuned with
all 8 rows of 8 x 512 tokens in one micro-batch (benchmarks/memory.py with and without
--keep-freed-memory, one step each, AMD EPYC) took 52 % less time a step in fp32, 35 % with
checkpointing and bf16, 25 % for LoRA; with one row per micro-batch, no less. benchmarks/run.py,
where transformers' steps alternate with triform's in one process and share its heap, showed no
gain. And it costs memory: the heap holds its high-water mark, and a freed block cannot always serve
the next request of its own size (torch asks for 64-byte aligned blocks, which need a little more
than the block freed), so the heap grows instead. GPT-2 small's peak rose from 10.07 to 10.47 GiB
in fp32, from 3.32 to 4.11 GiB with checkpointing and bf16, and from 2.43 to 5.33 GiB for LoRA. So
the training option (`--train.keep_freed_memory`) is off by default. On leaving, glibc's defaults
are set back and the unused heap is returned (`malloc_trim`), so a process that trains and then
does something else gets its memory back.

The environment variables `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...` do the same for a whole
process, from its start; this does it for the training only, from Python, with no restart.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

# mallopt parameters and glibc's defaults for them (malloc/malloc.h, mallopt(3))
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536
NEVER_TRIM = 2**31 - 1  # mallopt takes an int

_lock = threading.Lock()
_holders = 0  # nested or concurrent trainings in one process: the last to leave restores


@cache
def glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (whose mallopt this tunes), else None (macOS, musl, Windows)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        library = ctypes.CDLL(name)
    except OSError:
        return None
    return library if hasattr(library, "mallopt") and hasattr(library, "malloc_trim") else None


@contextmanager
def freed_memory_kept(enabled: bool = True) -> Iterator[bool]:
    """Inside: freed blocks stay in the process's heap for reuse. Yields whether that is in force
    (False when not enabled, or when the C library is not glibc: then nothing changes)."""
    global _holders
    library = glibc() if enabled else None
    if library is None:
        yield False
        return
    with _lock:
        _holders += 1
        if _holders == 1:
            library.mallopt(M_MMAP_MAX, 0)
            library.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)
    try:
        yield True
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                library.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                library.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
                library.malloc_trim(0)


def hand_back_freed_memory() -> None:
    """Return the heap's free memory to the OS now (glibc's `malloc_trim`), kept or not: what a
    measurement of peak resident memory starts from."""
    library = glibc()
    if library is not None:
        library.malloc_trim(0)
