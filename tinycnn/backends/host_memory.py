"""How much host memory is available now: what a host backend's arrays can still take.

Read from /proc/meminfo (MemAvailable: free memory plus what the page cache can give
back) and, inside a container, from its cgroup v2 limit, which the kernel enforces
whatever /proc/meminfo says; the smaller of the two. None where neither can be read.
"""

from __future__ import annotations

import os
from pathlib import Path


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # other Unixes: free pages (no page cache counted: errs low)
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_available() -> int | None:
    """What a container's memory limit (cgroup v2) still allows, if there is one: the
    kernel kills a process past it whatever /proc/meminfo says."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(int(limit) - used, 0)


def available_bytes() -> int | None:
    """Bytes of host memory available now, or None where that cannot be told."""
    known = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    return min(known) if known else None
