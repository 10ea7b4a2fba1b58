"""The text of a row being generated, given out in pieces that join into the final text: text that may
be the start of a stop string, or an incomplete character, is held back until it is settled."""

from __future__ import annotations

from triform.generate.search import Decode, Row, StopStrings

INCOMPLETE_CHARACTER = "\ufffd"  # what a byte-level tokenizer decodes from a partial UTF-8 sequence


def row_text(row: Row, decode: Decode) -> str:
    """The text of a row's tokens, cut before the stop string that ended it."""
    text = decode(row.tokens)
    return text[: row.stop_at] if row.stop_at is not None else text


class Pieces:
    """`next(row)` after each step gives the text settled since the last call ("" for none)."""

    def __init__(self, decode: Decode, stops: StopStrings):
        self.decode, self.stops, self.sent = decode, stops, ""

    def next(self, row: Row) -> str:
        text = row_text(row, self.decode)
        if row.finish_reason is None:
            text = text[: len(text) - self.stops.partial(text)].rstrip(INCOMPLETE_CHARACTER)
        if len(text) > len(self.sent) and text.startswith(self.sent):
            piece, self.sent = text[len(self.sent) :], text
            return piece
        return ""
