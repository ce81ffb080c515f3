"""Reading the datasets' CSV tables: one place for the checks every table needs."""

from __future__ import annotations

import csv

from .preprocess import DataError


def read_rows(path, required=()) -> list[dict]:
    """The rows of a CSV file as {column: value}, keys and values stripped (real tables
    have cells ending in a newline). DataError naming the file for a missing required
    column or a file that is not UTF-8 text."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            for name in required:
                if name not in columns:
                    raise DataError(f"{path}: missing required column {name!r} "
                                    f"(found: {', '.join(columns) or 'none'})")
            # cells beyond the header land under the key None: ignore them
            return [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the table as UTF-8") from e
