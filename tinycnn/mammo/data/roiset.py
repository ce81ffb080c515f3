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

    @staticmethod
    def check_arrays(z: dict, image_size: int) -> str | None:
        """What is wrong with arrays read back from a cache file (None: nothing), so a
        partial or altered file is rebuilt instead of failing later, far from here."""
        images = z.get("images")
        if images is None:
            return "no 'images' array"
        if images.dtype != np.float32 or images.ndim != 3 or images.shape[1:] != (image_size, image_size) \
                or len(images) == 0:
            return (f"'images' is {images.dtype} of shape {images.shape}, expected float32 of shape "
                    f"(N, {image_size}, {image_size})")
        if not np.isfinite(images).all():
            return "'images' holds NaN or infinite values"
        n = len(images)
        for key, kinds, optional in (("labels", "iu", False), ("patients", "U", False), ("ids", "U", False),
                                     ("side", "iu", True), ("source_sides", "iu", True)):
            a = z.get(key)
            if a is None:
                if optional:
                    continue
                return f"no {key!r} array"
            if a.ndim != 1 or len(a) != n or a.dtype.kind not in kinds:
                what = "strings" if kinds == "U" else "integers"
                return f"{key!r} is {a.dtype} of shape {a.shape}, expected {n} {what}"
        for key in ("labels", "side"):
            if key in z and not np.isin(z[key], (0, 1)).all():
                return f"{key!r} holds values other than 0 and 1"
        if "source_sides" in z and (z["source_sides"] < 1).any():
            return "'source_sides' holds crop sides below one pixel"
        # strict_errors too: a file without it would let --strict pass what a fresh read refuses
        for key in ("skipped", "notes", "strict_errors"):
            a = z.get(key)
            if a is None or a.ndim != 1 or (len(a) and a.dtype.kind != "U"):
                return f"{key!r} is missing or not a list of strings"
        return None

    @classmethod
    def from_arrays(cls, name: str, z: dict) -> "RoiSet":
        return cls(name, z["images"], z["labels"].astype(np.int64), z["patients"], z["ids"],
                   z.get("side"), list(z["skipped"]), list(z["notes"]), list(z["strict_errors"]),
                   source_sides=z.get("source_sides"))
