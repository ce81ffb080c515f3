"""The MIAS reader: a fake Info.txt with small PGM films, and the real films when
../shared/data is present (extracted once to a cache folder, never into the repo)."""

import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import shared_data_dir
from tinycnn.mammo.data import DataError, UnreadableImage, load_dataset, mias
from tinycnn.mammo.data.split import make_split

INFO = """              MAMMOGRAPHIC IMAGE ANALYSIS SOCIETY
1st column: MIAS database reference number.
mdb001 G CIRC B 60 40 10
mdb002 G SPIC M 30 100 6
mdb003 D NORM 
mdb004 F CIRC B
mdb005 D CALC M *NOTE 3*
mdb005 F MISC M 100 100 8
mdb006 F CIRC B 20 20 5
mdb007 F CIRC B 64 64 4
=================================================================
"""


def film(size=128, spots=()):
    """A dark film with a bright disk at each (x, y-from-bottom, r)."""
    yy, xx = np.mgrid[0:size, 0:size]
    a = np.full((size, size), 20, dtype=np.uint8)
    for x, y, r in spots:
        a[np.hypot(yy - (size - y), xx - x) <= r] = 230
    return a


@pytest.fixture
def fake_mias(tmp_path):
    root = tmp_path / "mias"
    root.mkdir()
    (root / "Info.txt").write_text(INFO)
    spots = {"mdb001": [(60, 40, 10)], "mdb002": [(30, 100, 6)], "mdb003": [], "mdb004": [],
             "mdb005": [(100, 100, 8)], "mdb006": [(20, 20, 5)]}  # mdb007's film is missing
    for ref, s in spots.items():
        Image.fromarray(film(spots=s)).save(root / f"{ref}.pgm")
    return root


def test_parse_info_reads_rows_and_ignores_prose(fake_mias):
    rows = mias.parse_info(fake_mias / "Info.txt")
    assert [r.ref for r in rows] == ["mdb001", "mdb002", "mdb003", "mdb004", "mdb005", "mdb005", "mdb006", "mdb007"]
    assert rows[0].x == 60 and rows[0].y == 40 and rows[0].radius == 10 and rows[0].severity == "B"
    assert [r.croppable for r in rows] == [True, True, False, False, False, True, True, True]


def test_crop_uses_bottom_origin_and_radius_margin():
    top, left, side = mias.crop_box(60, 40, 10, 128, 128, margin=1.5)
    assert side == 32  # 2 * 1.5 * 10 = 30, raised to MIN_SIDE
    assert (top + side // 2, left + side // 2) == (128 - 40, 60)
    top, left, side = mias.crop_box(500, 600, 100, 1024, 1024, margin=1.5)
    assert side == 300 and (top + side // 2, left + side // 2) == (424, 500)
    top, left, side = mias.crop_box(5, 5, 20, 128, 128)  # near a corner: shifted onto the film
    assert top == 128 - side and left == 0


def test_reader_crops_the_lesion_labels_and_pairs_patients(fake_mias, tmp_path):
    with pytest.warns(UserWarning, match="mdb007"):
        rois = load_dataset("mias", fake_mias, image_size=16, cache_dir=tmp_path / "c")
    assert list(rois.ids) == ["mdb001:CIRC:60,40,r10", "mdb002:SPIC:30,100,r6", "mdb005:MISC:100,100,r8",
                              "mdb006:CIRC:20,20,r5"]
    assert list(rois.labels) == [0, 1, 1, 0]
    assert list(rois.patients) == ["mias-001", "mias-001", "mias-003", "mias-003"]
    assert len(rois.skipped) == 1 and "mdb007" in rois.skipped[0]
    for image in rois.images:  # the bright disk sits in the middle of every crop
        assert image[6:10, 6:10].mean() > image.mean() + 0.5


def test_missing_info_txt(tmp_path):
    (tmp_path / "films").mkdir()
    with pytest.raises(DataError, match="no Info.txt"):
        load_dataset("mias", tmp_path / "films", image_size=16, cache_dir=tmp_path / "c")


@pytest.fixture(scope="session")
def real_mias(tmp_path_factory):
    shared = shared_data_dir()
    archive = Path(shared, "mias", "mias-abnormal.tar.xz") if shared else None
    if archive is None or not archive.is_file():
        pytest.skip("real MIAS films not present (TINYCNN_SHARED_DATA unset or no mias/mias-abnormal.tar.xz)")
    cache = os.environ.get("TINYCNN_CACHE")
    target = Path(cache) / "mias-abnormal" if cache else tmp_path_factory.mktemp("mias")
    if not (target / "Info.txt").is_file():
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(target)
    info = next(target.rglob("Info.txt"))
    return info.parent


def test_real_mias_films(real_mias, tmp_path):
    rois = load_dataset("mias", real_mias, image_size=32, cache_dir=tmp_path / "c")
    assert len(rois) == 119
    assert rois.counts()["benign"] == 68 and rois.counts()["malignant"] == 51
    assert not rois.skipped
    assert "4 abnormal row(s) without a centre" in rois.notes[0]
    assert np.all(rois.images.std(axis=(1, 2)) > 0.5)  # every crop has content
    for pid, ref in zip(rois.patients, rois.ids):  # left/right films of one woman: one patient
        n = int(ref[3:6])
        assert pid == f"mias-{(n + 1) // 2:03d}"
    split = make_split("patient", rois.labels, rois.patients, seed=0)
    assert not set(rois.patients[split.train[:, 0]]) & set(rois.patients[split.test[:, 0]])


def test_a_film_too_small_to_crop_is_skipped_and_named(fake_mias, tmp_path):
    Image.fromarray(np.full((1, 128), 20, np.uint8)).save(fake_mias / "mdb006.pgm")  # a 1-row film
    info = INFO.replace("mdb006 F CIRC B 20 20 5", "mdb006 F CIRC B 20 1 5")  # its centre on that row
    (fake_mias / "Info.txt").write_text(info)
    with pytest.warns(UserWarning, match="skipped"):
        rois = load_dataset("mias", fake_mias, image_size=16, cache_dir=tmp_path / "c")
    assert len(rois) == 3 and "mdb006:CIRC:20,1,r5" not in rois.ids
    assert any(s.startswith("mdb006:CIRC:20,1,r5: ") and "too small" in s for s in rois.skipped)
    (fake_mias / "Info.txt").write_text(info.replace("mdb007 F CIRC B 64 64 4\n", ""))  # only mdb006 is bad
    with pytest.raises(UnreadableImage, match=r"mias: mdb006:CIRC:20,1,r5: image is 1x1 pixels, too small"):
        load_dataset("mias", fake_mias, image_size=16, cache_dir=tmp_path / "c2", strict=True)
