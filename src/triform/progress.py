"""Progress lines for long work: rate, ETA, at most one line every few seconds (bars: tqdm, in
train/reporting.py)."""

from __future__ import annotations

import sys
import time


def duration(seconds: float) -> str:
    """3s, 4m05s, 2h03m."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def count(value: float) -> str:
    """1234 -> 1.2k, 5_600_000 -> 5.6M."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


class Throttle:
    """True at most once every `interval` seconds (and on the first call)."""

    def __init__(self, interval: float = 2.0):
        self.interval, self.last = interval, -float("inf")

    def __call__(self, force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - self.last >= self.interval:
            self.last = now
            return True
        return False


def say(line: str, stream=None) -> None:
    print(line, file=stream or sys.stderr, flush=True)
