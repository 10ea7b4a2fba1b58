"""Task data: records with named columns from JSONL, CSV, TSV or parquet files, and predictions as JSONL.

Every record remembers its file and line, so that any problem found later (a missing column, an
unknown label, an answer that is not in its context) is reported where the user can fix it. The
format is told by the file's extension, as for training data (data/readers.py): `.jsonl` / `.json`
(one JSON object a line; lists allowed), `.csv` (RFC 4180 quoting), `.tsv` (tab-separated, no
quoting: quotes are text), `.parquet`. CSV and TSV start with a header row naming the columns.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from triform.data.readers import DataError, decoded_lines, file_format, json_objects, resolve_files
from triform.data.readers import _counted as lines_with_newlines  # one CSV line reader for all data

__all__ = ["DataError", "Record", "read_records", "write_jsonl"]


@dataclass(frozen=True)
class Record:
    values: dict
    where: str  # "data.tsv:7", as every data error names a place
    has_lists: bool = False  # JSON and parquet records may hold lists; CSV / TSV cells are text
    renamed: dict = field(default_factory=dict)  # task column -> the file's column it was read from

    def get(self, column: str, default=None):
        return self.values.get(column, default)

    def require(self, column: str):
        if column not in self.values or self.values[column] is None:
            name = self.renamed.get(column, column)
            read_as = f" (read as {column!r})" if name != column else ""
            found = sorted({self.renamed.get(k, k) for k in self.values})
            raise DataError(f"{self.where}: no {name!r} column{read_as}; found {found}")
        return self.values[column]

    def error(self, message: str) -> DataError:
        return DataError(f"{self.where}: {message}")


def read_records(
    path: str | os.PathLike, required: Iterable[str] = (), columns: dict[str, str] | None = None
) -> list[Record]:
    """Every record of a file, a folder or a glob; `required` columns must exist in every record
    (checked here, before any work, so that a bad line late in a file fails the run at once).
    `columns` names the file's column for a task column ({"label": "genre"})."""
    records = [record for file in resolve_files(str(path)) for record in read_file(file)]
    if not records:
        raise DataError(f"{path}: no records")
    if columns:
        records = [rename(record, columns) for record in records]
    for record in records:
        for column in required:
            record.require(column)
    return records


def rename(record: Record, columns: dict[str, str]) -> Record:
    """The record with each file column of `columns` under its task name (the file's own name for a
    task column is then ignored, so that two columns never compete for one name)."""
    by_file = {file_column: task_column for task_column, file_column in columns.items()}
    values = {by_file.get(k, k): v for k, v in record.values.items() if k not in columns or k in by_file}
    return replace(record, values=values, renamed=dict(columns))


def read_file(path: Path) -> Iterator[Record]:
    kind = file_format(path, "auto")
    if kind == "jsonl":
        yield from _read_jsonl(path)
    elif kind in ("csv", "tsv"):
        yield from _read_table(path, kind)
    elif kind == "parquet":
        yield from _read_parquet(path)
    else:
        raise DataError(f"{path}: tasks read named columns from .jsonl, .csv, .tsv or .parquet files, not {kind}")


def _read_jsonl(path: Path) -> Iterator[Record]:
    for number, values in json_objects(path):
        yield Record(values, f"{path}:{number}", has_lists=True)


def _read_table(path: Path, kind: str) -> Iterator[Record]:
    lines = decoded_lines(path)
    if kind == "tsv":
        rows = ((number, line.split("\t")) for number, line in lines)
    else:
        numbers: list[int] = []
        rows = ((numbers[-1], row) for row in csv.reader(lines_with_newlines(lines, numbers)))
    header = None
    for number, row in rows:
        if header is None:
            header = [name.strip() for name in row]
            continue
        if not any(cell.strip() for cell in row):
            continue  # a blank line
        if len(row) != len(header):
            raise DataError(f"{path}:{number}: {len(row)} fields; the header on line 1 names {len(header)}")
        yield Record(dict(zip(header, row)), f"{path}:{number}")
    if header is None:
        raise DataError(f"{path}:1: expected a header row naming the columns")


def _read_parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises ArrowInvalid / OSError with its own wording
        raise DataError(f"{path}: unreadable parquet file ({error})") from None
    number = 0
    for batch in table.iter_batches(batch_size=4096):
        for values in batch.to_pylist():
            number += 1
            yield Record(values, f"{path}: row {number}", has_lists=True)


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
