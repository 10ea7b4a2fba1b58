"""Task data: records with named columns from JSONL, CSV or TSV files, and predictions as JSONL.

Every record remembers its file and line, so that any problem found later (a missing column, an
unknown label, an answer that is not in its context) is reported where the user can fix it.
Formats are told by the file's extension: `.jsonl` / `.json` (one JSON object a line), `.csv`
(RFC 4180, quoted fields allowed) and `.tsv` (tab-separated, no quoting: quotes are text).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from triform.errors import TriformError

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}


class DataError(TriformError, ValueError):
    """A record does not fit its task; the message names the file and line."""


@dataclass(frozen=True)
class Record:
    values: dict
    where: str  # "data.tsv line 7"
    has_lists: bool = False  # JSON records hold lists; CSV / TSV cells are text

    def get(self, column: str, default=None):
        return self.values.get(column, default)

    def require(self, column: str):
        if column not in self.values or self.values[column] is None:
            raise DataError(f"{self.where}: no {column!r} column; found {sorted(self.values)}")
        return self.values[column]

    def error(self, message: str) -> DataError:
        return DataError(f"{self.where}: {message}")


def data_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown data format {path.suffix!r}; expected one of {sorted(FORMATS)}")
    return fmt


def read_records(path: str | os.PathLike, required: Iterable[str] = ()) -> list[Record]:
    """All records of a file; `required` columns must exist in every record (checked here, before
    any work, so that a bad line late in a file fails the run at once)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found")
    fmt = data_format(path)
    records = list(_read_jsonl(path) if fmt == "jsonl" else _read_table(path, "," if fmt == "csv" else "\t"))
    if not records:
        raise DataError(f"{path}: no records")
    for record in records:
        for column in required:
            record.require(column)
    return records


def _read_jsonl(path: Path):
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                values = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path} line {number}: invalid JSON ({error.msg})") from None
            if not isinstance(values, dict):
                raise DataError(f"{path} line {number}: expected a JSON object with named fields")
            yield Record(values, f"{path} line {number}", has_lists=True)


def _read_table(path: Path, delimiter: str):
    with path.open(encoding="utf-8", newline="") as file:
        quoting = csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE
        reader = csv.reader(file, delimiter=delimiter, quoting=quoting)
        header = next(reader, None)
        if not header:
            raise DataError(f"{path} line 1: expected a header row naming the columns")
        header = [name.strip() for name in header]
        line = reader.line_num
        for row in reader:
            number, line = line + 1, reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{path} line {number}: {len(row)} fields; the header names {len(header)}")
            yield Record(dict(zip(header, row)), f"{path} line {number}")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write rows as JSON lines atomically: into a temporary sibling, renamed into place at the end."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            for row in rows:
                file.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
    return path
