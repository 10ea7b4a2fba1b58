"""The one reader of data files: plain text, JSONL, TSV/CSV and parquet, for training and tasks alike.

Training reads documents and (source, target) pairs (`read_records`); a task reads every column of
a file by name (triform.tasks.read_records). Both go through `read_columns`, told by a `Columns`
which columns a record holds and under what names (data/records.py).

Readers stream: they yield one record at a time with the file and line it came from, so that a bad
row is reported where it is and a corpus larger than memory is never held whole. Every malformed
input is a `DataError` naming the file and line (or column) at fault.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Literal

from triform.data.records import Columns, DataError, Field, Record

__all__ = ["Columns", "DataError", "DataSource", "Field", "Format", "Record", "read_columns", "read_records"]

Format = Literal["auto", "text", "jsonl", "tsv", "csv", "parquet"]
EXTENSIONS = {
    ".txt": "text",
    ".text": "text",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".tsv": "tsv",
    ".csv": "csv",
    ".parquet": "parquet",
}


@dataclass(frozen=True)
class DataSource:
    """Where a corpus is and how to read it.

    `path` is a file, a folder (every file in it, recursively, in name order) or a glob. Plain text
    holds one document per line, or per block of lines separated by a blank line
    (`document="paragraph"`). Parallel data is two columns of one file, or two aligned plain-text
    files (`path` the source side, `target_path` the target side).
    """

    path: str
    format: Format = "auto"
    document: Literal["line", "paragraph"] = "line"
    text_field: Field = None  # JSONL/parquet: "text"; TSV/CSV: column 0
    source_field: Field = None  # JSONL/parquet: "source"; TSV/CSV: column 0
    target_field: Field = None  # JSONL/parquet: "target"; TSV/CSV: column 1
    header: bool | None = None  # TSV/CSV: a header row; None: when a field is given by name
    target_path: str | None = None


def resolve_files(pattern: str) -> list[Path]:
    """Files named by a path, a folder or a glob, in a stable (sorted) order."""
    path = Path(pattern).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
    else:
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True) if Path(p).is_file())
    if not files:
        raise DataError(f"{pattern}: no such file or folder, and no file matches it as a glob")
    return files


def file_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    return EXTENSIONS.get(path.suffix.lower(), "text")


def read_records(source: DataSource, *, parallel: bool) -> Iterator[Record]:
    """Every non-empty document (`record.text`) or pair (`.text`, `.target`) of `source`, streamed;
    an empty corpus is an error."""
    if source.target_path is not None and not parallel:
        raise DataError(f"data.target_path: {source.target_path} is a target side, but the objective reads plain text")
    count = 0
    for record in read_columns(source, document_columns(source, parallel)):
        count += 1
        yield record
    if count == 0:
        raise DataError(f"{source.path}: no documents; the input is empty or blank")


def document_columns(source: DataSource, parallel: bool) -> Columns:
    """The columns of training data: "text", or "text" and "target" for pairs, where the source says."""
    if parallel:
        chosen = {"text": source.source_field, "target": source.target_field}
        return Columns(chosen, {"text": ("source", 0), "target": ("target", 1)})
    return Columns({"text": source.text_field}, {"text": ("text", 0)})


def read_columns(source: DataSource, columns: Columns) -> Iterator[Record]:
    """The one reader: each record of `source`'s files, holding `columns`, in file order."""
    if source.target_path is not None:
        yield from aligned_files(resolve_files(source.path), resolve_files(source.target_path), columns)
        return
    for path in resolve_files(source.path):
        yield from read_file(path, source, columns)


def read_file(path: Path, source: DataSource, columns: Columns) -> Iterator[Record]:
    kind = file_format(path, source.format)
    if kind == "text":
        if columns.every:
            raise DataError(f"{path}: tasks read named columns from .jsonl, .csv, .tsv or .parquet files, not {kind}")
        if len(columns.names) > 1:
            raise DataError(
                f"{path}: plain text holds one side only; give parallel data as two columns or set data.target_path"
            )
        yield from read_text(path, source.document, next(iter(columns.names)))
    elif kind == "jsonl":
        yield from read_jsonl(path, columns)
    elif kind in ("tsv", "csv"):
        named = any(isinstance(n, str) for n in columns.fields(named=False).values())
        header = (columns.every or named) if source.header is None else source.header
        yield from read_table(path, columns, kind, header)
    elif kind == "parquet":
        yield from read_parquet(path, columns)
    else:
        raise DataError(f"data.format: expected one of auto, text, jsonl, tsv, csv, parquet, got {kind!r}")


def decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its newline), decoding each line as UTF-8 to name the bad one."""
    with open(path, "rb") as file:
        for number, raw in enumerate(file, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{path}:{number}: undecodable bytes at column {error.start + 1} "
                    f"({raw[error.start : error.start + 4]!r}); "
                    "expected UTF-8 text"
                ) from None
            yield number, text.rstrip("\r\n")


def read_text(path: Path, document: str, column: str) -> Iterator[Record]:
    if document == "line":
        for number, line in decoded_lines(path):
            if line.strip():
                yield Record({column: line}, str(path), number)
        return
    block, first = [], 0
    for number, line in decoded_lines(path):
        if line.strip():
            block.append(line)
            first = first or number
        elif block:
            yield Record({column: "\n".join(block)}, str(path), first)
            block, first = [], 0
    if block:
        yield Record({column: "\n".join(block)}, str(path), first)


def json_objects(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file; anything but a JSON object on a
    line is an error naming the file and line."""
    for number, line in decoded_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: invalid JSON at column {error.colno} ({error.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: expected a JSON object with named fields, got {type(row).__name__}")
        yield number, row


def read_jsonl(path: Path, columns: Columns) -> Iterator[Record]:
    if columns.every:
        for number, row in json_objects(path):
            yield columns.record(row, path, number, has_lists=True)
        return
    fields = columns.fields(named=True)
    for name in fields.values():
        if not isinstance(name, str):
            raise DataError(f"{path}: JSONL fields are named; got the position {name}")
    for number, row in json_objects(path):
        values = {}
        for column, name in fields.items():
            if name not in row:
                raise DataError(f"{path}:{number}: no field {name!r}; the object has {sorted(row)}")
            if not isinstance(row[name], str):
                raise DataError(f"{path}:{number}: field {name!r} is {type(row[name]).__name__}, expected a string")
            values[column] = row[name]
        record = columns.record(values, path, number)
        if record is not None:
            yield record


def table_rows(path: Path, kind: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of TSV (tab-separated, no quoting, as most corpora ship) or CSV (RFC 4180
    quoting; a row's number is the line it ends on)."""
    lines = decoded_lines(path)
    if kind == "tsv":
        return ((number, line.split("\t")) for number, line in lines)
    numbers: list[int] = []

    def counted() -> Iterator[str]:
        for number, line in lines:
            numbers.append(number)
            yield line + "\n"  # the csv module needs the newline to keep one inside a quoted cell

    return ((numbers[-1], row) for row in csv.reader(counted()))


def read_table(path: Path, columns: Columns, kind: str, header: bool) -> Iterator[Record]:
    """The rows of a TSV or CSV file, as wide as its first row (its header, if it has one)."""
    rows = table_rows(path, kind)
    first = next(rows, None)
    if first is None:
        if columns.every:
            raise DataError(f"{path}:1: expected a header row naming the columns")
        return
    first_line, width = first[0], len(first[1])
    if header:
        names = [name.strip() for name in first[1]]
    else:
        names, rows = list(range(width)), chain([first], rows)
    positions = None if columns.every else chosen_positions(path, columns, names if header else None, width)
    chosen = None if positions is None else list(positions.items())
    for number, row in rows:
        if len(row) != width:
            if any(cell.strip() for cell in row):
                raise ragged(path, number, len(row), kind, width, first_line, header)
            continue  # a blank line
        if chosen is None:
            if any(cell.strip() for cell in row):  # a blank row is no record
                yield columns.record(dict(zip(names, row)), path, number)
            continue
        record = columns.record({column: row[p] for column, p in chosen}, path, number)
        if record is not None:  # None: the chosen cells are blank
            yield record


def ragged(path: Path, number: int, found: int, kind: str, width: int, first_line: int, header: bool) -> DataError:
    if header:
        return DataError(f"{path}:{number}: {found} fields; the header on line {first_line} names {width}")
    label = "tab-separated" if kind == "tsv" else "comma-separated"
    return DataError(f"{path}:{number}: ragged row: {found} {label} fields, expected {width} as on line {first_line}")


def chosen_positions(path: Path, columns: Columns, header: list[str] | None, width: int) -> dict[str, int]:
    """Where each record column is in the rows: by name in the header, or by position."""
    positions = {}
    for column, name in columns.fields(named=False).items():
        if isinstance(name, str) and header is None:
            raise DataError(f"{path}: column {name!r} is named, but data.header is false")
        if isinstance(name, str):
            if name not in header:
                raise DataError(f"{path}:1: no column named {name!r}; the header has {header}")
            positions[column] = header.index(name)
        elif not 0 <= name < width:
            raise DataError(f"{path}:1: no column {name}: the rows have {width} fields (columns count from 0)")
        else:
            positions[column] = name
    return positions


def read_parquet(path: Path, columns: Columns) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises ArrowInvalid / OSError with its own wording
        raise DataError(f"{path}: unreadable parquet file ({error})") from None
    if columns.every:
        number = 0
        for batch in table.iter_batches(batch_size=4096):
            for values in batch.to_pylist():
                number += 1
                yield columns.record(values, path, number, has_lists=True, by_row=True)
        return
    selected = parquet_columns(path, columns, table.schema_arrow.names)
    row_number = 0
    for batch in table.iter_batches(columns=list(selected.values()), batch_size=4096):
        data = {column: batch.column(name).to_pylist() for column, name in selected.items()}
        for values in zip(*data.values()):
            row_number += 1
            for name, value in zip(selected.values(), values):
                if not isinstance(value, str):
                    raise DataError(
                        f"{path}: row {row_number}: column {name!r} is {type(value).__name__}, expected a string"
                    )
            record = columns.record(dict(zip(selected, values)), path, row_number, by_row=True)
            if record is not None:
                yield record


def parquet_columns(path: Path, columns: Columns, names: list[str]) -> dict[str, str]:
    """The file's column for each record column, by name or position."""
    selected = {}
    for column, name in columns.fields(named=True).items():
        if isinstance(name, int):
            if not 0 <= name < len(names):
                raise DataError(f"{path}: no column {name}: the file has {len(names)} columns")
            name = names[name]
        if name not in names:
            raise DataError(f"{path}: no column {name!r}; the file has {names}")
        selected[column] = name
    return selected


def aligned_files(sources: list[Path], targets: list[Path], columns: Columns) -> Iterator[Record]:
    """Line i of the source files pairs with line i of the target files."""
    if len(sources) != len(targets):
        raise DataError(f"{sources[0]}: {len(sources)} source files but {len(targets)} target files")
    source_column, target_column = columns.names
    for source_path, target_path in zip(sources, targets):
        target_lines = decoded_lines(target_path)
        for number, source_line in decoded_lines(source_path):
            target = next(target_lines, None)
            if target is None:
                raise DataError(f"{target_path}:{number}: ends early; {source_path} has more lines")
            record = columns.record({source_column: source_line, target_column: target[1]}, source_path, number)
            if record is not None:
                yield record
        if next(target_lines, None) is not None:
            raise DataError(f"{source_path}: ends early; {target_path} has more lines")
