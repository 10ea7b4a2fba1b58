"""Progress lines for long work: rate, ETA, at most one line every few seconds."""

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


class Bar:
    """Progress of `total` steps as one line: `label [#####-----] 120/250 steps, 5s, ETA 6s, note`.

    On a terminal the line is redrawn in place (at most ten times a second); elsewhere (a log file,
    CI) a line is written every `interval` seconds and at the end, so logs stay short.
    """

    WIDTH = 24  # characters of the bar itself

    def __init__(self, total: int, label: str, *, stream=None, enabled: bool = True, interval: float = 10.0):
        self.total, self.label, self.enabled = max(total, 1), label, enabled
        self.stream = stream or sys.stderr
        self.live = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.throttle = Throttle(0.1 if self.live else interval)
        self.started = time.monotonic()
        self.done, self.note, self.drawn = 0, "", False

    def update(self, done: int, note: str = "") -> None:
        finishing = done >= self.total > self.done
        self.done, self.note = min(done, self.total), note or self.note
        if self.enabled and self.throttle(force=finishing):
            self.draw()

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        filled = round(self.WIDTH * self.done / self.total)
        parts = [
            f"{self.label} [{'#' * filled}{'-' * (self.WIDTH - filled)}] {self.done}/{self.total} steps",
            duration(elapsed),
        ]
        if 0 < self.done < self.total:
            parts.append(f"ETA {duration(elapsed / self.done * (self.total - self.done))}")
        return ", ".join(parts + ([self.note] if self.note else []))

    def draw(self) -> None:
        if self.live:
            self.stream.write(f"\r\033[K{self.line()}")  # back to the line's start, clear it, redraw
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.enabled and self.drawn and self.live:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
