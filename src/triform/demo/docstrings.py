"""Real English found on every machine that runs Python: the docstrings of its standard library.

The sentences are read from the library's source files with `ast` (nothing is imported, so no
module's import-time side effects run) and kept when they look like prose: no code, no doctest,
no indented block, 4 to 40 words. About ten thousand sentences of technical English result —
enough for a tiny language model to learn in a minute, and written by people, not by code.
"""

from __future__ import annotations

import ast
import hashlib
import re
import sysconfig
from pathlib import Path

from triform.errors import TriformError

SKIPPED_FOLDERS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "__pycache__", "turtledemo"}
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
MIN_WORDS, MAX_WORDS = 4, 40
PROSE_FRACTION = 0.85  # of characters that are letters or spaces
MIN_SENTENCES = 500


def standard_library() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def source_files(root: Path) -> list[Path]:
    """The library's .py files in a stable order, without its test suites and demos."""
    files = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if any(part in SKIPPED_FOLDERS or part.startswith("test_") for part in parts):
            continue
        files.append(path)
    return sorted(files)


def docstrings(path: Path) -> list[str]:
    """The docstrings of a module, its classes and functions; none when the file does not parse."""
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, OSError):
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            text = ast.get_docstring(node)
            if text:
                found.append(text)
    return found


def is_prose_block(lines: list[str]) -> bool:
    """A paragraph of running text: no indented lines (code, tables), doctests, lists or directives."""
    return not any(
        line.startswith((" ", "\t")) or ">>>" in line or line.lstrip().startswith(("-", "*", ":", "..", "+", "|"))
        for line in lines
    )


def prose_sentences(docstring: str) -> list[str]:
    sentences = []
    for paragraph in re.split(r"\n\s*\n", docstring):
        lines = paragraph.splitlines()
        if not lines or not is_prose_block(lines):
            continue
        for sentence in SENTENCE_END.split(" ".join(line.strip() for line in lines)):
            if is_sentence(sentence):
                sentences.append(sentence)
    return sentences


def is_sentence(text: str) -> bool:
    if not text or not text[0].isupper() or text[-1] not in ".!?" or not text.isascii():
        return False
    if not MIN_WORDS <= len(text.split()) <= MAX_WORDS:
        return False
    return sum(c.isalpha() or c == " " for c in text) >= PROSE_FRACTION * len(text)


def docstring_sentences(root: Path | None = None, limit: int = 0) -> list[tuple[str, str]]:
    """(module file relative to the library, sentence) for every distinct prose sentence, in file
    order; with `limit`, the files are read until that many sentences were found."""
    root = root or standard_library()
    seen, found = set(), []
    for path in source_files(root):
        if limit and len(found) >= limit:
            break
        for text in docstrings(path):
            for sentence in prose_sentences(text):
                if sentence not in seen:
                    seen.add(sentence)
                    found.append((str(path.relative_to(root)), sentence))
    if len(found) < min(MIN_SENTENCES, limit or MIN_SENTENCES):
        raise TriformError(
            f"{root}: found {len(found)} prose sentences in the standard library's docstrings, "
            f"expected at least {MIN_SENTENCES}; point the demo at text of your own with --data"
        )
    return found


def split_by_module(sentences: list[tuple[str, str]], valid_fraction: float = 0.05) -> tuple[list[str], list[str]]:
    """Train and validation sentences, split by module file so that no module is in both
    (sentences of one module resemble each other; a split by sentence would flatter the model)."""
    train, valid = [], []
    for module, sentence in sentences:
        bucket = int(hashlib.sha256(module.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (valid if bucket < valid_fraction else train).append(sentence)
    return train, valid
