"""What a reader of data files gives: records, each with its values by column and its place.

Training reads documents (a record with a "text") and pairs ("text" and "target"); a task reads
every column of a file by name. Both are `Record`s read by the one reader in data/readers.py, told
what to read by a `Columns`. Every record remembers its file and line, so that a problem found later
(a missing column, an unknown label, a text too long) is reported where the user can fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from triform.errors import TriformError

Field = str | int | None  # a column name, a 0-based position, or None for the format's default


class DataError(TriformError, ValueError):
    """Input data that cannot be read as asked; the message names the file and line."""


@dataclass(slots=True)  # not frozen: a frozen __init__ costs five times as much, paid per document of a corpus
class Record:
    """One record of a data file: its values by column, and where it came from. Read, not changed."""

    values: dict
    file: str
    line: int  # the line of a text, JSONL, CSV or TSV file; the row of a parquet file
    has_lists: bool = False  # JSONL and parquet values may be lists; CSV / TSV cells are text
    renamed: dict = field(default_factory=dict)  # record column -> the file's column it was read from
    by_row: bool = False  # parquet: a place is a row, not a line

    @property
    def where(self) -> str:
        """ "data.tsv:7" (or "data.parquet: row 7"), as every data error names a place."""
        return f"{self.file}: row {self.line}" if self.by_row else f"{self.file}:{self.line}"

    @property
    def text(self) -> str:
        """A training record's document, or the source side of its pair."""
        return self.values["text"]

    @property
    def target(self) -> str | None:
        """The target side of a training pair; None for a document."""
        return self.values.get("target")

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


@dataclass(frozen=True)
class Columns:
    """Which columns of a file a record holds, and under what names.

    `names` maps a record column to the file's column: its name, its 0-based position, or None for
    its default in `defaults`, a (name, position) pair: the name where a format names its columns
    (JSONL, parquet), the position in CSV / TSV.

    Documents (training data) hold just these columns, each a string; a record whose columns are all
    blank is no document and is skipped. Rows (`every`, task data) hold every column of the file
    under its own name, those of `names` renamed (`{"label": "genre"}` reads the file's "genre" as
    "label"); their values may be lists, and a missing column is found by `Record.require`.
    """

    names: dict[str, Field] = field(default_factory=dict)
    defaults: dict[str, tuple[str, int]] = field(default_factory=dict)
    every: bool = False

    def fields(self, named: bool) -> dict[str, Field]:
        """Each record column's column in a file, the defaults filled in by name (`named`) or position."""
        return {
            column: self.defaults[column][0 if named else 1] if chosen is None else chosen
            for column, chosen in self.names.items()
        }

    def rename(self, values: dict) -> dict:
        """A file's row under the record's names: each file column of `names` under its record name,
        and the file's own column of that name dropped, so that two columns never compete for one."""
        if not self.names:
            return values
        by_file = {file_column: column for column, file_column in self.names.items()}
        return {by_file.get(k, k): v for k, v in values.items() if k not in self.names or k in by_file}

    def record(self, values: dict, file, line: int, *, has_lists: bool = False, by_row: bool = False):
        """The record of one row, or None for a blank document. `values` are the file's columns by
        name for rows (`every`), and the chosen ones by record column for documents."""
        if self.every:
            return Record(self.rename(values), str(file), line, has_lists, dict(self.names), by_row)
        if not any(v.strip() for v in values.values()):
            return None  # blank lines are not documents
        return Record(values, str(file), line, by_row=by_row)
