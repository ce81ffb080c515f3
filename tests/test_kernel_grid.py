"""The tables of entry points at the top of the convolution files say what the files
define: every kernel once, with its __launch_bounds__.

A table (a C comment) reads

    // ENTRY POINTS: conv2d_<pass>_<precision>_<tile>, ...
    //                     tf32                 bf16          <- optional: precision groups
    //   pass              32x128  64x64        32x128  64x64 <- columns: tiles or precisions
    //   forward           128/4   128/4        128/4   128/4 <- threads/min blocks per SM
    //

Each cell names one kernel: the row is <pass>, the column <tile> (or <precision> when
the pattern has no <tile>), the group <precision>; "_<precision>" of fp32 is empty, as
in the kernel names. A cell "256/-" is a __launch_bounds__ without a minimum."""

from __future__ import annotations

import os
import re

import pytest

from tinycnn.backends.kernel_sources import KERNEL_DIR, defines, inline_includes, kernel_names
from tinycnn.precision import PRECISIONS

_BOUNDS_RE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+__launch_bounds__\(([^)]*)\)\s*(\w+)\s*\(')


def parse_tables(text: str) -> dict[str, str]:
    """{kernel name: 'threads/min blocks'} from every ENTRY POINTS table of `text`."""
    lines = text.splitlines()
    out = {}
    i = 0
    while i < len(lines):
        m = re.match(r"//\s*ENTRY POINTS:\s*(\S+?),?(\s|$)", lines[i])
        i += 1
        if not m:
            continue
        pattern, groups = m.group(1), []
        while i < len(lines) and not re.match(r"//\s+pass\s", lines[i]):
            words = lines[i].lstrip("/").split()
            if words and all(w in PRECISIONS for w in words):
                groups = words
            i += 1
        columns = lines[i].lstrip("/").split()[1:]
        i += 1
        while i < len(lines) and re.match(r"//\s+\w+\s+\S+/\S+", lines[i]):
            row, *cells = lines[i].lstrip("/").split()
            assert len(cells) == len(columns), f"row {row}: {len(cells)} cells under {len(columns)} columns"
            per_group = len(columns) // max(1, len(groups))
            for j, (column, cell) in enumerate(zip(columns, cells)):
                name = pattern.replace("<pass>", row)
                if "<tile>" in name:
                    name, precision = name.replace("<tile>", column), groups[j // per_group] if groups else None
                else:
                    precision = column  # or "any": a kernel that runs in every mode
                if precision in PRECISIONS:
                    name = name.replace("_<precision>", "" if precision == "fp32" else f"_{precision}")
                assert name not in out, f"{name} twice in the tables"
                out[name] = cell
            i += 1
    return out


def launch_bounds(fname: str) -> dict[str, str]:
    """{kernel name: 'threads/min blocks'} as the file defines them (#defines resolved)."""
    source = inline_includes(os.path.join(KERNEL_DIR, fname))
    headers = sorted(f for f in os.listdir(KERNEL_DIR) if f.endswith(".cuh"))
    names = defines(fname, *headers)
    out = {}
    for args, name in _BOUNDS_RE.findall(source):
        parts = [p.strip() for p in args.split(",")]
        values = [str(names.get(p, p)) for p in parts]
        out[name] = f"{values[0]}/{values[1] if len(values) > 1 else '-'}"
    assert set(out) == set(kernel_names(source)), f"{fname}: a kernel without __launch_bounds__"
    return out


@pytest.mark.parametrize("fname", ["conv2d.cu", "conv2d_tc.cu"])
def test_the_entry_point_table_lists_every_kernel_with_its_launch_bounds(fname):
    with open(os.path.join(KERNEL_DIR, fname), encoding="utf-8") as f:
        table = parse_tables(f.read())
    assert table == launch_bounds(fname)


def test_the_table_parser_expands_groups_and_precision_columns():
    text = "\n".join([
        "// ENTRY POINTS: k_<pass>_<precision>_<tile>, a test table",
        "//              fp32          bf16",
        "//   pass       8x8   16x16   8x8   16x16",
        "//   fwd        64/2  128/2   64/1  128/-",
        "//",
        "// ENTRY POINTS: s_<pass>_<precision>",
        "//   pass       fp32  tf32",
        "//   bwd        256/- 256/2",
    ])
    assert parse_tables(text) == {"k_fwd_8x8": "64/2", "k_fwd_16x16": "128/2", "k_fwd_bf16_8x8": "64/1",
                                  "k_fwd_bf16_16x16": "128/-", "s_bwd": "256/-", "s_bwd_tf32": "256/2"}
