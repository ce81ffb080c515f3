"""Progress bars for long work: tqdm on stderr when asked for and installed, else
nothing (a missing tqdm or a log file never changes what the work does)."""

from __future__ import annotations

import sys


def bar(total: int, desc: str, enabled: bool = True, initial: int = 0, unit: str = "it"):
    """A tqdm bar, or None when disabled or tqdm is not installed."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    from .cli import printable  # a folder name that is not UTF-8 must not break the bar

    return tqdm(total=total, initial=initial, desc=printable(desc), unit=unit, leave=False, dynamic_ncols=True,
                file=sys.stderr)


def tracked(items, desc: str, enabled: bool = False, unit: str = "img"):
    """Iterate over a sized collection, advancing a bar when enabled."""
    b = bar(len(items), desc, enabled, unit=unit)
    if b is None:
        yield from items
        return
    try:
        for item in items:
            yield item
            b.update(1)
    finally:
        b.close()
