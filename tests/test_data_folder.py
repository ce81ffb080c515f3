"""The folder reader on small files in the real formats, the cache, and bad input."""

import numpy as np
import pytest
from PIL import Image

from tinycnn.mammo.data import DataError, UnreadableImage, folder, load_dataset
from tinycnn.mammo.data.preprocess import load_preprocessed, read_image


def _save(path, array, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def make_folder(root, rng, n=3):
    """benign/ and malignant/ with PNG, JPEG, TIFF and PGM files, 8- and 16-bit."""
    for cls in ("benign", "malignant"):
        for i in range(n):
            a8 = (rng.random((40 + i, 50)) * 255).astype(np.uint8)
            a16 = (rng.random((45, 38 + i)) * 65535).astype(np.uint16)
            _save(root / cls / f"{cls}{i}_8.png", a8)
            _save(root / cls / f"{cls}{i}_16.png", a16)
            _save(root / cls / f"{cls}{i}.jpg", a8)
            _save(root / cls / "sub" / f"{cls}{i}_8.tif", a8)
            _save(root / cls / f"{cls}{i}_16.tif", a16)
            _save(root / cls / f"{cls}{i}_8.pgm", a8)
            _save(root / cls / f"{cls}{i}_16.pgm", a16)
    return root


@pytest.mark.parametrize("ext,dtype", [(".png", np.uint8), (".png", np.uint16), (".tif", np.uint8),
                                       (".tif", np.uint16), (".pgm", np.uint8), (".pgm", np.uint16)])
def test_read_image_keeps_bit_depth(tmp_path, rng, ext, dtype):
    top = np.iinfo(dtype).max
    a = (rng.random((12, 9)) * top).astype(dtype)
    _save(tmp_path / f"x{ext}", a)
    np.testing.assert_array_equal(read_image(tmp_path / f"x{ext}"), a.astype(np.float32))


def test_rgb_becomes_gray_and_preprocess_normalises(tmp_path, rng):
    _save(tmp_path / "c.png", (rng.random((30, 20, 3)) * 255).astype(np.uint8))
    x = load_preprocessed(tmp_path / "c.png", 16)
    assert x.shape == (16, 16) and x.dtype == np.float32
    assert abs(x.mean()) < 1e-5 and abs(x.std() - 1) < 1e-4


def test_folder_reads_every_format(tmp_path, rng):
    root = make_folder(tmp_path / "rois", rng)
    rois = load_dataset("folder", root, image_size=24, cache_dir=tmp_path / "cache")
    assert len(rois) == 2 * 3 * 7 and rois.images.shape[1:] == (24, 24)
    assert rois.counts()["benign"] == rois.counts()["malignant"] == 21
    assert len(set(rois.patients)) == len(rois)  # no patients.csv: one patient per file
    assert any("sub/" in i for i in rois.ids)  # subfolders are searched


def test_patients_csv_groups_files(tmp_path, rng):
    root = make_folder(tmp_path / "rois", rng, n=2)
    (root / "patients.csv").write_text("file,patient_id\nbenign/benign0_8.png,P1\nbenign0_16.png,P1\n"
                                       "malignant/malignant1.jpg,P2\n")
    rois = load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "cache")
    pid = dict(zip(rois.ids, rois.patients))
    assert pid["benign/benign0_8.png"] == pid["benign/benign0_16.png"] == "P1"
    assert pid["malignant/malignant1.jpg"] == "P2"


def test_patients_csv_missing_column_is_named(tmp_path, rng):
    root = make_folder(tmp_path / "rois", rng, n=1)
    (root / "patients.csv").write_text("filename,patient\nbenign/benign0_8.png,P1\n")
    with pytest.raises(DataError, match="'file'"):
        load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "cache")


def test_second_load_comes_from_the_cache(tmp_path, rng, monkeypatch):
    root = make_folder(tmp_path / "rois", rng, n=1)
    first = load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "cache")
    def no_read(*a, **k):
        raise LookupError("cache not used")

    monkeypatch.setattr(folder, "read", no_read)
    second = load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(first.images, second.images)
    assert list(first.ids) == list(second.ids)
    with pytest.raises(LookupError, match="cache not used"):  # a new size is a new key
        load_dataset("folder", root, image_size=20, cache_dir=tmp_path / "cache")


def test_missing_and_empty_directories(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset("folder", tmp_path / "nope", image_size=16, cache_dir=tmp_path / "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither a benign/ nor a malignant/"):
        load_dataset("folder", tmp_path / "empty", image_size=16, cache_dir=tmp_path / "c")
    (tmp_path / "empty" / "benign").mkdir()
    (tmp_path / "empty" / "malignant").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_dataset("folder", tmp_path / "empty", image_size=16, cache_dir=tmp_path / "c")


def test_one_class_only(tmp_path, rng):
    root = make_folder(tmp_path / "rois", rng, n=1)
    for f in (root / "malignant").rglob("*.*"):
        f.unlink()
    with pytest.raises(DataError, match="only one class.*no malignant"):
        load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "cache")
    import shutil
    shutil.rmtree(root / "malignant")
    with pytest.raises(DataError, match="only one class.*no malignant"):
        load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "cache")


def test_corrupt_image_is_skipped_and_counted_or_stops_with_strict(tmp_path, rng):
    root = make_folder(tmp_path / "rois", rng, n=1)
    (root / "benign" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    good = (rng.random((20, 20)) * 255).astype(np.uint8)
    _save(root / "malignant" / "cut.tif", good)
    data = (root / "malignant" / "cut.tif").read_bytes()
    (root / "malignant" / "cut.tif").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="skipped"):
        rois = load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "cache")
    assert len(rois.skipped) == 2 and len(rois) == 14
    assert any("broken.png" in s for s in rois.skipped)
    with pytest.raises(UnreadableImage, match="broken.png|cut.tif"):
        load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "cache2", strict=True)
    with pytest.raises(UnreadableImage):  # strict also refuses a cached set that had skips
        load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "cache", strict=True)


@pytest.mark.parametrize("shape", [(1, 50), (1, 1), (60, 1)])
def test_a_degenerate_image_is_skipped_and_named(tmp_path, rng, shape):
    root = make_folder(tmp_path / "rois", rng, n=1)
    _save(root / "benign" / "thin.png", np.zeros(shape, np.uint8))
    with pytest.warns(UserWarning, match="thin.png"):
        rois = load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "cache")
    assert len(rois) == 14 and any("thin.png" in s and "too small" in s for s in rois.skipped)
    with pytest.raises(UnreadableImage, match=r"thin.png.*too small"):
        load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "c2", strict=True)


def test_non_finite_pixels_make_an_image_unreadable(tmp_path, rng):
    a = rng.random((20, 20)).astype(np.float32)
    a[3, 4] = np.nan
    Image.fromarray(a, mode="F").save(tmp_path / "nan.tif")
    assert np.isnan(read_image(tmp_path / "nan.tif")).any()
    with pytest.raises(UnreadableImage, match=r"nan.tif.*non-finite"):
        load_preprocessed(tmp_path / "nan.tif", 16)


def test_patients_csv_not_utf8_is_a_clear_error(tmp_path, rng):
    root = make_folder(tmp_path / "rois", rng, n=1)
    (root / "patients.csv").write_bytes("file,patient_id\nbenign/benign0_8.png,Jos\u00e9\n".encode("cp1252"))
    with pytest.raises(DataError, match=r"patients.csv: not UTF-8 text \(byte \d+"):
        load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "cache")


def test_patients_csv_that_misses_files_says_so(tmp_path, rng):
    root = make_folder(tmp_path / "rois", rng, n=1)  # 14 images
    (root / "patients.csv").write_text("file,patient_id\nbenign/benign0_8.png,P1\nbenign0_16.png,P1\n"
                                       "benign/typo.png,P1\n")
    rois = load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "cache")
    note = rois.notes[0]
    assert "2 of 14 images listed" in note and "12 image(s) not listed" in note
    assert "1 row(s) name no image (first: benign/typo.png)" in note
    with pytest.raises(DataError, match=r"12 image\(s\) not listed.*1 row\(s\) name no image.*--strict"):
        load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "c2", strict=True)


def test_one_class_left_after_skips_names_the_skips(tmp_path, rng):
    root = make_folder(tmp_path / "rois", rng, n=1)
    for f in (root / "malignant").rglob("*.*"):
        f.unlink()
    (root / "malignant" / "broken.png").write_bytes(b"not a png")
    (root / "malignant" / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"no malignant ROI.*2 unreadable input\(s\) were skipped \(first: malignant/"):
        load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "cache")


def test_an_unwritable_cache_is_reported_not_claimed(tmp_path, rng):
    root = make_folder(tmp_path / "rois", rng, n=1)
    (tmp_path / "afile").write_text("x")
    rois = load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "afile")
    assert rois.cache_file is None
    assert f"preprocessed arrays not cached (cache folder {tmp_path / 'afile'} is a file)" in rois.notes
    rois = load_dataset("folder", root, image_size=16, use_cache=False)
    assert rois.cache_file is None
    rois = load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "cache")
    assert rois.cache_file is not None and not rois.from_cache


def test_patients_csv_that_lists_every_file_keeps_the_plain_note(tmp_path, rng):
    root = make_folder(tmp_path / "rois", rng, n=1)
    rows = "".join(f"{p.relative_to(root).as_posix()},P{i % 3}\n" for i, (p, _) in enumerate(folder.list_images(root)))
    (root / "patients.csv").write_text("file,patient_id\n" + rows)
    rois = load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "cache", strict=True)
    assert rois.notes == ["patients from patients.csv"] and set(rois.patients) == {"P0", "P1", "P2"}


def test_patients_csv_blank_ids_or_no_rows_are_unlisted_not_one_patient(tmp_path, rng):
    root = make_folder(tmp_path / "rois", rng, n=1)
    (root / "patients.csv").write_text("file,patient_id\nbenign/benign0_8.png,\nbenign0_16.png, \n")
    rois = load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "cache")
    assert len(set(rois.patients)) == len(rois)  # a blank id must not merge the two files
    assert "0 of 14 images listed" in rois.notes[0]
    (root / "patients.csv").write_text("file,patient_id\n")  # a table with no rows is still a table
    rois = load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "cache")
    assert "0 of 14 images listed" in rois.notes[0]


def test_strict_refuses_a_cached_set_with_an_incomplete_patients_csv(tmp_path, rng):
    root = make_folder(tmp_path / "rois", rng, n=1)
    (root / "patients.csv").write_text("file,patient_id\nbenign/benign0_8.png,P1\n")
    load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match=r"patients.csv: 13 image\(s\) not listed.*--strict"):
        load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "cache", strict=True)


def test_not_utf8_error_gives_the_file_offset_past_the_first_buffer(tmp_path, rng):
    root = make_folder(tmp_path / "rois", rng, n=1)
    data = b"file,patient_id\n" + b"benign/x.png,P1\n" * 2000 + "benign/y.png,Jos\u00e9\n".encode("cp1252")
    (root / "patients.csv").write_bytes(data)
    offset = data.index("\u00e9".encode("cp1252"))
    with pytest.raises(DataError, match=rf"patients.csv: not UTF-8 text \(byte {offset}, line 2002"):
        load_dataset("folder", root, image_size=16, cache_dir=tmp_path / "cache")
