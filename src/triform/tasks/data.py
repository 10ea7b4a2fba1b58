"""Task data: records with named columns from JSONL, CSV, TSV or parquet files, and predictions as JSONL.

Records are read by the reader of training data (data/readers.py), with every column of a file kept
by name: `.jsonl` / `.json` (one JSON object a line; lists allowed), `.csv` (RFC 4180 quoting), `.tsv`
(tab-separated, no quoting: quotes are text), `.parquet`. CSV and TSV start with a header row naming
the columns. Every record remembers its file and line, so that any problem found later (a missing
column, an unknown label, an answer that is not in its context) is reported where the user can fix it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from triform.data.readers import Columns, DataError, DataSource, Record, read_columns
from triform.io import write_jsonl

__all__ = ["DataError", "Record", "read_records", "write_jsonl"]


def read_records(
    path: str | os.PathLike, required: Iterable[str] = (), columns: dict[str, str] | None = None
) -> list[Record]:
    """Every record of a file, a folder or a glob; `required` columns must exist in every record
    (checked here, before any work, so that a bad line late in a file fails the run at once).
    `columns` names the file's column for a task column ({"label": "genre"})."""
    records = list(read_columns(DataSource(str(path)), Columns(dict(columns or {}), every=True)))
    if not records:
        raise DataError(f"{path}: no records")
    for record in records:
        for column in required:
            record.require(column)
    return records
