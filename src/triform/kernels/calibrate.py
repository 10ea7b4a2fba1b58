"""Kernel choice by measurement: the first time a product or an attention of a new shape class runs,
each candidate kernel computes it a few times and the fastest is kept for the rest of the process.

Which kernel is fastest depends on the CPU, not on its vendor's name: on the AMD EPYC triform was
first tuned on, oneDNN's fp32 products ran 1.3 to 2.4 times faster than MKL's; on an Intel Xeon with
AMX, MKL's were as fast or faster, and a hard-coded choice made training slower than transformers'.
So nothing is hard-coded: a shape class (operation, device, dtype, shape rounded as the caller says,
threads) is timed once, candidates in alternating rounds (A B C, A B C, ...) so that all see the same
load of a shared machine, each scored by its fastest round in CPU time of the calling thread (not
wall-clock time, which counts other processes' turns on the core), ties going to the earlier
candidate (torch's own kernel first). Every candidate is a per-call path: no process-wide switch
is flipped to reach one. A candidate this CPU cannot run (oneDNN's bf16 inner product raises on a
CPU without AVX512) is left out of the choice, and its error is shown in the table; only when every
candidate fails does the error reach the caller.

Choices live in memory for the process; `triform calibrate --save` also writes them to
$TRIFORM_CACHE/kernels.json (default ~/.cache/triform/kernels.json) with the machine's fingerprint
(`kernels/machine.py`: CPU model, instruction sets, torch version) and the kernels' own (triform's
version and a digest of its native kernels' sources: a faster kernel of a later triform is not
passed over for a choice measured against the old one). A file or an entry from another machine,
another torch, other kernels or an unknown kernel is ignored and measured again. Timing draws no
random numbers from torch's generator (its state is restored), so a run calibrating on its first
step trains as one that read the choices from disk.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from triform.io import atomic_write
from triform.kernels.machine import fingerprint

# seconds of one call of `run` by candidate `name`: injected by tests, `best_seconds` otherwise
Timer = Callable[[str, Callable[[], object]], float]
# Alternating rounds per candidate, the fastest round being its time: at least MIN_ROUNDS, and more,
# up to MAX_ROUNDS, until each candidate has run ROUND_SECONDS in all, so that short calls, whose
# times vary most, are timed most often.
MIN_ROUNDS, MAX_ROUNDS, ROUND_SECONDS = 3, 30, 0.05
COLD_ROUNDS = 5  # rounds of calls timed from memory (`FromMemory`)
CACHE_FILE = "kernels.json"
# A shape class: (operation, role, device, dtype, ...sizes, threads), as the kernel's module builds it.
Key = tuple


# The fields of each operation's keys after its name; those in PLAIN are shown without their label.
FIELDS: dict[str, tuple[str, ...]] = {}
PLAIN = {"role", "dtype", "mask", "grad"}


def key_text(key: Key) -> str:
    """A key as the table and the cache file show it: `linear x·Wᵀ bf16 rows=256 in=64 ...`."""
    fields = FIELDS.get(key[0], ())
    parts = [str(key[0])]
    for index, value in enumerate(key[1:]):
        label = fields[index] if index < len(fields) else ""
        if label in PLAIN or not label:
            parts.append(str(value))
        else:
            parts.append(f"{label}{value}" if label.endswith("≤") else f"{label}={value}")
    return " ".join(parts)


def best_seconds(name: str, run: Callable[[], object]) -> float:
    """CPU seconds of the calling thread during one call of `run`. On a shared machine wall-clock
    time also counts the slices in which other processes held the core, which no number of rounds
    reliably avoids; the calling thread's CPU time counts only its own work, and, as torch's thread
    pool waits for its workers by spinning, a call's parallel part too. A run `FromMemory` has the
    caches emptied first, untimed."""
    if isinstance(run, FromMemory):
        run.caches.empty()
    start = time.thread_time()
    run()
    return time.thread_time() - start


def last_level_cache_bytes() -> int:
    """The CPU's largest cache (L3 on most), or 32 MiB where the system does not say."""
    try:
        size = os.sysconf("SC_LEVEL3_CACHE_SIZE") or os.sysconf("SC_LEVEL2_CACHE_SIZE")
    except (ValueError, OSError):
        size = 0
    return size if size > 0 else 32 * 2**20


class Caches:
    """Empties the CPU's caches by reading twice their size; the buffer lives as long as this does
    (one shape class's timing), not the process."""

    def __init__(self):
        self.buffer: torch.Tensor | None = None

    def empty(self) -> None:
        if self.buffer is None:
            self.buffer = torch.ones(2 * last_level_cache_bytes() // 4)  # written: real pages
        self.buffer.sum()


@dataclass
class FromMemory:
    """A candidate's call timed with its operands in memory, as a decoding step meets them: a step
    reads each weight once, after the rest of the model has pushed it out of the caches, while
    rounds of the same call would find it in them. At one row a 6-layer GPT's output projection
    (12.6 MB in fp32, within the 32 MB L3 of an AMD EPYC) timed from the caches chose oneDNN's packed
    kernel, which took 1.05 ms in the step against 0.78 for triform's matrix-vector kernel."""

    run: Callable[[], object]
    caches: Caches

    def __call__(self) -> object:
        return self.run()


# Weights up to this size are timed warm even at a few rows: their calls are short, and emptying the
# caches before each round would cost more time than their choice is worth.
WARM_BYTES = 2**20


def timed_from_memory(weight_bytes: int, runs: dict[str, Callable[[], object]]) -> dict[str, Callable[[], object]]:
    """`runs` timed from memory (`FromMemory`, one Caches for all) where their weights are more than
    WARM_BYTES that the last level cache could hold between rounds but a decoding step, reading the
    rest of the model in between, would not find there; `runs` as they are otherwise."""
    if WARM_BYTES < weight_bytes < 2 * last_level_cache_bytes():
        caches = Caches()
        return {name: FromMemory(run, caches) for name, run in runs.items()}
    return runs


def with_backward(
    call: Callable[[str, list[torch.Tensor]], torch.Tensor], names: tuple[str, ...], tensors: tuple, grad: bool
) -> dict[str, Callable[[], object]]:
    """A run of each candidate `call(name, inputs)` on detached views of `tensors`, with the backward
    pass through them where autograd would run one: a kernel timed in the context it will run in."""
    inputs = [t.detach().requires_grad_(grad) for t in tensors]

    def run(name: str) -> None:
        out = call(name, inputs)
        if grad:
            torch.autograd.grad(out, inputs, torch.ones_like(out))

    return {name: partial(run, name) for name in names}


def cache_path() -> Path:
    folder = os.environ.get("TRIFORM_CACHE") or Path.home() / ".cache" / "triform"
    return Path(folder) / CACHE_FILE


@dataclass
class Choice:
    kernel: str
    seconds: dict[str, float] = field(default_factory=dict)  # fastest round of each candidate that ran
    source: str = "measured"  # measured | disk | only candidate
    failed: dict[str, str] = field(default_factory=dict)  # candidates this machine cannot run: their error


def unchanged(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


class Calibration:
    """The kernel chosen for each shape class, measured on first use."""

    made = itertools.count()

    def __init__(self, timer: Timer | None = None, path: Path | None = None, read_disk: bool = True):
        self.serial = next(Calibration.made)  # which table a layer's remembered choice came from
        self.timer = timer or best_seconds
        self.path = path
        self.read_disk = read_disk
        self.choices: dict[Key, Choice] = {}
        # Guards this table only: two threads never time the same class at once. Reentrant: a candidate may
        # call a kernel of a class not timed yet (the written-out attention its dropout), timed then, inside.
        self.lock = threading.RLock()
        self._stored: dict[str, str] | None = None

    def choose(self, key: Key, names: tuple[str, ...], runs: Callable[[], Mapping[str, Callable[[], object]]]) -> str:
        """The kernel for shape class `key` among `names` (in order of preference on a tie); `runs()`
        gives a call of each, to time, and is called only when the class is new."""
        found = self.choices.get(key)
        if found is not None and found.kernel in names:
            return found.kernel
        with self.lock:
            found = self.choices.get(key)
            if found is None or found.kernel not in names:
                found = self.decide(key, names, runs)
                self.choices[key] = found
        return found.kernel

    def decided(self, key: Key, names: tuple[str, ...]) -> bool:
        """Whether `choose` would answer for `key` without timing (already measured, or on disk)."""
        found = self.choices.get(key)
        if found is not None:
            return found.kernel in names
        return len(names) == 1 or self.stored().get(key_text(key)) in names

    def decide(self, key: Key, names: tuple[str, ...], runs) -> Choice:
        if len(names) == 1:
            return Choice(names[0], source="only candidate")
        stored = self.stored().get(key_text(key))
        if stored in names:
            return Choice(stored, source="disk")
        seconds, failed = self.measure(names, runs())
        fastest = min(seconds, key=lambda name: (seconds[name], names.index(name)))
        return Choice(fastest, seconds, failed=failed)

    def measure(
        self, names: tuple[str, ...], runs: Mapping[str, Callable[[], object]]
    ) -> tuple[dict[str, float], dict[str, str]]:
        """(the fastest round of each candidate that runs here, the first line of each other's error):
        a candidate that raises on its first call is left out, and if none runs, the first error is raised."""
        state = torch.get_rng_state()
        # The candidates' own saved tensors stay plain: inside a checkpointed block (activation
        # checkpointing's hooks), a timed backward pass would otherwise recompute the whole block,
        # which asks this table for its kernels again while it is locked, and never returns.
        with torch.autograd.graph.saved_tensors_hooks(unchanged, unchanged):
            try:
                errors = {}
                for name in names:  # warm-up: first-call allocations, oneDNN's primitive creation, packing
                    try:
                        runs[name]()
                    except RuntimeError as error:  # a kernel this CPU lacks (torch raises RuntimeError)
                        errors[name] = error
                if len(errors) == len(names):
                    raise errors[names[0]]
                failed = {name: str(error).splitlines()[0] for name, error in errors.items()}
                names = tuple(name for name in names if name not in errors)
                best = {name: float("inf") for name in names}
                spent = dict.fromkeys(names, 0.0)
                # Calls from memory vary less, and each round empties the caches first: a few rounds do.
                cold = any(isinstance(runs[name], FromMemory) for name in names)
                for round_index in range(COLD_ROUNDS if cold else MAX_ROUNDS):
                    if round_index >= MIN_ROUNDS and min(spent.values()) >= ROUND_SECONDS:
                        break
                    for name in names:
                        seconds = self.timer(name, runs[name])
                        best[name], spent[name] = min(best[name], seconds), spent[name] + seconds
            finally:
                torch.set_rng_state(state)
        return best, failed

    def stored(self) -> dict[str, str]:
        """The choices on disk for this machine, or none (no file, unreadable, or another machine's)."""
        if self._stored is None:
            self._stored = read_choices(self.path or cache_path()) if self.read_disk else {}
        return self._stored

    def save(self, path: Path | None = None) -> Path:
        """Write the measured choices (with those already stored for this machine) to the cache file."""
        path = path or self.path or cache_path()
        choices = {**read_choices(path), **{key_text(key): c.kernel for key, c in self.choices.items()}}
        stored = {"machine": fingerprint(), "kernels": kernels_identity(), "choices": dict(sorted(choices.items()))}
        text = json.dumps(stored, indent=1)
        return atomic_write(path, text + "\n")

    def table(self) -> list[tuple[str, Choice]]:
        return sorted((key_text(key), choice) for key, choice in self.choices.items())


def kernels_identity() -> dict[str, str]:
    """What a stored choice depends on besides the machine: triform's version and its native kernels'
    sources (`kernels/native.py`'s digest of them)."""
    from triform.kernels import native

    try:
        version = importlib.metadata.version("triform")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
        version = "not installed"
    return {"triform": version, "native": native.source_digest()}


def read_choices(path: Path) -> dict[str, str]:
    """The stored choices of `path` if it was written on this machine (same fingerprint) for these
    kernels, else {}."""
    try:
        stored = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(stored, dict) or stored.get("machine") != fingerprint():
        return {}
    if stored.get("kernels") != kernels_identity():
        return {}
    choices = stored.get("choices")
    return {k: v for k, v in choices.items() if isinstance(v, str)} if isinstance(choices, dict) else {}


_current = Calibration()


def calibration() -> Calibration:
    """The process's calibration, which `Linear` and `attend` consult."""
    return _current


def set_calibration(new: Calibration) -> Calibration:
    """Make `new` the process's calibration (tests inject fake timers this way); returns the old one."""
    global _current
    old, _current = _current, new
    return old


def rows_class(rows: int) -> int:
    """A row count rounded up to a power of two: products of 1,025 and 2,048 rows share a choice."""
    return 1 << max(0, rows - 1).bit_length()
