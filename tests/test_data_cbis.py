"""The CBIS-DDSM reader on small files in the real layouts: case-description CSVs with
the real column names and quirks, DICOM (as listed, and as TCIA's renamed download)
and the JPEG redistribution with dicom_info.csv. And the real CSVs when present."""

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import shared_data_dir
from tinycnn.mammo.data import DataError, UnreadableImage, cbis_ddsm, load_dataset
from tinycnn.mammo.data.preprocess import preprocess, read_image
from tinycnn.mammo.data.split import make_split

MASS_COLUMNS = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
                "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
                "image file path", "cropped image file path", "ROI mask file path"]
CALC_COLUMNS = ["patient_id", "breast density", "left or right breast", "image view", "abnormality id",
                "abnormality type", "calc type", "calc distribution", "assessment", "pathology", "subtlety",
                "image file path", "cropped image file path", "ROI mask file path"]

# (table, patient, pathology, how the two path columns relate to the files)
CASES = [
    ("mass_case_description_train_set.csv", "P_00001", "MALIGNANT", "normal"),
    ("mass_case_description_train_set.csv", "P_00002", "BENIGN", "same-file"),
    ("mass_case_description_train_set.csv", "P_00003", "BENIGN_WITHOUT_CALLBACK", "normal"),
    ("mass_case_description_test_set.csv", "P_00004", "MALIGNANT", "normal"),
    ("mass_case_description_test_set.csv", "P_00005", "BENIGN", "mask-only"),
    ("calc_case_description_train_set.csv", "P_00006", "MALIGNANT", "swapped"),
    ("calc_case_description_train_set.csv", "P_00007", "BENIGN", "swapped"),
    ("calc_case_description_test_set.csv", "P_00001", "MALIGNANT", "swapped"),  # also in training: dropped
    ("calc_case_description_test_set.csv", "P_00008", "BENIGN", "swapped"),
]


def uid(i, j):
    return f"1.3.6.1.4.1.9590.100.1.2.{1000 + i}.{j}"


def case_images(rng, i):
    """(full film, crop, binary full-size mask) for case i; the crop sits under the mask."""
    full = (rng.random((80, 100)) * 3000 + 500).astype(np.uint16)
    mask = np.zeros((80, 100), dtype=np.uint16)
    r0, c0 = 10 + i, 20 + 2 * i
    mask[r0:r0 + 30, c0:c0 + 40] = 65535
    return full, full[r0:r0 + 30, c0:c0 + 40].copy(), mask


def write_dicom(path, array, series_uid):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series_uid
    ds.Rows, ds.Columns = array.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = array.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)


def build(root, rng, layout="dicom"):
    """Write the CSVs and the images of CASES under root in the given layout:
    dicom (paths as in the CSV), nbia (TCIA's renamed folders), jpeg (dicom_info.csv)."""
    tables, info_rows, expected = {}, [], {}
    csv_dir = root / "csv" if layout == "jpeg" else root
    for i, (table, patient, pathology, kind) in enumerate(CASES):
        kind_word = "Mass" if table.startswith("mass") else "Calc"
        split_word = "Training" if "train" in table else "Test"
        case = f"{kind_word}-{split_word}_{patient}_LEFT_CC_1"
        full, crop, mask = case_images(rng, i)
        s_full, s_roi = uid(i, 1), uid(i, 2)
        # files inside the ROI series: 000000 is the crop in mass tables, the mask in calc tables
        first, second = (crop, mask) if kind_word == "Mass" else (mask, crop)
        files = {f"{case}/{uid(i, 0)}/{s_full}/000000.dcm": full}
        if kind == "mask-only":
            files[f"{case}/{uid(i, 0)}/{s_roi}/000000.dcm"] = mask
            crop_col = mask_col = f"{case}/{uid(i, 0)}/{s_roi}/000000.dcm"
            expected[(patient, table)] = full[10 + i - 6:10 + i + 36, 20 + 2 * i - 8:20 + 2 * i + 48]
        else:
            files[f"{case}/{uid(i, 0)}/{s_roi}/000000.dcm"] = first
            files[f"{case}/{uid(i, 0)}/{s_roi}/000001.dcm"] = second
            crop_name, mask_name = ("000000.dcm", "000001.dcm") if kind_word == "Mass" else ("000001.dcm", "000000.dcm")
            if kind == "same-file":
                mask_name = crop_name
            crop_col, mask_col = f"{case}/{uid(i, 0)}/{s_roi}/{crop_name}", f"{case}/{uid(i, 0)}/{s_roi}/{mask_name}"
            expected[(patient, table)] = crop
        for rel, array in files.items():
            series = rel.split("/")[2]
            n = rel.split("/")[3][5]
            if layout == "dicom":
                write_dicom(root / "CBIS-DDSM" / rel, array, series)
            elif layout == "nbia":
                write_dicom(root / case / "07-20-2016-DDSM-74994" / f"1.00000{n}-{series.split('.')[-1]}-images-{i}" / f"1-{n}.dcm",
                            array, series)
            else:
                jpg = root / "jpeg" / series / f"1-{int(n) + 1}.jpg"
                jpg.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray((array / 65535 * 255).astype(np.uint8) if array.max() > 255 else array.astype(np.uint8)
                                ).save(jpg, quality=90)
                info_rows.append({"file_path": "x", "image_path": f"CBIS-DDSM/jpeg/{series}/{jpg.name}",
                                  "PatientID": case, "SeriesDescription": "cropped images",
                                  "SeriesInstanceUID": series})
        columns = MASS_COLUMNS if kind_word == "Mass" else CALC_COLUMNS
        row = dict.fromkeys(columns, "x")
        row.update({"patient_id": patient, "pathology": pathology, "abnormality id": "1",
                    "image file path": f"{case}/{uid(i, 0)}/{s_full}/000000.dcm",
                    "cropped image file path": crop_col + "\n",  # the real quirk: a newline inside the quotes
                    "ROI mask file path": mask_col})
        tables.setdefault(table, (columns, []))[1].append(row)
    csv_dir.mkdir(parents=True, exist_ok=True)
    for table, (columns, rows) in tables.items():
        with open(csv_dir / table, "w", newline="") as f:
            w = csv.DictWriter(f, columns)
            w.writeheader()
            w.writerows(rows)
    if layout == "jpeg":
        with open(csv_dir / "dicom_info.csv", "w", newline="") as f:
            w = csv.DictWriter(f, ["file_path", "image_path", "PatientID", "SeriesDescription", "SeriesInstanceUID"])
            w.writeheader()
            w.writerows(info_rows)
    return expected


def check(rois, expected, size, exact=True):
    assert len(rois) == 8  # 9 rows, P_00001's calc test row dropped
    assert any("1 test row(s) dropped" in n for n in rois.notes)
    pairs = list(zip(rois.patients, rois.side))
    assert ("P_00001", 1) not in pairs and ("P_00001", 0) in pairs
    assert dict(zip(rois.patients, rois.labels))["P_00003"] == 0  # BENIGN_WITHOUT_CALLBACK
    assert dict(zip(rois.patients, rois.labels))["P_00006"] == 1
    by_key = {}
    for k, (table, patient, *_rest) in enumerate(c for c in CASES if not (c[1] == "P_00001" and "test" in c[0])):
        by_key[(patient, table)] = rois.images[k]
    for key, crop in expected.items():
        if key not in by_key:
            continue
        want = preprocess(crop.astype(np.float32), size)
        if exact:
            np.testing.assert_allclose(by_key[key], want, atol=1e-4, err_msg=str(key))
        else:  # JPEG: lossy, but clearly the crop and not the mask
            assert np.corrcoef(by_key[key].ravel(), want.ravel())[0, 1] > 0.9, key
    split = make_split("patient", rois.labels, rois.patients, official_side=rois.side)
    assert len(split.test) == int((rois.side == 1).sum())


def test_dicom_layout_tells_crop_from_mask_by_content(tmp_path, rng):
    expected = build(tmp_path / "cbis", rng, "dicom")
    rois = load_dataset("cbis-ddsm", tmp_path / "cbis", image_size=16, cache_dir=tmp_path / "c")
    check(rois, expected, 16)


def test_renamed_download_is_found_by_series_uid(tmp_path, rng):
    expected = build(tmp_path / "cbis", rng, "nbia")
    rois = load_dataset("cbis-ddsm", tmp_path / "cbis", image_size=16, cache_dir=tmp_path / "c")
    check(rois, expected, 16)


def test_jpeg_layout_with_dicom_info(tmp_path, rng):
    expected = build(tmp_path / "cbis", rng, "jpeg")
    rois = load_dataset("cbis-ddsm", tmp_path / "cbis", image_size=16, cache_dir=tmp_path / "c")
    assert "jpeg layout" in rois.notes[0]
    check(rois, expected, 16, exact=False)
    mass = load_dataset("cbis-ddsm", tmp_path / "cbis", image_size=16, cache_dir=tmp_path / "c", abnormality="mass")
    assert len(mass) == 5 and all(i.startswith("Mass") for i in mass.ids)


def test_mask_test():
    assert cbis_ddsm.looks_like_mask(np.array([[0, 255], [255, 0]], dtype=np.float32))
    assert not cbis_ddsm.looks_like_mask(np.linspace(0, 1, 100).reshape(10, 10))


def test_missing_required_column_is_named(tmp_path, rng):
    root = tmp_path / "cbis"
    build(root, rng, "jpeg")
    path = root / "csv" / "mass_case_description_train_set.csv"
    rows = list(csv.DictReader(open(path, newline="")))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, [c for c in rows[0] if c != "pathology"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(DataError, match="missing required column 'pathology'"):
        load_dataset("cbis-ddsm", root, image_size=16, cache_dir=tmp_path / "c")


def test_no_csv_at_all(tmp_path):
    (tmp_path / "cbis").mkdir()
    with pytest.raises(DataError, match="no case-description CSV"):
        load_dataset("cbis-ddsm", tmp_path / "cbis", image_size=16, cache_dir=tmp_path / "c")


def test_dicom_without_pydicom_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "x.dcm").write_bytes(b"DICM")
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(DataError, match="pip install"):
        read_image(tmp_path / "x.dcm")


def test_real_case_description_tables():
    shared = shared_data_dir()
    folder = Path(shared, "cbis-ddsm-csv") if shared else None
    if folder is None or not folder.is_dir():
        pytest.skip("real CBIS-DDSM CSVs not present (TINYCNN_SHARED_DATA unset)")
    counts = {"mass_case_description_train_set.csv": 1318, "mass_case_description_test_set.csv": 378,
              "calc_case_description_train_set.csv": 1546, "calc_case_description_test_set.csv": 326}
    patients = {}
    for name, n in counts.items():
        rows = cbis_ddsm.read_table(folder / name)
        assert len(rows) == n
        assert all(r["pathology"] in cbis_ddsm.LABELS for r in rows)
        assert not any(r["cropped image file path"].endswith("\n") for r in rows)  # quirk stripped
        patients[name] = {r["patient_id"] for r in rows}
    train = patients["mass_case_description_train_set.csv"] | patients["calc_case_description_train_set.csv"]
    test = patients["mass_case_description_test_set.csv"] | patients["calc_case_description_test_set.csv"]
    assert len(train & test) == 31  # the rows the reader drops from the test side


def _rewrite_pathology(path, value_of):
    rows = list(csv.DictReader(open(path, newline="")))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows([dict(r, pathology=value_of(r["pathology"])) for r in rows])


def test_pathology_in_any_case_and_unknown_values_named(tmp_path, rng):
    root = tmp_path / "cbis"
    build(root, rng, "jpeg")
    _rewrite_pathology(root / "csv" / "mass_case_description_train_set.csv", lambda v: v.title())  # Benign
    _rewrite_pathology(root / "csv" / "calc_case_description_train_set.csv", lambda v: "UNPROVEN")
    rois = load_dataset("cbis-ddsm", root, image_size=16, cache_dir=tmp_path / "c")
    assert len(rois) == 6  # the two calc training rows are unknown; nothing else lost
    assert dict(zip(rois.patients, rois.labels))["P_00003"] == 0  # 'Benign_Without_Callback'
    assert any("2 row(s) with an unknown pathology ignored" in n and "'UNPROVEN' x2" in n for n in rois.notes)


def test_no_known_pathology_at_all_says_so(tmp_path, rng):
    root = tmp_path / "cbis"
    build(root, rng, "jpeg")
    for table in cbis_ddsm.TABLES.values():
        _rewrite_pathology(root / "csv" / table, lambda v: "?")
    with pytest.raises(DataError, match=r"no ROI could be read.*no usable rows.*9 row\(s\) with an unknown "
                                        r"pathology ignored \(expected MALIGNANT, BENIGN, BENIGN_WITHOUT_CALLBACK; "
                                        r"found '\?' x9\)"):
        load_dataset("cbis-ddsm", root, image_size=16, cache_dir=tmp_path / "c")


@pytest.mark.parametrize("table, old, new", [
    ("mass_case_description_train_set.csv", "P_00001", "P_0000\u00e9".encode("latin-1")),
    ("dicom_info.csv", "cropped images", "cropped imag\u00e9s".encode("cp1252")),
])
def test_a_table_that_is_not_utf8_is_a_clear_error(tmp_path, rng, table, old, new):
    root = tmp_path / "cbis"
    build(root, rng, "jpeg")
    path = root / "csv" / table
    path.write_bytes(path.read_bytes().replace(old.encode(), new))
    with pytest.raises(DataError, match=rf"{table}: not UTF-8 text \(byte \d+, line \d+"):
        load_dataset("cbis-ddsm", root, image_size=16, cache_dir=tmp_path / "c")


def test_a_degenerate_roi_is_skipped_and_named(tmp_path, rng):
    root = tmp_path / "cbis"
    build(root, rng, "jpeg")
    for jpg in (root / "jpeg" / uid(0, 2)).glob("*.jpg"):  # P_00001's crop and mask: one row of pixels
        Image.fromarray((rng.random((1, 50)) * 255).astype(np.uint8)).save(jpg)
    with pytest.warns(UserWarning, match="P_00001"):
        rois = load_dataset("cbis-ddsm", root, image_size=16, cache_dir=tmp_path / "c")
    assert len(rois) == 7 and len(rois.skipped) == 1 and "1x50 pixels, too small" in rois.skipped[0]
    with pytest.raises(UnreadableImage, match=r"cbis-ddsm: mass_case_description_train_set.csv "
                                              r"Mass-Training_P_00001_LEFT_CC_1#1: image is 1x50"):
        load_dataset("cbis-ddsm", root, image_size=16, cache_dir=tmp_path / "c2", strict=True)


def test_more_than_five_unknown_values_are_counted_not_listed(tmp_path, rng):
    root = tmp_path / "cbis"
    build(root, rng, "jpeg")
    n = iter(range(100))
    for table in cbis_ddsm.TABLES.values():
        _rewrite_pathology(root / "csv" / table, lambda v: f"X{next(n)}")
    with pytest.raises(DataError, match=r"9 row\(s\) with an unknown pathology.*'X4' x1 and 4 other value\(s\)"):
        load_dataset("cbis-ddsm", root, image_size=16, cache_dir=tmp_path / "c")
