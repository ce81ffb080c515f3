"""bench.gpu_checks without a GPU: every step still runs (and skips), and the entry
it writes names the device situation, the commit and each step's exit code."""

import pytest

from bench import gpu_checks


def _has_gpu() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@pytest.mark.skipif(_has_gpu(), reason="on a GPU these steps are the real (long) benchmarks")
def test_writes_an_entry_with_each_step(tmp_path, capsys):
    assert gpu_checks.main(["--out", str(tmp_path), "--only", "step,pipeline", "--commit", "abc1234"]) == 0
    entry = (tmp_path / "gpu-run.md").read_text()
    assert "commit: abc1234" in entry
    assert "### step: exit 0" in entry and "### pipeline: exit 0" in entry
    assert "skipped" in (tmp_path / "step.log").read_text()  # no cuda backend here, said plainly


def test_unknown_step_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        gpu_checks.main(["--only", "tests,nonsense"])
    assert e.value.code == 2 and "nonsense" in capsys.readouterr().err
