"""Whole MIAS films as the detector reads them (skipped without the shared films):
111 films with 119 marked lesions, the breast masks cover the marks, and the folds by
woman are those the classification task's --cv deals."""

import numpy as np

from test_data_mias import real_mias  # noqa: F401  (the fixture that extracts the shared archive once)
from tinycnn.mammo.cv import patient_folds
from tinycnn.mammo.data import load_dataset
from tinycnn.mammo.data.preprocess import read_image
from tinycnn.mammo.detection.evaluate import breast_share_of_marks
from tinycnn.mammo.detection.films import mias_films
from tinycnn.mammo.detection.folds import film_folds

# Two calcification marks of Info.txt whose centres lie beyond the skin line, in the
# film's air (grey 4 and 12 of 255 at the centre): the database's coordinates, not our mask.
CENTRES_IN_AIR = {"mdb212", "mdb214"}


def test_real_mias_films_marks_and_masks(real_mias, tmp_path):  # noqa: F811
    films, skipped = mias_films(real_mias)
    assert len(films) == 111 and not skipped
    assert sum(len(f.marks) for f in films) == 119 and all(f.complete for f in films)
    assert len({f.patient for f in films}) == 104
    outside = set()
    for f in films:
        assert f.image.shape == (256, 256) and f.full_shape == (1024, 1024)
        assert 0.1 < f.mask.mean() < 0.9  # the breast, not the film (mdb152: a breast filling 83% of it)
        for m in f.marks:
            r, c = (int(round(float(v))) for v in f.to_work(m.row, m.col))
            if not f.mask[min(r, 255), min(c, 255)]:
                outside.add(f.ref)
    assert outside == CENTRES_IN_AIR
    for ref in CENTRES_IN_AIR:
        f = next(f for f in films if f.ref == ref)
        raw = read_image(next(real_mias.glob(f"{ref}.pgm")))
        m = f.marks[0]
        assert raw[int(m.row) - 2:int(m.row) + 3, int(m.col) - 2:int(m.col) + 3].mean() < 20
    share = np.mean([breast_share_of_marks(f) for f in films])
    assert 0.02 < share < 0.05  # a random breast point lands in a mark about 3.5% of the time

    # Folds: each woman where the classification task's --cv 5 puts her ROIs.
    folds = film_folds(films, 5, seed=0)
    rois = load_dataset("mias", real_mias, image_size=16, cache_dir=tmp_path / "c")
    roi_folds = patient_folds(rois.labels, rois.patients, 5, seed=0)
    fold_of_woman = {str(p): i for i, idx in enumerate(roi_folds) for p in rois.patients[idx]}
    assert all(fold_of_woman[films[j].patient] == i for i, test in enumerate(folds) for j in test)
