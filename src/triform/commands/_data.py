"""Command-line options shared by the commands that read data (prepare, eval, tokenizer train)."""

from __future__ import annotations

import dataclasses
from typing import get_type_hints

HELP = {
    "format": "file format; auto: from the extension (.txt .jsonl .tsv .csv .parquet)",
    "document": "plain text: one document per line, or per block of lines separated by a blank line",
    "text_field": "JSONL/parquet field or TSV/CSV column (name, or 0-based position) holding the text",
    "source_field": "field or column of the source side of parallel data",
    "target_field": "field or column of the target side of parallel data",
    "header": "TSV/CSV: whether the first row names the columns (default: when a field is given by name)",
    "target_path": "parallel data as two aligned plain-text files: this is the target side",
}


def add_source_arguments(parser) -> None:
    """One option per DataSource field but `path`."""
    from triform.data.readers import DataSource

    hints = get_type_hints(DataSource)
    for field in dataclasses.fields(DataSource):
        if field.name != "path":
            parser.add_argument(f"--{field.name}", type=hints[field.name], default=field.default, help=HELP[field.name])


def source_from(args, path: str):
    from triform.data.readers import DataSource

    names = [f.name for f in dataclasses.fields(DataSource) if f.name != "path"]
    return DataSource(str(path), **{name: args[name] for name in names})
