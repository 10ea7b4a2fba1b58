"""Replace one named section of docs/results.md, leaving the others as they are.

A section runs from `<!-- results:NAME -->` to `<!-- /results:NAME -->`; a missing one is appended.
"""

from __future__ import annotations

import re
from pathlib import Path

from triform.io import atomic_write

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results.md"
HEADER = "# Results\n\nMeasured figures, each section written by the script it names; rerun the script to refresh it.\n"


def replace_section(name: str, body: str, path: Path = RESULTS) -> Path:
    start, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text() if path.is_file() else HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    return atomic_write(path, text)
