"""Reading the datasets' CSV tables: one place for the checks every table needs."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .preprocess import DataError


def read_rows(path, required=()) -> list[dict]:
    """The rows of a CSV file as {column: value}, keys and values stripped (real tables
    have cells ending in a newline). DataError naming the file for a missing required
    column, a file that cannot be read or is not UTF-8 text, or one the csv module
    cannot parse (naming the line where the bad row starts)."""
    return [row for _, row in read_numbered_rows(path, required)]


def read_numbered_rows(path, required=()) -> list[tuple[int, dict]]:
    """read_rows, each row with the line of the file it starts on (1-based, the header
    being line 1), for errors that name a row."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read the table ({e.strerror or e})") from e
    try:
        # decoded whole so the error's position is the file's byte offset, not a buffer's
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}, line {line}: {e.reason}); "
                        "save the table as UTF-8") from e
    # strict: an unterminated quote is an error, not a cell that swallows the rest of the
    # file (the rows it ate used to vanish, and the banner blamed their "pathology")
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        columns = [c.strip() for c in (reader.fieldnames or [])]
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV table: the header row {_explain(e)}") from e
    for name in required:
        if name not in columns:
            raise DataError(f"{path}: missing required column {name!r} "
                            f"(found: {', '.join(columns) or 'none'})")
    rows = []
    while True:
        start = reader.line_num + 1  # the physical line this row starts on
        try:
            row = next(reader)
        except StopIteration:
            return rows
        except csv.Error as e:
            raise DataError(f"{path}: not a readable CSV table: the row starting at line {start} "
                            f"{_explain(e)}") from e
        # cells beyond the header land under the key None: ignore them
        rows.append((start, {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}))


def _explain(e: csv.Error) -> str:
    if "unexpected end of data" in str(e):
        return "opens a quoted cell that is never closed (an unterminated \" quote)"
    return f"cannot be parsed ({e}; an unterminated or stray \" quote?)"
