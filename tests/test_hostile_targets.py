"""Hostile output: inputs whose outputs would collide (x.png and x.tif, X.png and
x.png, a/b.png and a__b.png, the same file twice), output targets that are not files
(named pipes, devices, sockets, folders, links to nothing), and names that would forge
a log line or a CSV row (newlines, tabs, escape sequences, bidirectional overrides,
bytes that are not UTF-8)."""

from __future__ import annotations

import csv
import json
import os
import socket
import sys

import numpy as np
import pytest
from PIL import Image

from test_hostile_support import (  # noqa: F401  (fixtures)
    TINY, fresh_run, make_rois, no_data_reading, no_hang, one_error, run_classify, small_image, train, train_app,
    trained_run, usage_error)
from tinycnn.mammo import runfolder
from tinycnn.mammo.cli import printable, shown
from tinycnn.mammo.outputs import output_names
from tinycnn.mammo.saliency import is_overlay

import scan_film  # noqa: E402  (apps/ is on sys.path through test_hostile_support)

posix_only = pytest.mark.skipif(os.name != "posix", reason="named pipes, sockets and byte names are POSIX")


def film(path, shape=(48, 40), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)).save(path)
    return path


def scan(ckpt, *films, out, capsys, extra=()):
    rc = scan_film.main([str(ckpt), *map(str, films), "--out", str(out), "--backend", "numpy", "--no-breast-mask",
                         "--stride", "16", *extra])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# ------------------------------------------------------------ outputs that collide
NAME_CASES = {
    # why each list exists: the stems (or the ways out of a clash) collide
    "same stem, two formats": ["d/x.png", "d/x.tif"],
    "a numbered name is taken by a real one": ["d/x.png", "d/x.tif", "d/x.png.png", "d/x-2.png", "e/x.png"],
    "letter case": ["d/X.png", "d/x.png"],
    "the folder separator spelled out": ["q/a/b.png", "q/a__b.png"],
    "control characters": ["d/a\nb.png", "d/a\tb.png", "d/a_b.png"],
    "names too long for a file system": ["d/" + "z" * 300 + "1.png", "d/" + "z" * 300 + "2.png"],
}


@pytest.mark.parametrize("case", list(NAME_CASES))
def test_every_input_gets_its_own_name_deterministically_and_each_change_is_said(case, tmp_path):
    (tmp_path / "q" / "a").mkdir(parents=True)
    files = [tmp_path / f for f in NAME_CASES[case]]
    stems, notes = output_names(files, roots=[tmp_path / "q"])
    assert len({s.casefold() for s in stems}) == len(files)  # apart even where the file system ignores case
    assert (stems, notes) == output_names(files, roots=[tmp_path / "q"])  # the same inputs, the same names
    assert all(len(os.fsencode(s + ".gradient.png")) <= 255 and "/" not in s and "\n" not in s for s in stems)
    plain = [f.stem for f in files]
    renamed = [f for f, s, p in zip(files, stems, plain) if s != p and not str(f).startswith(str(tmp_path / "q"))]
    assert len(notes) >= len(renamed)  # every change of name is said
    assert all(str(f) in " ".join(notes) for f in renamed)


def test_x_png_and_x_tif_get_their_own_heat_maps(trained_run, tmp_path, capsys):
    png = film(tmp_path / "films" / "x.png", seed=1)
    tif = tmp_path / "films" / "x.tif"
    Image.fromarray((np.random.default_rng(2).random((40, 48)) * 255).astype(np.uint8)).save(tif)
    out = tmp_path / "scans"
    rc, text, err = scan(trained_run, png, tif, out=out, capsys=capsys)
    assert rc == 0, err
    assert is_overlay(out / "x.png.heatmap.png") and is_overlay(out / "x.tif.heatmap.png")
    assert Image.open(out / "x.png.heatmap.png").size == (40, 48) and Image.open(out / "x.tif.heatmap.png").size == (
        48, 40)  # each film's own map, not one written over the other
    assert "note:" in err and "x.tif: its outputs are named x.tif.*" in err
    rows = {r["film"]: r for r in csv.DictReader(open(out / "scans.csv", encoding="utf-8"))}
    assert rows[str(png)]["heatmap"].endswith("x.png.heatmap.png") and rows[str(tif)]["regions"].endswith(
        "x.tif.regions.csv")
    # again: the same names, and the replacement of its own outputs is said
    rc, _, err = scan(trained_run, png, tif, out=out, capsys=capsys)
    assert rc == 0 and "4 earlier output(s) of scan_film.py" in err


def test_explain_gives_x_png_and_x_tif_their_own_overlays_and_the_csv_says_where(fresh_run, run_classify, tmp_path):
    small_image(tmp_path / "x.png", 1)
    Image.open(tmp_path / "x.png").save(tmp_path / "x.tif")
    rc, _, err = run_classify(fresh_run, tmp_path / "x.png", tmp_path / "x.tif", "--explain", tmp_path / "maps",
                              "--csv", tmp_path / "p.csv")
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == [
        "x.png.gradcam.png", "x.png.gradient.png", "x.tif.gradcam.png", "x.tif.gradient.png"]
    rows = list(csv.DictReader(open(tmp_path / "p.csv", encoding="utf-8")))
    assert [r["gradient_overlay"].rsplit("/", 1)[-1] for r in rows] == ["x.png.gradient.png", "x.tif.gradient.png"]
    # the table with its overlay columns is an earlier predictions table: replaced without --explain
    rc, _, err = run_classify(fresh_run, tmp_path / "x.png", "--csv", tmp_path / "p.csv")
    assert rc == 0, err
    assert list(csv.DictReader(open(tmp_path / "p.csv", encoding="utf-8")))[0].keys() == {
        "file", "p_malignant", "prediction"}


@posix_only
def test_an_image_reached_twice_is_classified_once_and_said(fresh_run, run_classify, tmp_path):
    (tmp_path / "rois").mkdir()
    img = small_image(tmp_path / "rois" / "a.png")
    os.symlink(img, tmp_path / "alias.png")
    rc, out, err = run_classify(fresh_run, tmp_path / "rois", img, tmp_path / "alias.png", "--csv", tmp_path / "p.csv")
    assert rc == 0, err
    assert len(list(csv.DictReader(open(tmp_path / "p.csv", encoding="utf-8")))) == 1
    assert "1 image(s) classified" in out
    assert f"{img} is given more than once: used once" in err  # named after its folder
    assert f"alias.png is {img} again (another spelling or a link): used once" in err


# ------------------------------------------------------------ targets that are not files
def _not_a_file(kind, path):
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        return s
    elif kind == "folder":
        path.mkdir()
    elif kind == "dangling link":
        os.symlink(path.parent / "nothing-here", path)
    return None


TARGETS = ["fifo", "socket", "folder", "dangling link"]
SAID = {"fifo": "a named pipe (FIFO)", "socket": "a socket", "folder": "a folder", "dangling link": "link to nothing"}


@posix_only
@pytest.mark.parametrize("kind", TARGETS)
def test_a_csv_that_is_not_a_file_is_refused_before_any_work(fresh_run, tmp_path, capsys, no_hang, kind):
    target = tmp_path / "p.csv"
    keep = _not_a_file(kind, target)
    err = usage_error(__import__("classify").main, [str(fresh_run), str(small_image(tmp_path / "r.png")),
                                                    "--csv", str(target)], capsys)
    assert SAID[kind] in err
    if keep:
        keep.close()


@posix_only
def test_a_csv_that_is_a_device_is_refused(fresh_run, tmp_path, capsys, no_hang):
    err = usage_error(__import__("classify").main, [str(fresh_run), str(small_image(tmp_path / "r.png")),
                                                    "--csv", os.devnull], capsys)
    assert "is a character device, not a regular file" in err and "'-' is stdout" not in err


@posix_only
@pytest.mark.parametrize("which", ["x.heatmap.png", "x.regions.csv", "scans.csv"])
def test_scan_film_refuses_a_named_pipe_among_its_outputs_before_scanning(trained_run, tmp_path, capsys, no_hang,
                                                                         which):
    out = tmp_path / "scans"
    out.mkdir()
    os.mkfifo(out / which)
    rc, text, err = scan(trained_run, film(tmp_path / "x.png"), out=out, capsys=capsys)
    assert rc == 2 and "named pipe" in one_error(err) and which in err
    assert text == "" and sorted(p.name for p in out.iterdir()) == [which]


@posix_only
def test_an_out_that_is_a_named_pipe_is_refused(trained_run, tmp_path, capsys, no_hang):
    os.mkfifo(tmp_path / "scans")
    err = usage_error(scan_film.main, [str(trained_run), str(film(tmp_path / "x.png")), "--out",
                                       str(tmp_path / "scans")], capsys)
    assert "is a named pipe (FIFO), not a folder" in err


@posix_only
def test_explain_refuses_a_named_pipe_where_an_overlay_goes(fresh_run, run_classify, tmp_path, no_hang):
    (tmp_path / "maps").mkdir()
    os.mkfifo(tmp_path / "maps" / "r.gradcam.png")
    rc, out, err = run_classify(fresh_run, small_image(tmp_path / "r.png"), "--explain", tmp_path / "maps")
    assert rc == 2 and "named pipe" in one_error(err) and out == ""


@posix_only
@pytest.mark.parametrize("where, kind", [("metrics.json", "fifo"), ("last.npz", "folder"), ("roc.png", "fifo"),
                                         (".lock", "fifo"), ("patient", "fifo"), ("paper/best.npz", "socket")])
def test_train_refuses_a_run_file_that_is_not_a_file_before_reading(tmp_path, capsys, no_data_reading, no_hang,
                                                                    where, kind):
    out = tmp_path / "run"
    (out / "paper").mkdir(parents=True)
    keep = _not_a_file(kind, out / where)
    err = usage_error(train_app.main, [*TINY, "--protocol", "both", "--out", str(out)], capsys)
    assert str(out / where) in err and ("where this run writes a file" in err or "needs a folder" in err)
    if keep:
        keep.close()


@posix_only
def test_a_lock_file_that_is_a_named_pipe_is_never_waited_on(tmp_path, no_hang):
    (tmp_path / "run").mkdir()
    os.mkfifo(tmp_path / "run" / runfolder.LOCK_FILE)
    assert runfolder.lock_owner(tmp_path / "run") is None and not runfolder.in_use(tmp_path / "run")
    with pytest.raises(runfolder.RunFolderUnusable, match="named pipe"):
        runfolder.RunLock(tmp_path / "run").acquire()


@posix_only
def test_a_checkpoint_or_an_input_that_is_a_named_pipe(fresh_run, run_classify, tmp_path, no_hang):
    os.mkfifo(tmp_path / "ckpt.npz")
    rc, _, err = run_classify(tmp_path / "ckpt.npz", small_image(tmp_path / "r.png"))
    assert rc == 2 and "is a named pipe (FIFO), not a file" in one_error(err)
    (tmp_path / "rois").mkdir()
    small_image(tmp_path / "rois" / "good.png")
    os.mkfifo(tmp_path / "rois" / "pipe.png")
    rc, out, err = run_classify(fresh_run, tmp_path / "rois")
    assert rc == 0 and "good.png" in out and "pipe.png is a named pipe (FIFO), not an image file: left out" in err
    rc, _, err = run_classify(fresh_run, tmp_path / "rois" / "pipe.png")
    assert rc == 2 and "not an image file or a folder" in one_error(err)


# ------------------------------------------------------------ names that forge lines
FORGERIES = ["a\nerror: all is well", "b\rwarning: none", "c\tcell", "d\x1b[2Jclear", "e\u202egnp.exe", "f\x85g",
             "h\u2028i", "j\x00k"]


@pytest.mark.parametrize("name", FORGERIES + [os.fsdecode(b"bad\xff")])
def test_shown_keeps_a_name_one_field_on_one_line(name):
    text = shown(name)
    assert text.isprintable() and "\n" not in text and text.encode("utf-8")
    assert shown(text) == text  # nothing left to escape
    assert printable(f"line one\n{text}") == f"line one\n{text}"  # a message's own line breaks stay
    assert printable(name.replace("\n", "")) == shown(name.replace("\n", ""))  # the rest is escaped alike


def test_ordinary_names_are_left_as_they_are():
    for name in ("plain.png", "caf\u00e9/\u6f22\u5b57.png", "r\u00f6ntgen 1.tif", "back\\slash"):
        assert shown(name) == name


@posix_only
def test_classify_prints_and_writes_a_forged_name_as_one_field(fresh_run, run_classify, tmp_path):
    forged = "x\nerror: the checkpoint is fine\tand\x1b[31mred.png"
    small_image(tmp_path / forged)
    rc, out, err = run_classify(fresh_run, tmp_path / forged, "--csv", tmp_path / "p.csv")
    assert rc == 0, err
    assert not any(line.startswith("error:") for line in (out + err).splitlines())
    assert "\x1b" not in out + err and "x\\nerror: the checkpoint is fine\\tand\\x1b[31mred.png" in out
    lines = (tmp_path / "p.csv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and lines[1].count(",") == 2  # one row, three fields


@posix_only
def test_scan_film_and_its_index_keep_a_forged_film_name_on_one_line(trained_run, tmp_path, capsys):
    forged = film(tmp_path / "films" / "f\nerror: forged.png")
    broken = tmp_path / "films" / "g\nwarning: fine.png"
    broken.write_bytes(b"not an image")
    rc, out, err = scan(trained_run, forged, broken, out=tmp_path / "scans", capsys=capsys)
    assert rc == 0, err
    assert not any(line.startswith(("error:", "warning: fine")) for line in (out + err).splitlines())
    assert "f\\nerror: forged.png" in out and "g\\nwarning: fine.png" in err
    lines = (tmp_path / "scans" / "scans.csv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and "skipped: " in lines[2]  # the unreadable film is in the index too, on one line
    assert is_overlay(tmp_path / "scans" / "f_error: forged.heatmap.png")


@posix_only
def test_training_keeps_forged_and_non_utf8_names_on_one_line_and_metrics_json_strict(train, tmp_path):
    rois = make_rois(tmp_path / "rois", n=6)
    (rois / "benign" / "evil\nerror: forged.png").write_bytes(b"not an image")
    (rois / "benign" / (os.fsdecode(b"bad\xff") + ".png")).write_bytes(b"not an image either")
    with pytest.warns(UserWarning):
        rc, out, err = train("--dataset", "folder", "--data-dir", str(rois))
    assert rc == 0, err
    assert not any(line.startswith("error:") for line in (out + err).splitlines())
    raw = (tmp_path / "run" / "metrics.json").read_bytes()
    raw.decode("utf-8")  # valid UTF-8 throughout
    record = json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    skipped = " ".join(record["dataset"]["skipped"])
    assert "evil\\nerror: forged.png" in skipped and "bad\\xff.png" in skipped
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in raw.decode("utf-8"))  # no lone surrogates left


def test_an_error_naming_a_forged_file_is_one_line(fresh_run, run_classify, tmp_path):
    if sys.platform == "win32":
        pytest.skip("newlines in file names are POSIX")
    bad = tmp_path / "y\nerror: forged.png"
    bad.write_bytes(b"not an image")
    rc, _, err = run_classify(fresh_run, bad, "--strict")
    assert rc == 2 and "y\\nerror: forged.png" in one_error(err)
