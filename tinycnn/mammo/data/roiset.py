"""The set every reader returns: preprocessed ROI images with their labels, patients,
sources and sides, and what the reader skipped or wants the user to know; its
arrays form the on-disk cache (cache.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RoiSet:
    name: str
    images: np.ndarray  # (N, S, S) float32, preprocessed
    labels: np.ndarray  # (N,) int64: 0 benign, 1 malignant
    patients: np.ndarray  # (N,) str
    ids: np.ndarray  # (N,) str: where each ROI came from
    side: np.ndarray | None = None  # (N,) 0 train / 1 test where the dataset fixes a split
    skipped: list = field(default_factory=list)  # "file: reason" for each unreadable input
    notes: list = field(default_factory=list)  # what the reader wants the user to know
    strict_errors: list = field(default_factory=list)  # what --strict refuses besides skips, kept for cached sets
    cache_file: str | None = None  # the cache file the arrays came from or went to; None if neither
    from_cache: bool = False
    source_sides: np.ndarray | None = None  # (N,) side of each square crop in film pixels (MIAS), for film scans

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def counts(self) -> dict:
        return {"benign": int((self.labels == 0).sum()), "malignant": int((self.labels == 1).sum()),
                "patients": int(len(np.unique(self.patients)))}

    def to_arrays(self) -> dict:
        out = {"images": self.images, "labels": self.labels, "patients": self.patients.astype(str),
               "ids": self.ids.astype(str), "skipped": np.array(self.skipped, dtype=str),
               "notes": np.array(self.notes, dtype=str), "strict_errors": np.array(self.strict_errors, dtype=str)}
        if self.side is not None:
            out["side"] = self.side
        if self.source_sides is not None:
            out["source_sides"] = self.source_sides
        return out

    @classmethod
    def from_arrays(cls, name: str, z: dict) -> "RoiSet":
        return cls(name, z["images"], z["labels"].astype(np.int64), z["patients"], z["ids"],
                   z.get("side"), list(z["skipped"]), list(z["notes"]), list(z.get("strict_errors", [])),
                   source_sides=z.get("source_sides"))
