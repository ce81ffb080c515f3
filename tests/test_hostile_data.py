"""Hostile data: what used to be dropped or accepted without a word. Class folders that
differ only in case, files the folder reader does not read, CSV tables with an
unterminated quote, MIAS centres off the film, and --resume on other data."""

import shutil

import numpy as np
import pytest
from PIL import Image

from test_hostile_support import make_rois, one_error, train  # noqa: F401  (fixtures)
from tinycnn.mammo.data import DataError, UnreadableImage, load_dataset


def _load(name, root, tmp_path, **kw):
    return load_dataset(name, root, image_size=16, cache_dir=tmp_path / "cache", **kw)


# ------------------------------------------------------------ the folder reader
def test_class_folders_that_differ_only_in_case_are_refused(tmp_path, train):
    root = make_rois(tmp_path / "rois", n=2)
    shutil.copytree(root / "benign", root / "Benign")
    with pytest.raises(DataError, match=r"has Benign/ and benign/, which differ only in letter case: merge them"):
        _load("folder", root, tmp_path)
    rc, _, err = train("--dataset", "folder", "--data-dir", str(root))
    assert rc == 2 and "differ only in letter case" in one_error(err)


def test_a_class_folder_in_capitals_alone_is_read(tmp_path):
    root = make_rois(tmp_path / "rois", n=2)
    (root / "malignant").rename(root / "MALIGNANT")
    assert _load("folder", root, tmp_path).counts()["malignant"] == 2


def test_files_the_reader_does_not_read_are_counted_in_the_notes(tmp_path):
    root = make_rois(tmp_path / "rois", n=2)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "benign" / "scan.bmp")
    (root / "malignant" / "scan.gif").write_bytes(b"GIF89a")
    (root / "malignant" / ".DS_Store").write_bytes(b"")  # hidden: not counted
    rois = _load("folder", root, tmp_path)
    assert any("2 file(s) in the class folders not read" in n and "first: benign/scan.bmp" in n for n in rois.notes)


def test_data_dir_that_is_a_file_says_so(tmp_path, train):
    (tmp_path / "rois.zip").write_bytes(b"PK")
    rc, _, err = train("--dataset", "folder", "--data-dir", str(tmp_path / "rois.zip"))
    assert rc == 2 and "is a file, not a folder" in one_error(err)


# ------------------------------------------------------------ CSV tables
CBIS_HEADER = "patient_id,pathology,cropped image file path,ROI mask file path\n"


def _cbis(tmp_path, body: str, header: str = CBIS_HEADER):
    root = tmp_path / "cbis"
    root.mkdir()
    (root / "mass_case_description_train_set.csv").write_text(header + body)
    return root


@pytest.mark.parametrize("body, line, says", [
    # an unterminated quote that runs to the end: it used to swallow every later row
    ('P_1,BENIGN,a.dcm,m.dcm\nP_2,"MALIGNANT,b.dcm,m.dcm\nP_3,BENIGN,c.dcm,m.dcm\n', 3, "opens a quoted cell that is never closed"),
    # one closed by the next row's quote: the rows between used to vanish
    ('P_1,BENIGN,a.dcm,m.dcm\nP_2,MALIGNANT,"b.dcm,m.dcm\nP_3,BENIGN,"c.dcm",m.dcm\n', 3, "cannot be parsed"),
])
def test_a_cbis_table_with_a_broken_quote_names_the_file_and_row(tmp_path, train, body, line, says):
    root = _cbis(tmp_path, body)
    expected = rf"mass_case_description_train_set.csv: .*row starting at line {line} {says}"
    with pytest.raises(DataError, match=expected):
        _load("cbis-ddsm", root, tmp_path)
    rc, _, err = train("--dataset", "cbis-ddsm", "--data-dir", str(root))
    assert rc == 2 and f"line {line}" in one_error(err) and "pathology" not in err


def test_a_broken_quote_in_the_header_is_named(tmp_path):
    root = _cbis(tmp_path, "P_1,BENIGN,a.dcm,m.dcm\n", header='patient_id,"pathology,cropped image file path\n')
    with pytest.raises(DataError, match="the header row opens a quoted cell that is never closed"):
        _load("cbis-ddsm", root, tmp_path)


def test_patients_csv_with_a_broken_quote_names_the_file_and_row(tmp_path):
    root = make_rois(tmp_path / "rois", n=2)
    (root / "patients.csv").write_text('file,patient_id\nbenign/0.png,P1\nbenign/1.png,"P2\nmalignant/0.png,P3\n')
    with pytest.raises(DataError, match=r"patients.csv: .*row starting at line 3 opens a quoted cell"):
        _load("folder", root, tmp_path)


def test_patients_csv_that_is_a_folder_is_a_clear_error(tmp_path):
    root = make_rois(tmp_path / "rois", n=2)
    (root / "patients.csv").mkdir()
    with pytest.raises(DataError, match=r"patients.csv: cannot read the table"):
        _load("folder", root, tmp_path)


# ------------------------------------------------------------ MIAS centres
def _mias(tmp_path, rows: str, size: int = 128):
    root = tmp_path / "mias"
    root.mkdir()
    (root / "Info.txt").write_text("mdb001 G CIRC B 60 40 10\nmdb002 G SPIC M 30 100 6\n" + rows)
    for ref in ("mdb001", "mdb002", "mdb003"):
        Image.fromarray(np.full((size, size), 20, np.uint8)).save(root / f"{ref}.pgm")
    return root


@pytest.mark.parametrize("row, reason", [
    ("mdb003 G CIRC B 500 40 10", "centre (500, 40) is outside the 128x128 film"),  # x past the right edge
    ("mdb003 G CIRC B 60 900 10", "centre (60, 900) is outside the 128x128 film"),  # y past the top
    ("mdb003 G CIRC B 60 0 10", "centre (60, 0) is outside the 128x128 film"),  # y counts from 1 at the bottom
    ("mdb003 G CIRC B -5 40 10", "centre (-5, 40) is outside the 128x128 film"),
    ("mdb003 G CIRC B 60 40 0", "radius 0 is not a positive number of pixels"),
])
def test_a_mias_centre_off_the_film_is_skipped_and_named(tmp_path, row, reason):
    root = _mias(tmp_path, row + "\n")
    with pytest.warns(UserWarning, match="skipped mdb003"):
        rois = _load("mias", root, tmp_path)
    assert len(rois) == 2 and any(s.startswith("mdb003:") and reason in s for s in rois.skipped)
    with pytest.raises(UnreadableImage, match=reason.replace("(", r"\(").replace(")", r"\)")):
        _load("mias", root, tmp_path / "strict", strict=True)


# ------------------------------------------------------------ --resume on other data
def test_resume_on_another_folder_of_the_same_size_is_refused(tmp_path, train):
    first, other = make_rois(tmp_path / "a", n=6, seed=1), make_rois(tmp_path / "b", n=6, seed=2)
    assert train("--dataset", "folder", "--data-dir", str(first))[0] == 0
    before = (tmp_path / "run" / "last.npz").read_bytes()
    rc, _, err = train("--dataset", "folder", "--data-dir", str(other), "--resume", "--epochs", "2")
    assert rc == 2 and "it was trained on other data" in one_error(err)
    assert (tmp_path / "run" / "last.npz").read_bytes() == before


def test_resume_after_an_image_changed_is_refused(tmp_path, train):
    root = make_rois(tmp_path / "a", n=6)
    assert train("--dataset", "folder", "--data-dir", str(root))[0] == 0
    Image.fromarray(np.full((40, 40), 7, np.uint8)).save(root / "benign" / "0.png")
    rc, _, err = train("--dataset", "folder", "--data-dir", str(root), "--resume", "--epochs", "2")
    assert rc == 2 and "other data" in one_error(err)


def test_resume_with_another_synthetic_count_is_refused(train):
    assert train()[0] == 0
    rc, _, err = train("--synthetic-count", "9", "--resume", "--epochs", "2")
    assert rc == 2 and "other data" in one_error(err)


def test_resume_on_the_same_data_moved_elsewhere_continues(tmp_path, train):
    root = make_rois(tmp_path / "a", n=6)
    assert train("--dataset", "folder", "--data-dir", str(root))[0] == 0
    moved = root.rename(tmp_path / "moved")  # the fingerprint follows the pixels, not the path
    rc, out, err = train("--dataset", "folder", "--data-dir", str(moved), "--resume", "--epochs", "2")
    assert rc == 0 and "resumed from" in out, err


def test_resume_from_a_checkpoint_without_a_data_fingerprint_says_it_cannot_check(tmp_path, train):
    from test_hostile_support import edit_checkpoint

    assert train()[0] == 0
    last = tmp_path / "run" / "last.npz"

    def older(meta):
        del meta["identity"]["data"]
        return meta

    edit_checkpoint(last, last, meta=older)
    rc, out, err = train("--resume", "--epochs", "2")
    assert rc == 0, err
    assert "predates data fingerprints" in out
