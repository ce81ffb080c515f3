"""Train/test splits: by patient (the default), or the paper's order (augment, then split).

A sample is a pair (ROI index, transform index) (see augment.py). The default
protocol splits PATIENTS 4:1 (stratified by whether a patient has a malignant ROI,
seeded), asserts that no patient is on both sides, and augments the training side
only; the test side is the untransformed ROIs. The paper's protocol augments every
ROI six ways first and splits the samples at random, so rotated copies of one ROI
land on both sides and its accuracy is optimistic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import augment
from .preprocess import DataError

PROTOCOLS = ("patient", "paper")
PAPER_WARNING = ("WARNING: --protocol paper augments every ROI six ways BEFORE the random 4:1 split, "
                 "as the paper did: rotated and mirrored copies of one ROI land on both sides, so the "
                 "held-out accuracy is optimistic (it partly measures memorisation).")


class PatientLeak(AssertionError):
    """A patient on both sides of a split that must be patient-disjoint."""


@dataclass
class Split:
    protocol: str
    train: np.ndarray  # (K, 2) samples (ROI index, transform)
    test: np.ndarray  # (M, 2)
    leaked_samples: int = 0  # test samples whose ROI also has a copy in training (paper protocol)


def assert_patient_disjoint(patients: np.ndarray, train_rois, test_rois) -> None:
    """Raise PatientLeak naming up to five patients found on both sides."""
    both = set(np.asarray(patients)[np.asarray(train_rois, dtype=np.int64)]) & \
        set(np.asarray(patients)[np.asarray(test_rois, dtype=np.int64)])
    if both:
        shown = ", ".join(sorted(map(str, both))[:5])
        raise PatientLeak(f"{len(both)} patient(s) on both sides of the split: {shown}")


def patient_split(labels: np.ndarray, patients: np.ndarray, test_fraction: float = 0.2,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ROI indices (train, test): whole patients go to one side, 4:1 by default,
    stratified by patient label (1 if any of the patient's ROIs is malignant)."""
    labels, patients = np.asarray(labels), np.asarray(patients)
    uniq, inverse = np.unique(patients, return_inverse=True)
    patient_label = np.zeros(len(uniq), dtype=np.int64)
    np.maximum.at(patient_label, inverse, labels)
    rng = np.random.default_rng([seed, 0x5EED])
    test_patients = []
    for cls in (0, 1):
        members = np.flatnonzero(patient_label == cls)
        if len(members) == 0:
            continue
        n_test = int(round(test_fraction * len(members)))
        n_test = min(max(n_test, 1), len(members) - 1) if len(members) > 1 else 0
        test_patients.extend(rng.permutation(members)[:n_test])
    is_test = np.isin(inverse, np.array(test_patients, dtype=np.int64))
    train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    assert_patient_disjoint(patients, train, test)
    return train, test


def _check_both_classes(labels, rois, side):
    present = set(np.asarray(labels)[rois].tolist())
    if present != {0, 1}:
        missing = "benign" if 0 not in present else "malignant"
        raise DataError(f"the {side} side of the split has no {missing} ROI "
                        f"({len(rois)} ROIs): too few patients of that class to split 4:1")


def make_split(protocol: str, labels, patients, seed: int = 0, test_fraction: float = 0.2,
               official_side: np.ndarray | None = None) -> Split:
    """Build the train and test samples for `protocol` ("patient" or "paper").

    official_side (0 train, 1 test per ROI), when a dataset has one (CBIS-DDSM), replaces
    the random patient split under the patient protocol; it is still asserted disjoint."""
    labels = np.asarray(labels)
    n = len(labels)
    if protocol == "patient":
        if official_side is not None:
            train, test = np.flatnonzero(official_side == 0), np.flatnonzero(official_side == 1)
            assert_patient_disjoint(patients, train, test)
        else:
            train, test = patient_split(labels, patients, test_fraction, seed)
        _check_both_classes(labels, train, "training")
        _check_both_classes(labels, test, "test")
        return Split("patient", augment.expand(train), augment.expand(test, transforms=[0]))
    if protocol == "paper":
        samples = augment.expand(np.arange(n))
        order = np.random.default_rng([seed, 0xA9E]).permutation(len(samples))
        n_test = int(round(test_fraction * len(samples)))
        test, train = samples[order[:n_test]], samples[order[n_test:]]
        _check_both_classes(labels, np.unique(train[:, 0]), "training")
        _check_both_classes(labels, np.unique(test[:, 0]), "test")
        leaked = int(np.isin(test[:, 0], train[:, 0]).sum())
        return Split("paper", train, test, leaked_samples=leaked)
    raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
