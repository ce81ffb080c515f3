"""CBIS-DDSM whole films for detection, on small files in the JPEG redistribution's
layout (the classification reader's test builder): one film per patient, breast and
view, the mass and calc tables' copies merged, each ROI mask's bounding box as a
circle, rows without a mask named."""

import pytest

from test_data_cbis import CASES, build, uid
from tinycnn.mammo.detection.films import cbis_films


def test_whole_films_with_their_masks_as_marks(tmp_path, rng):
    root = tmp_path / "cbis"
    build(root, rng, "jpeg")
    (root / "jpeg" / uid(3, 2) / "1-2.jpg").unlink()  # P_00004's mask (mass tables: 000001, the second file)
    films, skipped = cbis_films(root, scale=2)
    refs = {f.ref: f for f in films}
    # Without its mask P_00004's film has no mark: skipped and named. (P_00002's row points both
    # columns at the crop, but the JPEG layout lists the series' files, its mask among them.)
    assert sorted(refs) == sorted({f"{p}_LEFT_CC_1" for _, p, _, _ in CASES} - {"P_00004_LEFT_CC_1"})
    assert skipped == ["P_00004_LEFT_CC_1: no usable ROI mask (P_00004_LEFT_CC_1 MASS #1: no ROI mask of the "
                       "film's size)"]
    # P_00001 has a mass row (case 0) and a calc row (case 7): one film, two marks.
    assert [m.kind for m in refs["P_00001_LEFT_CC_1"].marks] == ["MASS", "CALC"]
    for f in films:
        assert f.image.shape == (40, 50) and f.full_shape == (80, 100) and f.complete
        for m in f.marks:
            i = next(i for i, (t, p, _, _) in enumerate(CASES)
                     if f"{p}_LEFT_CC_1" == f.ref and t.startswith(m.kind.lower()))
            # case i's mask: rows 10 + i .. 39 + i, columns 20 + 2i .. 59 + 2i; the circle through its corners
            assert (m.row, m.col) == pytest.approx((24.5 + i, 39.5 + 2 * i), abs=1)
            assert m.radius == pytest.approx(25, abs=1)
            assert m.severity == ("M" if CASES[i][2] == "MALIGNANT" else "B")
    only_mass, _ = cbis_films(root, scale=2, abnormality="mass")
    assert all(f.marks and {m.kind for m in f.marks} == {"MASS"} for f in only_mass)
    assert not next(f for f in only_mass if f.ref == "P_00001_LEFT_CC_1").complete  # its calc is not marked
