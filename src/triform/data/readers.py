"""Read documents and (source, target) pairs from plain text, JSONL, TSV/CSV and parquet files.

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
from pathlib import Path
from typing import Literal

from triform.errors import TriformError

Format = Literal["auto", "text", "jsonl", "tsv", "csv", "parquet"]
Field = str | int | None  # a column name, a 0-based position, or None for the format's default
EXTENSIONS = {
    ".txt": "text",
    ".text": "text",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".tsv": "tsv",
    ".csv": "csv",
    ".parquet": "parquet",
}


class DataError(TriformError, ValueError):
    """Input data that cannot be read as asked; the message names the file and line."""


@dataclass(frozen=True)
class Record:
    """One document (`target` is None) or one source -> target pair, with where it came from."""

    text: str
    target: str | None
    file: str
    line: int


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
    """Every non-empty document or pair of `source`, streamed; an empty corpus is an error."""
    count = 0
    if source.target_path is not None:
        if not parallel:
            raise DataError(
                f"data.target_path: {source.target_path} is a target side, but the objective reads plain text"
            )
        records = aligned_files(resolve_files(source.path), resolve_files(source.target_path))
    else:
        records = (r for path in resolve_files(source.path) for r in read_file(path, source, parallel))
    for record in records:
        count += 1
        yield record
    if count == 0:
        raise DataError(f"{source.path}: no documents; the input is empty or blank")


def read_file(path: Path, source: DataSource, parallel: bool) -> Iterator[Record]:
    kind = file_format(path, source.format)
    if kind == "text":
        if parallel:
            raise DataError(
                f"{path}: plain text holds one side only; give parallel data as two columns or set data.target_path"
            )
        yield from read_text(path, source.document)
    elif kind == "jsonl":
        yield from read_jsonl(path, fields(source, parallel, default_names=True))
    elif kind in ("tsv", "csv"):
        yield from read_table(path, fields(source, parallel, default_names=False), kind, source.header)
    elif kind == "parquet":
        yield from read_parquet(path, fields(source, parallel, default_names=True))
    else:
        raise DataError(f"data.format: expected one of auto, text, jsonl, tsv, csv, parquet, got {kind!r}")


def fields(source: DataSource, parallel: bool, *, default_names: bool) -> tuple[Field, ...]:
    """The fields to read: (text,) or (source, target), with each format's defaults filled in."""
    if parallel:
        defaults = ("source", "target") if default_names else (0, 1)
        chosen = (source.source_field, source.target_field)
    else:
        defaults = ("text",) if default_names else (0,)
        chosen = (source.text_field,)
    return tuple(default if field is None else field for field, default in zip(chosen, defaults))


def make_record(values: list[str], path: Path, line: int) -> Record | None:
    """A record from the field values, or None for a blank one (blank lines are not documents)."""
    if not any(v.strip() for v in values):
        return None
    return Record(values[0], values[1] if len(values) > 1 else None, str(path), line)


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


def read_text(path: Path, document: str) -> Iterator[Record]:
    if document == "line":
        for number, line in decoded_lines(path):
            if line.strip():
                yield Record(line, None, str(path), number)
        return
    block, first = [], 0
    for number, line in decoded_lines(path):
        if line.strip():
            block.append(line)
            first = first or number
        elif block:
            yield Record("\n".join(block), None, str(path), first)
            block, first = [], 0
    if block:
        yield Record("\n".join(block), None, str(path), first)


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


def read_jsonl(path: Path, names: tuple[Field, ...]) -> Iterator[Record]:
    for name in names:
        if not isinstance(name, str):
            raise DataError(f"{path}: JSONL fields are named; got the position {name}")
    for number, row in json_objects(path):
        values = []
        for name in names:
            if name not in row:
                raise DataError(f"{path}:{number}: no field {name!r}; the object has {sorted(row)}")
            if not isinstance(row[name], str):
                raise DataError(f"{path}:{number}: field {name!r} is {type(row[name]).__name__}, expected a string")
            values.append(row[name])
        record = make_record(values, path, number)
        if record is not None:
            yield record


def read_table(path: Path, names: tuple[Field, ...], kind: str, header: bool | None) -> Iterator[Record]:
    """TSV (tab-separated, no quoting, as most corpora ship) or CSV (RFC 4180 quoting)."""
    header = any(isinstance(n, str) for n in names) if header is None else header
    label = "tab-separated" if kind == "tsv" else "comma-separated"
    lines = decoded_lines(path)
    if kind == "tsv":
        rows = ((number, line.split("\t")) for number, line in lines)
    else:
        numbers: list[int] = []
        reader = csv.reader(_counted(lines, numbers))
        rows = ((numbers[-1], row) for row in reader)
    positions, width, first_line = None, None, 0
    for number, row in rows:
        if width is None:
            width, first_line = len(row), number
            if header:
                positions = column_positions(path, names, row)
                continue
            positions = positions_without_header(path, names, width)
        if len(row) != width:
            if not any(cell.strip() for cell in row):
                continue  # a blank line
            raise DataError(
                f"{path}:{number}: ragged row: {len(row)} {label} fields, expected {width} as on line {first_line}"
            )
        record = make_record([row[p] for p in positions], path, number)
        if record is not None:
            yield record


def _counted(lines: Iterator[tuple[int, str]], numbers: list[int]) -> Iterator[str]:
    for number, line in lines:
        numbers.append(number)
        yield line + "\n"  # the csv module needs the newline to keep one inside a quoted cell


def column_positions(path: Path, names: tuple[Field, ...], header_row: list[str]) -> list[int]:
    positions = []
    for name in names:
        if isinstance(name, int):
            positions.append(positions_without_header(path, (name,), len(header_row))[0])
        elif name in header_row:
            positions.append(header_row.index(name))
        else:
            raise DataError(f"{path}:1: no column named {name!r}; the header has {header_row}")
    return positions


def positions_without_header(path: Path, names: tuple[Field, ...], width: int) -> list[int]:
    for name in names:
        if isinstance(name, str):
            raise DataError(f"{path}: column {name!r} is named, but data.header is false")
        if not 0 <= name < width:
            raise DataError(f"{path}:1: no column {name}: the rows have {width} fields (columns count from 0)")
    return list(names)  # type: ignore[arg-type]


def read_parquet(path: Path, names: tuple[Field, ...]) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises ArrowInvalid / OSError with its own wording
        raise DataError(f"{path}: unreadable parquet file ({error})") from None
    columns = table.schema_arrow.names
    selected = []
    for name in names:
        if isinstance(name, int):
            if not 0 <= name < len(columns):
                raise DataError(f"{path}: no column {name}: the file has {len(columns)} columns")
            name = columns[name]
        if name not in columns:
            raise DataError(f"{path}: no column {name!r}; the file has {columns}")
        selected.append(name)
    row_number = 0
    for batch in table.iter_batches(columns=selected, batch_size=4096):
        data = [batch.column(name).to_pylist() for name in selected]
        for values in zip(*data):
            row_number += 1
            for name, value in zip(selected, values):
                if not isinstance(value, str):
                    raise DataError(
                        f"{path}: row {row_number}: column {name!r} is {type(value).__name__}, expected a string"
                    )
            record = make_record(list(values), path, row_number)
            if record is not None:
                yield record


def aligned_files(sources: list[Path], targets: list[Path]) -> Iterator[Record]:
    """Line i of the source files pairs with line i of the target files."""
    if len(sources) != len(targets):
        raise DataError(f"{sources[0]}: {len(sources)} source files but {len(targets)} target files")
    for source_path, target_path in zip(sources, targets):
        target_lines = decoded_lines(target_path)
        for number, source_line in decoded_lines(source_path):
            target = next(target_lines, None)
            if target is None:
                raise DataError(f"{target_path}:{number}: ends early; {source_path} has more lines")
            record = make_record([source_line, target[1]], source_path, number)
            if record is not None:
                yield record
        if next(target_lines, None) is not None:
            raise DataError(f"{source_path}: ends early; {target_path} has more lines")
