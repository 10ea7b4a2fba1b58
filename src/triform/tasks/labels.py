"""A label set read from training data and stored with the model, so that predictions name labels
as the data did and an unknown label is caught at the line that holds it."""

from __future__ import annotations

from triform.tasks.data import DataError, Record

Label = str | int | bool


class Labels:
    def __init__(self, values: list[Label]):
        self.values = list(values)
        self.index = {value: i for i, value in enumerate(self.values)}

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> Label:
        return self.values[i]

    @classmethod
    def read(cls, records: list[Record], column: str, *, per_item: bool = False, minimum: int = 2) -> Labels:
        """The sorted set of labels in `column` (of each item of a list column when `per_item`)."""
        seen = set()
        for record in records:
            values = list_cell(record, column) if per_item else [record.require(column)]
            seen.update(check_label(value, record, column) for value in values)
        if len(seen) < minimum:
            source = records[0].where.rsplit(":", 1)[0] if records else "the data"
            raise DataError(
                f"{source}: {len(seen)} distinct {column!r} value(s); a classifier needs at least {minimum}"
            )
        return cls(sorted(seen, key=lambda v: (str(type(v)), str(v))))

    def id(self, value, record: Record, column: str = "label") -> int:
        value = check_label(value, record, column)
        if value not in self.index:
            shown = self.values if len(self.values) <= 20 else self.values[:20] + ["..."]
            raise record.error(f"unknown {column} {value!r}; the model knows {shown}")
        return self.index[value]


def check_label(value, record: Record, column: str) -> Label:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, (str, int, bool)):
        raise record.error(f"{column!r} must be a label (text or whole number), got {value!r}")
    return value


def list_cell(record: Record, column: str) -> list:
    """A list column: a JSON list, or in CSV / TSV a space-separated cell."""
    value = record.require(column)
    if isinstance(value, str) and not record.has_lists:
        return value.split()
    if not isinstance(value, list):
        raise record.error(f"{column!r} must be a list, got {type(value).__name__}")
    return value
