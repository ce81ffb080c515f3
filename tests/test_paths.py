"""tinycnn.paths.atomic_write: a file written whole or not at all, by every writer."""

import os

import pytest

from tinycnn.paths import atomic_write


def test_a_write_replaces_the_file_whole_with_the_mode_of_a_new_file(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("old\n")
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write("new\n")
        temporary = [p.name for p in tmp_path.iterdir() if p != path]
        assert len(temporary) == 1 and temporary[0].startswith(".tmp-") and temporary[0].endswith(".csv")
        assert path.read_text() == "old\n"  # nothing visible until the end
    assert path.read_text() == "new\n"
    plain = tmp_path / "plain.csv"
    plain.write_text("x")
    assert os.stat(path).st_mode == os.stat(plain).st_mode  # not mkstemp's private mode


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_write_that_fails_leaves_the_earlier_file_and_no_temporary(tmp_path, error):
    path = tmp_path / "metrics.json"
    path.write_text("{}")
    with pytest.raises(type(error)):
        with atomic_write(path) as f:
            f.write(b"half")
            raise error
    assert path.read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
