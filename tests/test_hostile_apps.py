"""Hostile input to every app, second round: finite numbers that overflow (3e38 pixels,
weights that overflow on an image), checkpoints from a hostile source (members that
are not arrays, zip bombs, objects, other dtypes), memory (scan_film's estimate held
to a measured peak, MemoryError anywhere in one line), held-out scans of a leaky
protocol, two trainings writing one folder, and Ctrl-C however the tests are started."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from PIL import Image

from test_hostile_support import (  # noqa: F401  (fixtures)
    TINY, app_process, edit_checkpoint, folder_bytes, fresh_run, make_rois, memory_available, one_error, read_npz,
    run_classify, sigint_as_ctrl_c, sigint_ignored, small_image, train, trained_run, usage_error)
from tinycnn.checkpoint import CheckpointError, read_checkpoint
from tinycnn.mammo import outputs, scan
from tinycnn.mammo.runfolder import RunLock

import scan_film  # noqa: E402  (apps/ is on sys.path through test_hostile_support)

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning")


def film(path, shape=(48, 40), seed=0, scale=255.0, dtype=np.uint8, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).random(shape) * scale
    Image.fromarray(a.astype(dtype), mode=mode).save(path)
    return path


def huge_tiff(path, seed=0, value=3e38):
    return film(path, (24, 24), seed, value, np.float32, "F")


def run_scan(ckpt, *films, out, capsys, extra=()):
    rc = scan_film.main([str(ckpt), *map(str, films), "--out", str(out), "--backend", "numpy", "--no-breast-mask",
                         "--stride", "16", *extra])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def overflowing(run, dst):
    """A checkpoint of finite weights on which every image's logits overflow to NaN."""
    w = read_npz(run / "best.npz")["layer13.w"]
    return edit_checkpoint(run / "best.npz", dst, arrays={"layer13.w": np.full_like(w, 3e38)})


# ------------------------------------------------------------ numbers that overflow
def test_classify_reads_3e38_pixels_like_the_same_image_at_a_sane_scale(fresh_run, run_classify, tmp_path):
    huge = huge_tiff(tmp_path / "huge.tif")
    sane = huge_tiff(tmp_path / "sane.tif", value=1.0)
    rc, _, err = run_classify(fresh_run, huge, sane, "--csv", tmp_path / "p.csv")
    assert rc == 0, err
    p = [float(r["p_malignant"]) for r in csv.DictReader(open(tmp_path / "p.csv"))]
    assert np.isfinite(p).all() and abs(p[0] - p[1]) < 1e-5


def test_classify_names_the_image_the_weights_overflow_on_and_never_prints_nan(fresh_run, run_classify, tmp_path):
    ckpt = overflowing(fresh_run, tmp_path / "over.npz")
    rc, out, err = run_classify(ckpt, small_image(tmp_path / "r.png"), "--csv", tmp_path / "p.csv")
    assert rc == 2 and "r.png: the network's output for this image is not finite" in one_error(err)
    assert "nan" not in out.lower() and not (tmp_path / "p.csv").exists()
    rc, out, err = run_classify(ckpt, small_image(tmp_path / "r.png"), "--explain", tmp_path / "maps")
    assert rc == 2 and "not finite" in one_error(err) and list((tmp_path / "maps").iterdir()) == []


def test_classify_skips_a_nan_tiff_naming_it_and_classifies_the_rest(fresh_run, run_classify, tmp_path):
    bad = huge_tiff(tmp_path / "nan.tif")
    a = np.asarray(Image.open(bad)).copy()
    a[3, 3] = np.nan
    Image.fromarray(a, mode="F").save(bad)
    rc, out, err = run_classify(fresh_run, bad, small_image(tmp_path / "ok.png"))
    assert rc == 0 and "ok.png" in out and "nan.tif" not in out
    assert "warning: skipped" in err and "nan.tif" in err and "non-finite" in err


def test_scan_film_scans_3e38_pixels_and_skips_a_film_it_cannot_classify(fresh_run, tmp_path, capsys):
    huge = huge_tiff(tmp_path / "films" / "huge.tif")
    rc, out, err = run_scan(fresh_run, huge, out=tmp_path / "a", capsys=capsys)
    assert rc == 0, err
    rows = list(csv.DictReader(open(tmp_path / "a" / "huge.regions.csv")))
    assert rows and all(np.isfinite(float(r["p_malignant"])) for r in rows)
    rc, out, err = run_scan(overflowing(fresh_run, tmp_path / "over.npz"), huge, out=tmp_path / "b", capsys=capsys)
    assert rc == 2 and "none of the 1 film(s) could be read and scanned" in one_error(err)
    assert "huge.tif: the network's output is not finite for the window at x 0, y 0" in err
    assert not (tmp_path / "b" / "huge.heatmap.png").exists()
    index = list(csv.DictReader(open(tmp_path / "b" / "scans.csv")))
    assert index[0]["status"].startswith("skipped: ") and "not finite" in index[0]["status"]


def test_a_window_that_cannot_be_normalised_is_named_never_a_nan_in_the_map():
    from tinycnn.model import paper_net

    f = np.random.default_rng(0).random((40, 64)).astype(np.float32)
    f[5, 50] = np.inf  # what a caller that skips the film's own check could hand the scan
    with pytest.raises(scan.ScanError, match=r"the window at x 32, y 0 \(side 32\) cannot be normalised"):
        scan.scan(paper_net(hidden=4, in_size=32), f, 32, 32, 32)


def test_training_reads_3e38_pixels_and_names_a_nan_image_it_skips(train, tmp_path):
    rois = make_rois(tmp_path / "rois", n=6)
    huge_tiff(rois / "malignant" / "huge.tif")
    bad = huge_tiff(rois / "benign" / "nan.tif")
    a = np.asarray(Image.open(bad)).copy()
    a[0, 0] = np.inf
    Image.fromarray(a, mode="F").save(bad)
    with pytest.warns(UserWarning, match="nan.tif.*non-finite"):
        rc, out, err = train("--dataset", "folder", "--data-dir", str(rois))
    assert rc == 0, err
    assert "1 unreadable input(s) skipped (first: benign/nan.tif" in out  # and huge.tif trained, unnamed


# ------------------------------------------------------------ checkpoints from a hostile source
def _npy(array, **save) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, **save)
    return buf.getvalue()


def repack(src, dst, replace=None, add=None, drop=(), compress=zipfile.ZIP_STORED):
    """dst: src's members, some replaced or added ({member name: bytes}), some dropped."""
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members.update(replace or {})
    with zipfile.ZipFile(dst, "w", compression=compress) as z:
        for name, data in list(members.items()) + list((add or {}).items()):
            if name not in drop:
                z.writestr(name, data)
    return dst


def _inflated_while(fn) -> int:
    """Peak bytes NumPy and Python allocate while fn runs (zipfile inflates into them)."""
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


BOMB = 64 << 20  # a member that inflates to 64 MiB, from a file of some 64 KiB


def _header(descr: str, shape: tuple) -> bytes:
    """A .npy header alone: what a member declares, whatever follows it."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _bomb_cases(z: dict) -> dict:
    """name -> (members to replace or add, what the one error line says)."""
    w13 = z["layer13.w"]
    return {
        "a raw-bytes member": ({"layer0.w.npy": b"raw weights, no header"}, "member 'layer0.w.npy' is not a NumPy"),
        "a member that is not .npy": ({"layer0.w": b"raw"}, "member 'layer0.w' is not a NumPy array (.npy)"),
        "a header that hides a bomb": ({"layer13.w.npy": _npy(w13) + bytes(BOMB)},
                                       "declares float32 (128, 8) (4,224 bytes with its header) but holds"),
        "an honest bomb among the extras": ({"extra.opt.m.0.npy": _header("<f4", (BOMB // 4,)) + bytes(BOMB)},
                                            "more than any optimizer state of this network"),
        "a record of 80 MiB": ({"__meta__.npy": _header("<U20971520", ()) + bytes(80 << 20)},
                               "the __meta__ record is 83,886,080 bytes"),
        "a header that claims 2 GiB": ({"layer0.w.npy": b"\x93NUMPY\x02\x00" + (2**31).to_bytes(4, "little")},
                                       "damaged .npy header (length 2147483648)"),
        "Python objects": ({"layer13.w.npy": _npy(np.array([[None] * 8] * 128, dtype=object), allow_pickle=True)},
                           "holds Python objects"),
        "a .npy of version 3": ({"layer0.b.npy": _npy(z["layer0.b"])[:6] + b"\x03\x00" + _npy(z["layer0.b"])[8:]},
                                "version 3.0"),
        "complex weights": ({"layer0.b.npy": _npy(z["layer0.b"].astype(np.complex64))}, "complex64 values, not float"),
        "a stray member": ({"notes.npy": _npy(np.arange(3))}, "member 'notes' is not part of a tinycnn checkpoint"),
        "a negative dimension": ({"layer0.b.npy": _header("<f4", (-16,))}, "negative dimension"),
    }


@pytest.mark.parametrize("case", ["a raw-bytes member", "a member that is not .npy", "a header that hides a bomb",
                                  "an honest bomb among the extras", "a record of 80 MiB", "a header that claims 2 GiB",
                                  "Python objects", "a .npy of version 3", "complex weights", "a stray member",
                                  "a negative dimension"])
def test_a_hostile_checkpoint_is_refused_before_its_data_is_inflated(fresh_run, run_classify, tmp_path, case):
    members, message = _bomb_cases(read_npz(fresh_run / "best.npz"))[case]
    ckpt = repack(fresh_run / "best.npz", tmp_path / "hostile.npz", replace=members, compress=zipfile.ZIP_DEFLATED)
    assert os.path.getsize(ckpt) < 4 << 20
    with pytest.raises(CheckpointError) as e:
        peak = _inflated_while(lambda: read_checkpoint(ckpt))
    assert message in str(e.value)
    peak = 0
    try:
        peak = _inflated_while(lambda: read_checkpoint(ckpt, arrays=False))
    except CheckpointError:
        pass
    assert peak < 8 << 20  # nothing near the bomb's size was ever allocated
    rc, out, err = run_classify(ckpt, small_image(tmp_path / "r.png"))
    assert rc == 2 and message in one_error(err) and out == ""


def test_a_member_written_twice_or_damaged_is_refused(fresh_run, tmp_path):
    z = read_npz(fresh_run / "best.npz")
    with pytest.warns(UserWarning, match="Duplicate name"):
        twice = repack(fresh_run / "best.npz", tmp_path / "twice.npz", add={"layer0.b.npy": _npy(z["layer0.b"] + 1)})
    with pytest.raises(CheckpointError, match="appears twice"):
        read_checkpoint(twice)
    data = bytearray((fresh_run / "best.npz").read_bytes())
    at = data.find(z["layer9.w"].tobytes()[:64])
    data[at + 10] ^= 0xFF  # a flipped bit in a stored member: its CRC no longer holds
    (tmp_path / "flipped.npz").write_bytes(bytes(data))
    read_checkpoint(tmp_path / "flipped.npz", arrays=False)  # the records are intact
    with pytest.raises(CheckpointError, match="not a readable tinycnn checkpoint.*CRC"):
        read_checkpoint(tmp_path / "flipped.npz")


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_float16_and_float64_weights_are_converted_with_a_note(fresh_run, run_classify, tmp_path, dtype):
    z = read_npz(fresh_run / "best.npz")
    ckpt = edit_checkpoint(fresh_run / "best.npz", tmp_path / "other.npz",
                           arrays={k: v.astype(dtype) for k, v in z.items() if k.startswith("layer")})
    img = small_image(tmp_path / "r.png")
    rc, _, err = run_classify(ckpt, img, "--csv", tmp_path / "p.csv")
    assert rc == 0, err
    assert f"note: {ckpt}: 14 parameter(s) stored as {np.dtype(dtype).name} (layer0.w, layer0.b, layer3.w, ...), " \
           "converted to float32 on loading" in err
    assert run_classify(fresh_run / "best.npz", img, "--csv", tmp_path / "q.csv")[0] == 0
    p, q = (float(next(csv.DictReader(open(tmp_path / n)))["p_malignant"]) for n in ("p.csv", "q.csv"))
    assert abs(p - q) < (2e-2 if dtype is np.float16 else 1e-6)


def test_float64_weights_beyond_float32_are_refused(fresh_run, tmp_path):
    w = read_npz(fresh_run / "best.npz")["layer19.b"].astype(np.float64)
    w[0] = 1e300
    ckpt = edit_checkpoint(fresh_run / "best.npz", tmp_path / "big.npz", arrays={"layer19.b": w})
    with pytest.raises(CheckpointError, match="layer19.b holds float64 values up to 1e\\+300, beyond float32"):
        read_checkpoint(ckpt)


def test_resume_from_float16_weights_says_it_converts(fresh_run, train):
    z = read_npz(fresh_run / "last.npz")
    edit_checkpoint(fresh_run / "last.npz", fresh_run / "last.npz",
                    arrays={k: v.astype(np.float16) for k, v in z.items() if k.startswith("layer")})
    rc, out, err = train("--resume", "--epochs", "2")
    assert rc == 0, err
    assert "parameter(s) stored as float16" in out and "converted to float32 on loading" in out


# ------------------------------------------------------------ memory
def _scan_peak_script(ckpt, side: int, out) -> str:
    """A child process that scans one side x side film the way scan_film.py does
    (scan_each: read, mask, windows, maps, overlay, outputs) after a warm-up film, and
    prints the growth of its peak resident memory and the app's estimate."""
    return f"""
import argparse, gc, sys
from pathlib import Path
import numpy as np
from PIL import Image
sys.path.insert(0, {os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'apps')!r})
import scan_film
from tinycnn.mammo import outputs
from tinycnn.mammo.cli import open_backend
out = Path({str(out)!r}); out.mkdir(exist_ok=True)
def film(path, side):
    yy, xx = np.mgrid[0:side, 0:side]
    a = (np.hypot(yy - side / 2, xx) < 0.8 * side) * 120 + np.random.default_rng(0).random((side, side)) * 40
    Image.fromarray(a.astype(np.uint8)).save(path)
film(out / "warm.png", 64); film(out / "big.png", {side})
scanner = scan_film.Scanner(Path({str(ckpt)!r}), open_backend("numpy", "auto"), window={side} // 4,
                            stride={side} // 4)
args = argparse.Namespace(top=10, strict=False, out=str(out))
def run(f):
    assert scan_film.scan_each([f], outputs.plan_outputs(out, [f], scan_film.FILM_OUTPUTS), scanner, args, []) == 0
def status(key):  # kB in /proc/self/status -> bytes
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":")) * 1024
run(out / "warm.png")
gc.collect()
base = status("VmRSS")
try:  # the peak of this process's memory from here (ru_maxrss would keep the parent's, from before exec)
    open("/proc/self/clear_refs", "w").write("5")
except OSError:
    pass
run(out / "big.png")
print("PEAK", status("VmHWM") - base, scanner.film_bytes({side}, {side}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the resident size from /proc")
def test_scan_film_memory_estimate_is_within_1_5x_of_the_measured_peak_at_4000x4000(trained_run, tmp_path):
    done = subprocess.run([sys.executable, "-c", _scan_peak_script(trained_run / "best.npz", 4000, tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    measured, estimate = map(int, done.stdout.split("PEAK", 1)[1].split())
    assert measured > 200 << 20, measured  # the scan did take memory: the measurement measures something
    assert measured / 1.5 <= estimate <= 1.5 * measured, (measured >> 20, estimate >> 20)


def test_scan_film_memory_estimate_covers_what_numpy_allocates_at_1000x1000(trained_run, tmp_path, capsys):
    f = film(tmp_path / "big.png", (1000, 1000))
    scanner = scan_film.Scanner(trained_run / "best.npz", scan_film.open_backend("numpy", "auto"), window=250,
                                stride=250)
    plan = outputs.plan_outputs(tmp_path / "o", [f], scan_film.FILM_OUTPUTS)
    (tmp_path / "o").mkdir()
    args = type("Args", (), {"top": 10, "strict": False, "out": str(tmp_path / "o")})
    peak = _inflated_while(lambda: scan_film.scan_each([f], plan, scanner, args, []))
    assert peak <= scanner.film_bytes(1000, 1000) <= 1.5 * peak, (peak >> 20, scanner.film_bytes(1000, 1000) >> 20)


def test_a_film_too_big_for_memory_is_skipped_before_it_is_decoded(trained_run, tmp_path, capsys, memory_available,
                                                                  monkeypatch):
    from tinycnn.mammo import scanner

    big = film(tmp_path / "films" / "big.png", (400, 300))
    small = film(tmp_path / "films" / "small.png", (40, 30))
    decoded = []
    real = scanner.read_image
    monkeypatch.setattr(scanner, "read_image", lambda p: decoded.append(p) or real(p))
    memory_available(scan.film_bytes(100, 100) + (1 << 20))
    rc, out, err = run_scan(trained_run, big, small, out=tmp_path / "scans", capsys=capsys)
    assert rc == 0 and decoded == [small]
    assert "scanning" in err and "(300x400 pixels" in err and "lower --batch-size or scan a smaller film" in err


def test_memory_error_in_classify_is_one_line_naming_what_to_lower(fresh_run, run_classify, tmp_path, monkeypatch):
    import classify

    def no_memory(*a, **k):
        raise MemoryError

    monkeypatch.setattr(classify.saliency, "explain", no_memory)
    rc, _, err = run_classify(fresh_run, small_image(tmp_path / "r.png"), "--explain", tmp_path / "maps")
    assert rc == 2 and "ran out of memory explaining at --batch-size 64" in one_error(err)
    assert "lower --batch-size" in err


def test_memory_error_in_scan_film_is_one_line_and_the_index_says_where_it_stopped(trained_run, tmp_path, capsys,
                                                                                   monkeypatch):
    def no_memory(*a, **k):
        raise MemoryError

    first, second = film(tmp_path / "films" / "a.png"), film(tmp_path / "films" / "b.png", seed=1)
    real, calls = scan.mean_maps, []

    def maps_then_no_memory(*a):  # the first film's maps are made, the second's run out
        calls.append(1)
        return real(*a) if len(calls) == 1 else no_memory()

    monkeypatch.setattr(scan, "mean_maps", maps_then_no_memory)
    rc, _, err = run_scan(trained_run, first, second, out=tmp_path / "scans", capsys=capsys)
    assert rc == 2 and "ran out of memory scanning" in one_error(err) and "b.png (40x48 pixels" in err
    assert "the 1 film(s) before it are written" in err and "lower --batch-size" in err
    index = list(csv.DictReader(open(tmp_path / "scans" / "scans.csv")))
    assert [r["status"] for r in index] == ["scanned", "stopped: out of memory"]


@pytest.mark.parametrize("where", ["pooling", "metrics.json"])
def test_memory_error_in_training_is_one_line_and_keeps_the_checkpoints(train, tmp_path, monkeypatch, where):
    from tinycnn.mammo import report
    from tinycnn.mammo.experiment import classification

    def no_memory(*a, **k):
        raise MemoryError

    monkeypatch.setattr(*((classification, "run_record") if where == "pooling" else (report, "write_metrics")),
                        no_memory)
    rc, _, err = train()
    assert rc == 2 and "ran out of memory" in one_error(err) and "lower --batch-size, --hidden or --image-size" in err
    assert (tmp_path / "run" / "last.npz").is_file()


# ------------------------------------------------------------ held-out scans of a leaky protocol
def _heldout(run, capsys):
    return run_scan(run, out=run.parent / "scans", capsys=capsys, extra=["--heldout", str(run.parent / "mias")])


def _cv_record(run, protocol):
    run.mkdir(parents=True, exist_ok=True)
    (run.parent / "mias").mkdir(exist_ok=True)
    record = {"dataset": {"name": "mias"}, "cv": {"k": 2}, "protocol": "paper" if protocol == "paper" else "patient",
              "config": {"protocol": protocol}, "predictions": [{"roi": "mdb001:0", "patient": "1", "fold": 1}]}
    (run / "metrics.json").write_text(json.dumps(record))


def test_heldout_refuses_a_paper_protocol_run(tmp_path, capsys):
    _cv_record(tmp_path / "cv", "paper")
    rc, _, err = _heldout(tmp_path / "cv", capsys)
    assert rc == 2 and "is a --protocol paper run" in one_error(err) and "leaky" in err
    assert not (tmp_path / "scans").exists()


def test_heldout_refuses_a_fold_model_trained_in_the_papers_order(fresh_run, tmp_path, capsys):
    _cv_record(tmp_path / "cv", "patient")
    (tmp_path / "cv" / "fold-1").mkdir()
    edit_checkpoint(fresh_run / "last.npz", tmp_path / "cv" / "fold-1" / "last.npz",
                    meta=lambda m: dict(m, protocol="paper", fold=1, folds=2))
    rc, _, err = _heldout(tmp_path / "cv", capsys)
    assert rc == 2 and "was trained in protocol 'paper', not on the patient split" in one_error(err)


def test_heldout_refuses_a_run_still_being_written(tmp_path, capsys):
    _cv_record(tmp_path / "cv", "patient")
    with RunLock(tmp_path / "cv"):
        rc, _, err = _heldout(tmp_path / "cv", capsys)
    assert rc == 2 and "is being written by a training" in one_error(err)


# ------------------------------------------------------------ two trainings, one folder
def test_a_run_inside_a_live_runs_folders_is_refused(fresh_run, train, tmp_path):
    before = folder_bytes(fresh_run)
    with RunLock(fresh_run, ["patient", "paper"]):  # a --protocol both run, writing
        rc, _, err = train("--protocol", "patient", out="run/patient")
        assert rc == 2 and "is in use by another training" in one_error(err)
        rc, _, err = train("--cv", "2", out="run/paper/fold-1")
        assert rc == 2 and "lies inside" in one_error(err)
    assert {k: v for k, v in folder_bytes(fresh_run).items() if not k.endswith(".lock")} == {
        k: v for k, v in before.items() if not k.endswith(".lock")}


def test_a_run_whose_folder_holds_a_live_run_is_refused(train, tmp_path):
    with RunLock(tmp_path / "run" / "patient"):  # a --protocol patient run at OUT/patient, writing
        rc, _, err = train("--protocol", "both")
    assert rc == 2 and "(a folder this run writes) is in use by another training" in one_error(err)
    assert not (tmp_path / "run" / "paper").exists()  # the lock it took on the way was given back, folder too
    with RunLock(tmp_path / "run"):  # a plain run at OUT
        rc, _, err = train("--protocol", "patient", "--cv", "2", out="run/patient")
    assert rc == 2 and "lies inside" in one_error(err) and "which another training" in err


def test_a_live_process_in_a_subfolder_is_seen_by_a_parent_run(train, tmp_path):
    folder = tmp_path / "run" / "patient" / "fold-1"
    code = ("import time; from tinycnn.mammo.runfolder import RunLock; "
            f"lock = RunLock({str(folder)!r}).acquire(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc, _, err = train("--protocol", "both", "--cv", "2")
        assert rc == 2 and f"(process {holder.pid})" in one_error(err)
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------ Ctrl-C however the tests are started
def test_ctrl_c_reaches_the_test_process_even_when_started_with_sigint_ignored():
    with sigint_ignored():
        with sigint_as_ctrl_c():
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # the caller's disposition is back


@pytest.mark.skipif(os.name != "posix", reason="signals to a child process")
def test_ctrl_c_reaches_an_app_started_from_a_process_that_ignores_it(trained_run, tmp_path):
    big = film(tmp_path / "big.png", (600, 600))
    with sigint_ignored():  # what a background job's children inherit
        child = app_process("scan_film", trained_run, big, "--out", tmp_path / "scans", "--backend", "numpy",
                            "--stride", "1", "--no-breast-mask")
    try:
        assert "windows of" in child.stdout.readline()  # scanning has begun
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130 and "interrupted; every file written so far is whole" in one_error(err)
