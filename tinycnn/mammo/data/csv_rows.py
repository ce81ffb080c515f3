"""Reading the datasets' CSV tables: one place for the checks every table needs."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .preprocess import DataError


def read_rows(path, required=()) -> list[dict]:
    """The rows of a CSV file as {column: value}, keys and values stripped (real tables
    have cells ending in a newline). DataError naming the file for a missing required
    column, a file that is not UTF-8 text or one the csv module cannot parse."""
    data = Path(path).read_bytes()
    try:
        # decoded whole so the error's position is the file's byte offset, not a buffer's
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}, line {line}: {e.reason}); "
                        "save the table as UTF-8") from e
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        columns = [c.strip() for c in (reader.fieldnames or [])]
        for name in required:
            if name not in columns:
                raise DataError(f"{path}: missing required column {name!r} "
                                f"(found: {', '.join(columns) or 'none'})")
        # cells beyond the header land under the key None: ignore them
        return [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV table (line {reader.line_num}: {e})") from e
