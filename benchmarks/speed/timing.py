"""Alternating timing: variants run in turn (A B C, A B C, ...), so that all see the same machine
load, and every comparison is the median of per-round ratios rather than a ratio of medians."""

from __future__ import annotations

import gc
import os
import re
import statistics
import sys
import time
from collections.abc import Callable

from triform.kernels.host_memory import hand_back_freed_memory


def peak_rss_reset() -> None:
    """Start a new peak-RSS window for this process (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
    except OSError:
        pass


def peak_rss_mib() -> float | None:
    """Peak resident memory of this process since the last reset, in MiB (None off Linux)."""
    try:
        with open("/proc/self/status") as file:
            found = re.search(r"VmHWM:\s+(\d+) kB", file.read())
    except OSError:
        return None
    return int(found.group(1)) / 1024 if found else None


def load() -> float:
    return os.getloadavg()[0]


def alternate(
    variants: dict[str, Callable[[], object]],
    *,
    warmup: int,
    repeats: int,
    label: str = "",
    clock: Callable[[], float] = time.perf_counter,
) -> dict:
    """Seconds per call of each variant: `warmup` untimed rounds, then `repeats` timed rounds, each
    round calling every variant once in order. Also the peak RSS of the first call of each variant
    (its own window: the process's memory while that variant ran, every model of the case loaded)."""
    rss: dict[str, float | None] = {}
    for round_index in range(warmup):
        for name, run in variants.items():
            gc.collect()
            if round_index == 0:  # the window starts without the heap memory other variants freed
                hand_back_freed_memory()
                peak_rss_reset()
            run()
            if round_index == 0:
                rss[name] = peak_rss_mib()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    loads = [load()]
    for round_index in range(repeats):
        for name, run in variants.items():
            start = clock()
            run()
            seconds[name].append(clock() - start)
        loads.append(load())
        shown = "  ".join(f"{n} {s[-1]:.3f}s" for n, s in seconds.items())
        print(
            f"  {label} round {round_index + 1}/{repeats}: {shown}  (load {loads[-1]:.1f})", file=sys.stderr, flush=True
        )
    return {"seconds": seconds, "peak_rss_mib": rss, "load": loads}


def paired_ratio(slow: list[float], fast: list[float]) -> float:
    """Median over rounds of slow / fast: how many times faster `fast` is."""
    return statistics.median(s / f for s, f in zip(slow, fast))


def median(values: list[float]) -> float:
    return statistics.median(values)
