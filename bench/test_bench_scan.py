"""The scan benchmark runs and its own validation (film-wide against window-by-window
log-odds) passes, on the NumPy reference with one repeat (its time is not checked)."""

from bench import bench_scan


def test_bench_scan_validates_and_times_a_synthetic_film(capsys):
    assert bench_scan.main(["--backend", "numpy", "--repeats", "1", "--no-windowed"]) == 0
    out = capsys.readouterr().out
    assert ": ok" in out and "fully convolutional scan, per film: median" in out
