"""Hostile data, second round: what the readers used to drop or duplicate without a word.
MIAS tables in another letter case, spacing or encoding, repeated and contradicting rows,
rows that cannot be used; folders whose class folders or files are links (to the other
class, to themselves, outside the set), hidden folders, broken links; patients.csv rows
that give one image two women; CBIS-DDSM patient ids that differ only in case."""

import csv
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from test_data_mias import real_mias  # noqa: F401  (extracts the shared MIAS archive once)
from test_hostile_support import make_rois, one_error, train  # noqa: F401  (fixtures)
from tinycnn.mammo.data import DataError, UnreadableImage, load_dataset, mias
from tinycnn.mammo.data.split import make_split


def _load(name, root, tmp_path, **kw):
    return load_dataset(name, root, image_size=16, cache_dir=tmp_path / "cache", **kw)


# ------------------------------------------------------------ MIAS: one parser, every row accounted for
PROSE = "              MAMMOGRAPHIC IMAGE ANALYSIS SOCIETY\n1st column: MIAS database reference number.\n\n"
ROWS = ["mdb001 G CIRC B 60 40 10", "mdb002 G SPIC M 30 100 6", "mdb003 D NORM ", "mdb004 F CALC M *NOTE 3*",
        "mdb005 F MISC M 100 100 8", "mdb006 F CIRC B 20 20 5"]
SPOTS = {"mdb001": (60, 40, 10), "mdb002": (30, 100, 6), "mdb005": (100, 100, 8), "mdb006": (20, 20, 5)}
FIRST_ROW = PROSE.count("\n") + 1  # the line mdb001 is on


def _film(spot=None, size=128):
    a = np.full((size, size), 20, np.uint8)
    if spot:
        x, y, r = spot
        yy, xx = np.mgrid[0:size, 0:size]
        a[np.hypot(yy - (size - y), xx - x) <= r] = 230
    return a


def _mias(tmp_path, info, name="mias"):
    """A MIAS folder: films mdb001-mdb006 and Info.txt holding `info` (str, or bytes as is)."""
    root = tmp_path / name
    root.mkdir()
    (root / "Info.txt").write_bytes(info if isinstance(info, bytes) else info.encode())
    for i in range(1, 7):
        ref = f"mdb{i:03d}"
        Image.fromarray(_film(SPOTS.get(ref))).save(root / f"{ref}.pgm")
    return root


def _rows(extra=()):
    return PROSE + "\n".join([*ROWS, *extra]) + "\n"


@pytest.fixture
def reference(tmp_path):
    rois = _load("mias", _mias(tmp_path, _rows(), "reference"), tmp_path / "ref")
    assert len(rois) == 4 and not rois.skipped
    return rois


@pytest.mark.parametrize("variant", {
    "upper case": lambda t: t.upper().encode(),
    "lower case": lambda t: t.lower().encode(),
    "mixed case references": lambda t: t.replace("mdb00", "MdB00").encode(),
    "tabs, trailing blanks, CRLF": lambda t: t.replace(" ", "\t").replace("\n", "  \r\n").encode(),
    "utf-8 byte-order mark": lambda t: b"\xef\xbb\xbf" + t.encode(),
    "utf-16 with its mark": lambda t: t.encode("utf-16"),
    "no prose": lambda t: t[len(PROSE):].encode(),
    "no prose, byte-order mark": lambda t: b"\xef\xbb\xbf" + t[len(PROSE):].encode(),
}.items(), ids=lambda v: v[0] if isinstance(v, tuple) else "")
def test_info_txt_in_any_case_spacing_or_encoding_gives_the_same_rois(tmp_path, reference, variant):
    rois = _load("mias", _mias(tmp_path, variant[1](_rows())), tmp_path)
    assert list(rois.ids) == list(reference.ids) and list(rois.labels) == list(reference.labels)
    assert list(rois.patients) == list(reference.patients) and not rois.skipped
    np.testing.assert_array_equal(rois.images, reference.images)
    assert rois.notes[0].startswith("Info.txt: 6 data row(s): 4 abnormal row(s) with a centre and radius; "
                                    "1 abnormal row(s) without a centre or radius cannot be cropped; 1 normal film(s)")


def test_the_real_info_txt_in_capitals_after_a_byte_order_mark_gives_every_row(real_mias, tmp_path):  # noqa: F811
    original = (real_mias / "Info.txt").read_text()
    (tmp_path / "Info.txt").write_bytes(b"\xef\xbb\xbf" + original[original.index("mdb001"):].upper().encode())
    rows, same = mias.parse_info(tmp_path / "Info.txt"), mias.parse_info(real_mias / "Info.txt")
    assert [(a.ref, a.kind, a.severity, a.x, a.y, a.radius) for a in rows] == \
        [(a.ref, a.kind, a.severity, a.x, a.y, a.radius) for a in same]
    assert len(rows) == 330 and sum(a.croppable for a in rows) == 119


@pytest.mark.parametrize("row, also", [
    ("mdb001 G CIRC B 60 40 10", ""),  # listed twice, identically
    ("MDB001 g circ b 60 40 10", ""),  # the same row in other letters
    ("mdb001 G SPIC B 60 40 10", ", as SPIC after CIRC"),  # the same circle and severity, another class code
])
def test_a_circle_listed_twice_with_one_severity_is_used_once_and_said(tmp_path, reference, row, also):
    root = _mias(tmp_path, _rows([row]))
    rois = _load("mias", root, tmp_path)
    assert list(rois.ids) == list(reference.ids)
    line = FIRST_ROW + len(ROWS)
    said = f"1 duplicate row(s) used once (first: Info.txt line {line} repeats line {FIRST_ROW} " \
           f"(mdb001 CIRC B (60, 40) r10{also}))"
    assert said in rois.notes[0] and rois.notes[0].startswith("Info.txt: 7 data row(s)")
    films, skipped = mias.read_films(root)  # the detection reads the same table: one mark, the repeat named
    assert len(next(f for f in films if f.ref == "mdb001").marks) == 1
    assert any(f"line {line} repeats line {FIRST_ROW}" in s for s in skipped)


def test_one_circle_with_both_severities_is_an_error_naming_both_lines(tmp_path, train):
    root = _mias(tmp_path, _rows(["mdb001 G CIRC M 60 40 10"]))
    said = rf"line {FIRST_ROW} \(mdb001 CIRC B \(60, 40\) r10\) and line {FIRST_ROW + 6} \(mdb001 CIRC M .*both severities"
    with pytest.raises(DataError, match=said):
        _load("mias", root, tmp_path)
    with pytest.raises(DataError, match=said):
        mias.read_films(root)
    rc, _, err = train("--dataset", "mias", "--data-dir", str(root))
    assert rc == 2 and "both severities" in one_error(err)


def test_a_film_listed_as_normal_and_abnormal_is_an_error_naming_both_lines(tmp_path):
    root = _mias(tmp_path, _rows(["mdb003 D CIRC B 50 50 5"]))
    with pytest.raises(DataError, match=rf"line {FIRST_ROW + 2} and line {FIRST_ROW + 6} list mdb003 both as a "
                                        "normal film and with an abnormality"):
        _load("mias", root, tmp_path)


@pytest.mark.parametrize("row, reason", [
    ("mdb001 G CIRX B 70 70 5", "mdb001: unknown class code 'CIRX'"),
    ("mdb001 G CIRC X 70 70 5", "mdb001: severity 'X' is not B or M"),
    ("mdb001 G CIRC B 70 70", "three whole numbers, found '70 70'"),
    ("mdb001 G CIRC B 70 70 1O", "three whole numbers, found '70 70 1O'"),
    ("mdb001 G CIRC B 70 70 5 left", "mdb001: text after the radius ('left')"),
    ("mdb001 G CIRC", "mdb001: no severity (B or M)"),
    ("mdb001 G", "mdb001: too few fields"),
    ("mdb1x G CIRC B 70 70 5", "reference 'mdb1x' is not mdbNNN"),
    ("mdb008 D NORM B 1 2 3", "mdb008: a normal (NORM) row with more fields"),
])
def test_a_row_that_cannot_be_used_is_skipped_with_its_line(tmp_path, reference, row, reason):
    root = _mias(tmp_path, _rows([row]))
    line = FIRST_ROW + len(ROWS)
    with pytest.warns(UserWarning, match=f"skipped Info.txt line {line}"):
        rois = _load("mias", root, tmp_path)
    assert list(rois.ids) == list(reference.ids)
    assert [s for s in rois.skipped if s.startswith(f"Info.txt line {line}: ") and reason in s]
    assert "1 row(s) skipped" in rois.notes[0] and rois.notes[0].startswith("Info.txt: 7 data row(s)")
    with pytest.raises(DataError, match=rf"Info.txt line {line}: .*\(--strict\)"):
        _load("mias", root, tmp_path / "strict", strict=True)
    if row.startswith("mdb001 "):  # the detection: mdb001 holds a lesion nobody could read, so it is not complete
        films, _ = mias.read_films(root)
        assert any(f"line {line}" in u for u in next(f for f in films if f.ref == "mdb001").unmarked)


def test_films_and_info_txt_in_other_letter_cases_are_found(tmp_path, reference):
    root = _mias(tmp_path, _rows())
    (root / "Info.txt").rename(root / "INFO.TXT")
    (root / "mdb002.pgm").rename(root / "MDB002.PGM")
    rois = _load("mias", root, tmp_path)
    assert list(rois.ids) == list(reference.ids)


def test_a_film_under_two_names_is_skipped_naming_both(tmp_path):
    root = _mias(tmp_path, _rows())
    shutil.copy(root / "mdb002.pgm", root / "MDB002.pgm")
    with pytest.warns(UserWarning, match="MDB002.pgm and mdb002.pgm, which differ only in letter case"):
        rois = _load("mias", root, tmp_path)
    assert "mdb002:SPIC:30,100,r6" not in rois.ids
    with pytest.raises(UnreadableImage, match="differ only in letter case"):
        _load("mias", root, tmp_path / "strict", strict=True)


def test_info_txt_in_two_folders_below_is_refused_not_chosen(tmp_path):
    (tmp_path / "data").mkdir()
    for name in ("a", "b"):
        _mias(tmp_path / "data", _rows(), name)
    with pytest.raises(DataError, match=r"several folders below it do \(a/Info.txt, b/Info.txt\)"):
        _load("mias", tmp_path / "data", tmp_path)


# ------------------------------------------------------------ folder: links, hidden entries, each file once
def test_a_class_folder_that_links_to_the_other_class_is_refused(tmp_path, train):
    root = make_rois(tmp_path / "rois", n=2)
    shutil.rmtree(root / "malignant")
    (root / "malignant").symlink_to("benign", target_is_directory=True)
    with pytest.raises(DataError, match=r"malignant and benign are one folder \(through a link\) under both "
                                        r"benign/ and malignant/: every image in it would be trained under both"):
        _load("folder", root, tmp_path)
    rc, _, err = train("--dataset", "folder", "--data-dir", str(root))
    assert rc == 2 and "under both benign/ and malignant/" in one_error(err)


@pytest.mark.parametrize("link", [os.symlink, os.link])
def test_one_file_under_both_classes_is_refused_naming_both_paths(tmp_path, link):
    root = make_rois(tmp_path / "rois", n=2)
    link(root / "benign" / "0.png", root / "malignant" / "x.png")
    with pytest.raises(DataError, match=r"malignant/x.png and benign/0.png are one file .* under both"):
        _load("folder", root, tmp_path)


def test_a_linked_subfolder_is_read_and_named_by_its_path(tmp_path):
    root = make_rois(tmp_path / "rois", n=2)
    extra = make_rois(tmp_path / "extra", n=3, seed=5) / "benign"  # outside the data folder
    (root / "benign" / "more").symlink_to(extra, target_is_directory=True)
    rois = _load("folder", root, tmp_path)
    assert rois.counts()["benign"] == 5 and "benign/more/2.png" in rois.ids


def test_a_file_or_folder_reached_twice_in_one_class_is_read_once(tmp_path):
    root = make_rois(tmp_path / "rois", n=2)
    (root / "benign" / "sub").mkdir()
    (root / "benign" / "sub" / "up").symlink_to("..", target_is_directory=True)  # a loop
    (root / "benign" / "copy.png").symlink_to("0.png")
    os.link(root / "benign" / "1.png", root / "benign" / "hard.png")
    rois = _load("folder", root, tmp_path)
    assert rois.counts()["benign"] == 2 and sorted(rois.ids[rois.labels == 0]) == ["benign/0.png", "benign/1.png"]
    assert any(n.startswith("3 path(s) lead to a file or folder already read, read once (first: ") for n in rois.notes)


def test_hidden_files_and_folders_are_not_read_and_are_counted(tmp_path):
    root = make_rois(tmp_path / "rois", n=2)
    trash = make_rois(tmp_path / "t", n=2, seed=3) / "malignant"
    shutil.copytree(trash, root / "benign" / ".Trash-1000" / "files")  # deleted images: never train on them
    shutil.copy(trash / "0.png", root / "malignant" / "._0.png")
    (root / "malignant" / ".DS_Store").write_bytes(b"\0\0")
    rois = _load("folder", root, tmp_path)
    assert rois.counts() == {"benign": 2, "malignant": 2, "patients": 4}
    assert "3 hidden entries (name starting with '.'; 1 folder(s), not looked into) not read (first: " \
           "benign/.Trash-1000/)" in rois.notes


def test_broken_links_and_pipes_are_named_and_strict_refuses_them(tmp_path):
    root = make_rois(tmp_path / "rois", n=2)
    (root / "benign" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(root / "malignant" / "pipe.png")  # reading it would wait forever
    rois = _load("folder", root, tmp_path)
    assert len(rois) == 4
    assert any(n.startswith("2 entries in the class folders cannot be read (first: benign/gone.png: a broken link")
               for n in rois.notes)
    with pytest.raises(DataError, match=r"benign/gone.png: a broken link .*\(--strict\)"):
        _load("folder", root, tmp_path, strict=True)  # also from the cache the first load wrote


def test_a_broken_class_folder_link_says_so(tmp_path):
    root = make_rois(tmp_path / "rois", n=2)
    shutil.rmtree(root / "malignant")
    (root / "malignant").symlink_to(tmp_path / "unmounted")
    with pytest.raises(DataError, match=r"malignant is a broken link: the malignant images must be in a folder"):
        _load("folder", root, tmp_path)


@pytest.mark.parametrize("rows, said", [
    ("benign/0.png,W1\nbenign/1.png,W2\nbenign/0.png,W3\n", r"line 2 and line 4 give benign/0.png two patient ids "
                                                             r"\('W1' and 'W3'\)"),
    ("benign/0.png,W1\n0.png,W3\n", r"benign/0.png is listed as benign/0.png \(patient 'W1'\) and as 0.png "
                                    r"\(patient 'W3'\)"),
])
def test_patients_csv_that_gives_one_image_two_women_is_an_error(tmp_path, rows, said):
    root = make_rois(tmp_path / "rois", n=2)
    (root / "patients.csv").write_text("file,patient_id\n" + rows)
    with pytest.raises(DataError, match=said):
        _load("folder", root, tmp_path)


def test_patients_csv_repeats_and_dot_slash_are_one_entry_and_case_twins_are_said(tmp_path):
    root = make_rois(tmp_path / "rois", n=2)
    (root / "patients.csv").write_text("file,patient_id\nbenign/0.png,W1\n./benign/0.png,W1\nbenign/1.png,w1\n"
                                       "malignant/0.png,W2\nmalignant/1.png,W2\n")
    rois = _load("folder", root, tmp_path)
    assert rois.notes[0] == "patients from patients.csv"  # every image listed, every row names one
    assert any("1 patient id(s) in patients.csv differ from another only in letter case and are kept apart "
               "(first: 'W1' and 'w1')" in n for n in rois.notes)


# ------------------------------------------------------------ CBIS-DDSM: ids the format says are one
def _edit_table(path, edit):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, list(reader)
    rows = edit(rows)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(rows)


@pytest.fixture
def cbis(tmp_path):
    from test_data_cbis import build

    build(tmp_path / "cbis", np.random.default_rng(0), layout="jpeg")
    return tmp_path / "cbis"


def test_cbis_patient_ids_that_differ_only_in_case_are_one_patient(cbis, tmp_path):
    def lower_p5(rows):  # P_00005's mass test row now names P_00002, who has training rows, in small letters
        for r in rows:
            r["patient_id"] = "p_00002" if r["patient_id"] == "P_00005" else r["patient_id"]
        return rows

    _edit_table(cbis / "csv" / "mass_case_description_test_set.csv", lower_p5)
    rois = _load("cbis-ddsm", cbis, tmp_path)
    assert "p_00002" not in set(rois.patients) and len(rois) == 7  # her test row joins the dropped ones
    assert any("2 test row(s) dropped" in n for n in rois.notes)
    assert any(n.startswith("1 patient id(s) written in more than one letter case or spacing, each merged into "
                            "one patient (first: 'P_00002' and 'p_00002')") for n in rois.notes)
    make_split("patient", rois.labels, rois.patients, official_side=rois.side)  # patient-disjoint


def test_cbis_rows_repeating_a_crop_once_or_contradicting_it(cbis, tmp_path):
    table = cbis / "csv" / "mass_case_description_train_set.csv"
    _edit_table(table, lambda rows: rows + [dict(rows[0])])
    rois = _load("cbis-ddsm", cbis, tmp_path)
    assert len(rois) == 8
    assert any(n.startswith("1 row(s) repeat the crop of an earlier row with the same pathology, used once (first: "
                            "mass_case_description_train_set.csv line 8 repeats mass_case_description_train_set"
                            ".csv line 2)") for n in rois.notes)
    _edit_table(table, lambda rows: rows[:-1] + [dict(rows[0], pathology="BENIGN")])
    with pytest.raises(DataError, match=r"train_set.csv line 2 and mass_case_description_train_set.csv line 8 list "
                                        r"the crop .* as benign and as malignant"):
        _load("cbis-ddsm", cbis, tmp_path / "again")


def test_cbis_rows_without_a_patient_are_counted(cbis, tmp_path):
    _edit_table(cbis / "csv" / "calc_case_description_train_set.csv",
                lambda rows: [dict(r, patient_id="") if r["patient_id"] == "P_00007" else r for r in rows])
    rois = _load("cbis-ddsm", cbis, tmp_path)
    assert len(rois) == 7 and "" not in set(rois.patients)
    assert any(n.startswith("1 row(s) without a patient_id ignored") for n in rois.notes)
