"""Hostile input, second round, the data side: --cv folds dealt so both classes are on
every side whenever some dealing can do it, --batch-size above the data set, damaged
or partial cache files rebuilt with a note, a --cache-dir that is not a folder refused
before any work, and names holding a newline kept on one line in the training run's
log and metrics.json. Tiny data throughout (numpy backend, 32 px, hidden 8)."""

from __future__ import annotations

import io
import itertools
import json
import os
import zipfile
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest

import test_hostile_support as support
from test_hostile_support import GIB, TINY, make_rois, one_error, train_app, usage_error

# the shared fixtures, taken by assignment (a fixture imported by name reads as unused to linters)
train, memory_available, no_data_reading, no_hang = (support.train, support.memory_available,
                                                     support.no_data_reading, support.no_hang)
from tinycnn.mammo import cv
from tinycnn.mammo.data import DataError, cache, load_dataset
from tinycnn.mammo.data.roiset import RoiSet

posix_only = pytest.mark.skipif(os.name != "posix", reason="named pipes and newlines in file names are POSIX")


# ------------------------------------------------------------ (9b) --cv folds
def fold_sides_ok(folds, labels, patients) -> bool:
    """Every ROI tested once, no woman on both sides, both classes on both sides."""
    n = len(labels)
    if sorted(np.concatenate(folds).tolist()) != list(range(n)):
        return False
    for test in folds:
        train_side = np.setdiff1d(np.arange(n), test)
        if set(patients[train_side]) & set(patients[test]):
            return False
        if set(labels[test].tolist()) != {0, 1} or set(labels[train_side].tolist()) != {0, 1}:
            return False
    return True


def some_dealing_works(labels, patients, k) -> bool:
    """Whether any assignment of women to k folds gives valid folds (brute force)."""
    women = sorted(set(patients))
    for assignment in itertools.product(range(k), repeat=len(women)):
        fold_of = dict(zip(women, assignment))
        folds = [np.flatnonzero([fold_of[p] == f for p in patients]) for f in range(k)]
        if all(len(f) for f in folds) and fold_sides_ok(folds, labels, patients):
            return True
    return False


@pytest.mark.parametrize("seed", range(8))
def test_cv_2_on_four_women_two_of_each_class_gives_valid_folds(seed):
    labels, patients = np.array([0, 0, 1, 1]), np.array(["a", "b", "c", "d"])
    folds = cv.patient_folds(labels, patients, 2, seed=seed)
    assert len(folds) == 2 and fold_sides_ok(folds, labels, patients)


@pytest.mark.parametrize("labels, patients", [
    ([0, 1, 1, 1, 0], ["a", "a", "a", "b", "c"]),  # a big woman with both classes: the greedy dealing fails
    ([0, 0, 0, 0, 0, 1, 1, 1, 1, 1], list("aaaabccccd")),  # two big women, two small ones
    ([0, 1, 0, 1], ["a", "a", "b", "b"]),  # two women, each with both classes
])
def test_cv_2_deals_uneven_women_into_valid_folds(labels, patients):
    labels, patients = np.array(labels), np.array(patients)
    for seed in range(5):
        assert fold_sides_ok(cv.patient_folds(labels, patients, 2, seed=seed), labels, patients)


def test_folds_are_refused_exactly_when_no_dealing_can_make_them_valid():
    rng = np.random.default_rng(7)
    refused = dealt = 0
    for _ in range(120):
        k = int(rng.integers(2, 4))
        labels, patients = [], []
        for w in range(int(rng.integers(2, 6))):
            for _ in range(int(rng.integers(1, 4))):
                labels.append(int(rng.random() < 0.45))
                patients.append(f"w{w}")
        labels, patients = np.array(labels), np.array(patients)
        possible = some_dealing_works(labels, patients, k)
        try:
            folds = cv.patient_folds(labels, patients, k, seed=int(rng.integers(100)))
        except DataError:
            assert not possible, (labels.tolist(), patients.tolist(), k)
            refused += 1
            continue
        assert fold_sides_ok(folds, labels, patients), (labels.tolist(), patients.tolist(), k)
        dealt += 1
    assert refused and dealt  # both kinds of case were met


@pytest.mark.parametrize("labels, patients, k, message", [
    ([0, 0, 1, 1], ["a", "b", "c", "c"], 2, r"--cv 2: only 1 patient\(s\) with a malignant ROI.*drop --cv"),
    ([0, 1, 0, 0], ["a", "a", "b", "c"], 2, r"--cv 2: only 1 patient\(s\) with a malignant ROI"),
    ([1, 1, 0, 0], ["a", "b", "c", "c"], 2, r"--cv 2: only 1 patient\(s\) with a benign ROI"),
    ([0, 0, 0, 1, 1], ["a", "b", "c", "d", "e"], 3, r"--cv 3: only 2 patient\(s\) with a malignant ROI.*lower --cv "
                                                  "to 2"),
])
def test_folds_no_dealing_can_make_valid_are_a_clear_error(labels, patients, k, message):
    with pytest.raises(DataError, match=message):
        cv.patient_folds(np.array(labels), np.array(patients), k)


def test_the_app_runs_cv_2_on_four_synthetic_women(train, tmp_path):
    rc, out, err = train("--synthetic-count", "4", "--cv", "2")  # two ROIs a woman: two women a class
    assert rc == 0, err
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["dataset"]["patients"] == 4 and record["cv"]["k"] == 2
    for fold in (1, 2):
        tested = [p for p in record["predictions"] if p["fold"] == fold]
        assert {p["label"] for p in tested} == {0, 1}
        assert {p["patient"] for p in tested}.isdisjoint(
            {p["patient"] for p in record["predictions"] if p["fold"] != fold})


# ------------------------------------------------------------ (11) --batch-size above the set
def test_a_batch_above_the_set_runs_at_the_set_and_says_so(train, memory_available):
    memory_available(1 * GIB)  # batch 100000 at 32 px would need tens of GiB; the 72 samples need MiB
    rc, out, err = train("--synthetic-count", "6", "--batch-size", "100000")
    assert rc == 0, err
    assert "note: --batch-size 100000 is more than the 48 training samples" in out
    assert "training memory at batch 48:" in out and "train    1 epochs, batch 48," in out
    assert "100000" not in out.split("note:")[0]  # the banner estimates the batch the run has


def test_the_memory_estimate_is_for_the_batch_the_data_allows():
    from tinycnn.mammo.experiment.classification import estimate_batch

    argv = [*TINY, "--synthetic-count", "6", "--batch-size", "100000", "--out", "unused"]
    config = train_app.parse_args(argv)
    batch, why = estimate_batch(config)
    assert batch == 72 and "batches of at most 72: 12 ROIs x 6 transforms" in why
    assert estimate_batch(train_app.parse_args([*TINY, "--synthetic-count", "6", "--out", "unused"]))[0] == 16


# ------------------------------------------------------------ (14) damaged cache files
@pytest.fixture(scope="module")
def cached_set(tmp_path_factory):
    """(load options, the fresh RoiSet, the good cache file's bytes)."""
    options = dict(image_size=16, cache_dir=tmp_path_factory.mktemp("cache"), benign=3, malignant=3, seed=0)
    fresh = load_dataset("synthetic", **options)
    return options, fresh, Path(fresh.cache_file).read_bytes()


def good_arrays(good: bytes) -> dict:
    with np.load(io.BytesIO(good), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def rewritten(**edits):
    """A damage: the good arrays with some replaced (None: removed), saved as .npz."""
    def damage(path, good):
        arrays = good_arrays(good)
        for key, value in edits.items():
            if value is None:
                arrays.pop(key)
            else:
                arrays[key] = value(arrays[key]) if callable(value) else value
        np.savez(path, **arrays)
    return damage


def forged_header(path, good):
    """images.npy's header claims 10^9 images, its data holds six."""
    with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "images.npy":
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                              "shape": (10**9, 16, 16)})
                data = header.getvalue() + data[len(header.getvalue()):]
            dst.writestr(info.filename, data)


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def with_member(name: str, data: bytes | None):
    """A damage: the good archive with one more member (data None: a copy of the good
    archive's member of that name, so the name appears twice)."""
    def damage(path, good):
        path.write_bytes(good)
        with zipfile.ZipFile(path, "a") as zf, pytest.warns(UserWarning) if data is None else nullcontext():
            zf.writestr(name, data if data is not None else zipfile.ZipFile(io.BytesIO(good)).read(name))
    return damage


def with_nan(images):
    images = images.copy()
    images[1, 2, 3] = np.nan
    return images


DAMAGES = {
    "truncated": (lambda p, g: p.write_bytes(g[:len(g) // 2]), "not an .npz archive"),
    "zero bytes": (lambda p, g: p.write_bytes(b""), "empty file (0 bytes)"),
    "not a zip": (lambda p, g: p.write_text("just some text\n"), "not an .npz archive"),
    "a single .npy array": (lambda p, g: p.write_bytes(npy_bytes(np.zeros(3))), "a single array"),
    "a byte flipped": (lambda p, g: p.write_bytes(g[:len(g) // 2] + bytes([g[len(g) // 2] ^ 0xFF])
                                                  + g[len(g) // 2 + 1:]), "images.npy"),
    "a header claiming 10^9 images": (forged_header, "declares float32 (1000000000, 16, 16)"),
    "images as float64": (rewritten(images=lambda a: a.astype(np.float64)), "'images' is float64"),
    "images of another size": (rewritten(images=lambda a: a[:, :8, :8].copy()), "shape (6, 8, 8)"),
    "no images at all": (rewritten(images=lambda a: a[:0]), "shape (0, 16, 16)"),
    "NaN in images": (rewritten(images=with_nan), "'images' holds NaN"),
    "infinity in images": (rewritten(images=lambda a: np.where(a > 1, np.inf, a).astype(np.float32)),
                           "'images' holds NaN or infinite"),
    "a label 2": (rewritten(labels=lambda a: np.where(np.arange(len(a)) == 0, 2, a)), "'labels' holds values"),
    "labels as floats": (rewritten(labels=lambda a: a.astype(np.float64)), "'labels' is float64"),
    "ids cut short": (rewritten(ids=lambda a: a[:3]), "'ids' is"),
    "patients as numbers": (rewritten(patients=lambda a: np.arange(len(a))), "'patients' is"),
    "notes as objects": (rewritten(notes=lambda a: np.array([object()], dtype=object)), "Python objects"),
    "an extra file in the archive": (with_member("x.txt", b"x"), "'x.txt' is not a NumPy array"),
    "an array twice in the archive": (with_member("labels.npy", None), "'labels.npy' appears twice"),
    **{f"no {key}": (rewritten(**{key: None}), repr(key))
       for key in ("images", "labels", "patients", "ids", "skipped", "notes", "strict_errors")},
}


@pytest.mark.parametrize("case", DAMAGES)
def test_a_damaged_cache_file_is_rebuilt_with_a_note_and_then_read(cached_set, case, no_hang):
    options, fresh, good = cached_set
    path = Path(fresh.cache_file)
    damage, problem = DAMAGES[case]
    path.unlink()
    damage(path, good)
    rois = load_dataset("synthetic", **options)
    assert not rois.from_cache
    for name in ("images", "labels", "patients", "ids"):
        np.testing.assert_array_equal(getattr(rois, name), getattr(fresh, name))
    notes = [n for n in rois.notes if n not in fresh.notes]
    assert len(notes) == 1 and notes[0].startswith(f"the cache file {path} could not be used"), rois.notes
    assert problem in notes[0] and notes[0].endswith("rebuilt from the data")
    again = load_dataset("synthetic", **options)  # the rebuilt file is whole: read, no note
    assert again.from_cache and again.notes == fresh.notes
    assert RoiSet.check_arrays(cache.load(path), 16) is None


@posix_only
@pytest.mark.parametrize("kind", ["a link to nothing", "a named pipe"])
def test_a_cache_file_that_is_not_a_file_is_never_opened_and_is_replaced(cached_set, kind, no_hang):
    options, fresh, _ = cached_set
    path = Path(fresh.cache_file)
    path.unlink()
    if kind == "a named pipe":
        os.mkfifo(path)  # opening it would wait for a writer: no_hang fails the test then
    else:
        os.symlink(path.parent / "gone.npz", path)
    rois = load_dataset("synthetic", **options)
    note = next(n for n in rois.notes if "could not be used" in n)
    assert str(path) in note and ("symbolic link to nothing" in note if kind != "a named pipe" else "FIFO" in note)
    assert path.is_file() and not path.is_symlink() and load_dataset("synthetic", **options).from_cache


def test_a_folder_where_the_cache_file_goes_costs_speed_only(cached_set):
    options, fresh, _ = cached_set
    path = Path(fresh.cache_file)
    path.unlink()
    path.mkdir()
    try:
        rois = load_dataset("synthetic", **options)
        np.testing.assert_array_equal(rois.images, fresh.images)
        assert f"preprocessed arrays not cached (the cache file {path} is a folder)" in rois.notes
        assert rois.cache_file is None and path.is_dir()  # not ours to delete
    finally:
        path.rmdir()
        load_dataset("synthetic", **options)  # the good file back for the other tests


# ------------------------------------------------------------ (4) --cache-dir that is not a folder
@posix_only
@pytest.mark.parametrize("kind", ["a named pipe", "a file", "under a file", "a character device"])
def test_a_cache_dir_that_is_not_a_folder_is_refused_before_any_work(tmp_path, capsys, kind, no_data_reading,
                                                                      no_hang):
    target = tmp_path / "cache"
    if kind == "a named pipe":
        os.mkfifo(target)
    elif kind == "a character device":
        target = Path("/dev/null")
    else:
        target.write_text("not a folder")
        if kind == "under a file":
            target = target / "sub"
    argv = [*TINY, "--cache-dir", str(target), "--out", str(tmp_path / "run")]
    err = usage_error(train_app.main, argv, capsys)
    expected = {"a named pipe": "is a named pipe (FIFO), not a folder", "a file": "is a file, not a folder",
                "under a file": f"{tmp_path / 'cache'} is a file, so no folder can be made under it",
                "a character device": "is a character device, not a folder"}[kind]
    assert f"--cache-dir {target}" in err and expected in err
    assert not (tmp_path / "run").exists()


def test_a_cache_dir_that_is_a_file_is_not_refused_with_no_cache(tmp_path):
    (tmp_path / "cache").write_text("not a folder")
    config = train_app.parse_args([*TINY, "--cache-dir", str(tmp_path / "cache"), "--no-cache",
                                   "--out", str(tmp_path / "run")])
    assert config.no_cache


@posix_only
def test_the_library_never_opens_a_cache_folder_that_is_a_named_pipe(tmp_path, no_hang):
    os.mkfifo(tmp_path / "pipe")
    rois = load_dataset("synthetic", image_size=16, cache_dir=tmp_path / "pipe", benign=2, malignant=2)
    assert f"preprocessed arrays not cached (cache folder {tmp_path / 'pipe'} is a named pipe (FIFO))" in rois.notes


# ------------------------------------------------------------ (5) names holding a newline
def forged_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error: forged")]


@pytest.fixture
def forged_run(tmp_path, capsys):
    """run(*args) -> (exit code, stdout, stderr) of a folder-data training whose data,
    cache and run folders all hold a newline followed by a forged error line."""
    data = make_rois(tmp_path / "data\nerror: forged data", n=6)
    paths = {"data": data, "cache": tmp_path / "cache\nerror: forged cache", "out": tmp_path / "out\nerror: forged out"}

    def _run(*args):
        rc = train_app.main([*TINY, "--dataset", "folder", "--data-dir", str(data), "--cache-dir", str(paths["cache"]),
                             "--out", str(paths["out"]), *args])
        captured = capsys.readouterr()
        return rc, captured.out, captured.err
    _run.paths = paths
    return _run


def without_final_line(out: str) -> str:
    """stdout less apps/train.py's closing "wrote ..." line (tested on its own below)."""
    return out[:out.rindex("wrote ")] if "wrote " in out else out


@posix_only
def test_the_training_log_and_metrics_keep_names_with_a_newline_on_one_line(forged_run):
    rc, out, err = forged_run()
    assert rc == 0, err
    assert forged_lines(without_final_line(out) + err) == []
    assert "(dataset folder, " in out and "data\\nerror: forged data)" in out
    assert "output   " in out and "out\\nerror: forged out" in out
    assert "training into " in out and "cache\\nerror: forged cache" in out
    record = json.loads((forged_run.paths["out"] / "metrics.json").read_text(encoding="utf-8"))
    assert record["config"]["out"].endswith("out\\nerror: forged out")
    assert record["config"]["data_dir"].endswith("data\\nerror: forged data")

    cache_file = next(p for p in forged_run.paths["cache"].iterdir() if p.suffix == ".npz")
    cache_file.write_bytes(b"")  # the note naming the damaged cache file, the resume line naming a checkpoint
    rc, out, err = forged_run("--resume")
    assert rc == 0, err
    assert forged_lines(without_final_line(out) + err) == []
    assert "cache\\nerror: forged cache" in out and "an empty file (0 bytes)" in out
    assert "resumed from " in out and "out\\nerror: forged out" in out.split("resumed from ")[1].splitlines()[0]

    rc, out, err = forged_run()  # a refusal naming the folder: one error line
    assert rc == 2 and "out\\nerror: forged out" in one_error(err) and forged_lines(out + err) == []


@posix_only
def test_the_closing_line_keeps_a_run_folder_with_a_newline_on_one_line(forged_run):
    rc, out, err = forged_run()
    assert rc == 0, err
    assert forged_lines(out) == []


def test_every_damage_case_is_a_real_change(cached_set, tmp_path):
    """The damage table itself: each case leaves a file that differs from the good one."""
    _, _, good = cached_set
    for i, (case, (damage, _)) in enumerate(DAMAGES.items()):
        path = tmp_path / f"{i}.npz"
        damage(path, good)
        assert path.read_bytes() != good, case
