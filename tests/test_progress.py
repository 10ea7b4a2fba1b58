"""Progress bars: redrawn in place on a terminal, a few whole lines elsewhere."""

from __future__ import annotations

import io

from triform.progress import Bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_redraws_one_line_on_a_terminal():
    stream = Terminal()
    with Bar(40, "training gpt", stream=stream) as bar:
        bar.update(10, "loss 5.123")
        bar.throttle.last = -1e9  # as if a tenth of a second had passed
        bar.update(40)
    text = stream.getvalue()
    assert text.count("\r\033[K") == 2 and text.endswith("\n") and text.count("\n") == 1
    first, last = text.split("\r\033[K")[1:]
    assert first.startswith("training gpt [" + "#" * 6 + "-" * 18 + "] 10/40 steps, 0s, ETA 0s, loss 5.123")
    assert last.startswith("training gpt [" + "#" * 24 + "] 40/40 steps, 0s, loss 5.123")  # the last note stays


def test_a_bar_writes_whole_lines_to_a_log_and_nothing_when_disabled():
    log = io.StringIO()
    with Bar(100, "run", stream=log, interval=3600) as bar:
        for step in range(1, 101):
            bar.update(step)
    lines = log.getvalue().splitlines()
    assert [line.split("] ")[1].split(",")[0] for line in lines] == ["1/100 steps", "100/100 steps"]
    quiet = io.StringIO()
    with Bar(5, "run", stream=quiet, enabled=False) as bar:
        bar.update(5)
    assert quiet.getvalue() == ""
