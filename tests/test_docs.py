"""docs/backprop.md promises that its code is the code and its outputs are real outputs:
these tests hold it to that, so a change to an op that forgets the page fails here."""

from __future__ import annotations

import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKPROP = os.path.join(ROOT, "docs", "backprop.md")


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def _sources() -> dict[str, str]:
    files = glob.glob(os.path.join(ROOT, "tinycnn", "**", "*.py"), recursive=True)
    return {os.path.relpath(f, ROOT): _read(f) for f in files}


BLOCKS = _python_blocks(_read(BACKPROP))


def test_the_page_quotes_code():
    assert len(BLOCKS) >= 15, "docs/backprop.md should quote the code of every op"


@pytest.mark.parametrize("block", BLOCKS, ids=[b.strip().splitlines()[0][:40] for b in BLOCKS])
def test_every_quoted_block_is_in_the_source_verbatim(block):
    sources = _sources()
    assert any(block in text for text in sources.values()), (
        "this block of docs/backprop.md is not (any longer) a contiguous excerpt of tinycnn/:\n" + block)


def test_the_summary_table_is_the_real_output():
    from tinycnn.model import paper_net

    text = _read(BACKPROP)
    printed = paper_net().summary(batch_size=32)
    body = "\n".join(line.rstrip() for line in printed.splitlines())
    page = "\n".join(line.rstrip() for line in text.splitlines())
    assert body in page, "docs/backprop.md section 10 differs from paper_net().summary(batch_size=32):\n" + printed


def _error_rows(text: str) -> dict[str, float]:
    """{row label: relative error} from gradcheck's output (rows ending in a number like 1.10e-08)."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^(\S.*?)\s+(\d\.\d\de[-+]\d\d)$", line.rstrip())
        if m:
            rows[m.group(1)] = float(m.group(2))
    return rows


def test_the_gradcheck_output_is_the_real_output(capsys):
    """Same rows as a fresh run, each error within a factor of 3 (the last digits of a
    finite difference move with the BLAS kernel the machine picks)."""
    from tinycnn import gradcheck

    assert gradcheck.main([]) == 0
    fresh = _error_rows(capsys.readouterr().out)
    block = _read(BACKPROP).split("### Real output", 1)[1].split("```", 2)[1]
    quoted = _error_rows(block)
    assert len(fresh) > 20 and list(quoted) == list(fresh)
    for label, value in fresh.items():
        assert quoted[label] / 3 <= value <= quoted[label] * 3, label
