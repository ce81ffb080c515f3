"""Folds by woman for detection: the same per-woman folds as the classification
task's `--cv K` (tinycnn.mammo.cv.patient_folds over the marked lesions: women dealt
to folds stratified by whether one of her lesions is malignant, balanced by lesion
count, seeded), mapped to films. Both films of a woman (MIAS's mdb(2k-1) and
mdb(2k)) land in one fold, so every film is scanned by a model that never saw its
woman, and no woman is ever on both sides (asserted).

Where a class has too few women for stratification (small sets, CBIS-DDSM subsets
with one pathology), the women are dealt unstratified, balanced by lesion count.
"""

from __future__ import annotations

import numpy as np

from ..cv import patient_folds
from ..data.preprocess import DataError


def film_folds(films: list, k: int, seed: int = 0) -> list[np.ndarray]:
    """Film indices tested by each of k folds (every film in exactly one, whole women)."""
    if k < 2:
        raise DataError(f"--cv {k}: detection needs at least 2 folds")
    women = sorted({f.patient for f in films})
    if len(women) < k:
        raise DataError(f"--cv {k}: only {len(women)} woman/women with marked films; lower --cv")
    labels = [1 if m.severity == "M" else 0 for f in films for m in f.marks]
    patients = [f.patient for f in films for m in f.marks]
    try:
        lesion_folds = patient_folds(labels, patients, k, seed)
        fold_of_woman = {}
        for i, idx in enumerate(lesion_folds):
            for p in np.asarray(patients)[idx]:
                fold_of_woman[str(p)] = i
    except DataError:
        fold_of_woman = _unstratified(films, k, seed)
    for f in films:  # a woman whose films carry no mark still goes somewhere: the smallest fold
        fold_of_woman.setdefault(f.patient, -1)
    sizes = np.zeros(k, dtype=np.int64)
    for f in films:
        if fold_of_woman[f.patient] >= 0:
            sizes[fold_of_woman[f.patient]] += 1
    for w in sorted(p for p, i in fold_of_woman.items() if i < 0):
        fold_of_woman[w] = int(np.argmin(sizes))
        sizes[fold_of_woman[w]] += sum(f.patient == w for f in films)
    folds = [np.array([i for i, f in enumerate(films) if fold_of_woman[f.patient] == j], dtype=np.int64)
             for j in range(k)]
    check_film_folds(films, folds)
    return folds


def _unstratified(films, k: int, seed: int) -> dict:
    rng = np.random.default_rng([seed, 0xF01D])
    women = sorted({f.patient for f in films})
    load = {w: sum(len(f.marks) for f in films if f.patient == w) for w in women}
    order = [women[i] for i in rng.permutation(len(women))]
    order.sort(key=lambda w: -load[w])  # big women first, ties in the seeded order
    sizes, out = np.zeros(k, dtype=np.int64), {}
    for w in order:
        j = int(np.argmin(sizes))
        out[w] = j
        sizes[j] += load[w]
    return out


def check_film_folds(films: list, folds: list) -> None:
    """Every film tested exactly once; no woman on both sides of any fold; no empty fold."""
    tested = np.concatenate(folds) if folds else np.zeros(0, np.int64)
    if len(tested) != len(films) or len(np.unique(tested)) != len(films):
        raise AssertionError("the folds do not test every film exactly once")
    for i, test in enumerate(folds):
        if not len(test):
            raise DataError(f"fold {i + 1} tests no film; lower --cv")
        held = {films[j].patient for j in test}
        trained = {films[j].patient for j in range(len(films)) if j not in set(test.tolist())}
        if held & trained:
            raise AssertionError(f"fold {i + 1}: woman/women on both sides: {sorted(held & trained)[:3]}")
