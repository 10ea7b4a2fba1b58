"""GET /v1/models/{name}/pattern.png: the attention-pattern picture of a model's objective (pictures.py's
drawing, as `triform inspect --png` makes it) for a text, with the text laid out as that objective lays
out its training text. Pictures are drawn one at a time (pyplot is not thread-safe) and kept."""

from __future__ import annotations

import functools
import tempfile
import threading
from pathlib import Path

from triform.explain import prepared_example
from triform.pictures import draw_batch

LOCK = threading.Lock()
EXAMPLE = "the quick brown fox jumps over the lazy dog"
MAX_WORDS = 24


def shortened(text: str) -> str:
    words = text.split()[:MAX_WORDS]
    return " ".join(words) if words else EXAMPLE


@functools.lru_cache(maxsize=256)
def pattern_png(arch: str, objective: str, pattern: str, text: str, target: str, reads_pairs: bool) -> bytes:
    """PNG bytes of the picture of `text` (and `target`, for a source -> target objective)."""
    batch, tokenizer = prepared_example(
        arch, objective, shortened(text), pattern=pattern, target=shortened(target) if reads_pairs else None
    )
    title = f"{arch} + {objective} + {batch.pattern}"
    with LOCK, tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pattern.png"
        draw_batch(batch, lambda ids: [tokenizer.id_to_token(int(i)) for i in ids], path, title=title)
        return path.read_bytes()
