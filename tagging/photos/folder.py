"""Labelled real product photos: loading them as the tagger sees them, and stratified folds.

A few hundred labelled real photos teach the classifier more about real photos than any
augmentation of Fashion-MNIST does. When the model trains on them, its temperature and review
policy can no longer be fitted on the same photos (it knows them); they are fitted on
*out-of-fold* predictions instead: each photo predicted by a model trained without its fold
(cross-fitting, see `tagging.model.train`; the held-out figures are `tagging.model.evaluate`'s).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tagging.errors import DataError
from tagging.labels import NUM_CLASSES
from tagging.photos.pool import DecodingPool
from tagging.photos.render import PIXELS, PhotoInput

SOURCE_PATTERN = re.compile(r"^\d+_([A-Za-z]+)_")  # e.g. 3_cd_017.jpg -> cd


@dataclass(frozen=True)
class LabelledPhotos:
    """Preprocessed labelled photos (the ones that could be decoded) and where they came from."""

    pixels: np.ndarray  # uint8 (n, 28, 28), exactly what the tagger feeds the classifier
    labels: np.ndarray  # (n,) class ids
    sources: np.ndarray  # (n,) str: a `source` column, or the file-name prefix, or "all"
    files: list[str]
    description: str
    # Other model inputs of the same photos, by key (tagging.model.inputs.ModelInput.key):
    # an encoder's features (n, d), as computed when the photo was harvested.
    features: dict[str, np.ndarray] = field(default_factory=dict)

    def inputs(self, key: str) -> np.ndarray:
        """The photos as the model input `key` takes them: "pixels", or features."""
        if key == "pixels":
            return self.pixels
        if key not in self.features:
            raise DataError(f"{self.description}: no {key} features (harvested with "
                            f"{', '.join(self.features) or 'none'})")
        return self.features[key]

    def subset(self, keep: np.ndarray) -> LabelledPhotos:
        return LabelledPhotos(self.pixels[keep], self.labels[keep], self.sources[keep],
                              [f for f, k in zip(self.files, keep, strict=True) if k],
                              f"{int(np.sum(keep))} of {self.description}",
                              {key: values[keep] for key, values in self.features.items()})


def read_photo_manifest(manifest_csv: Path) -> list[tuple[str, int, str]]:
    """(file, label, source) per row; source from a `source` column or the file prefix."""
    with open(manifest_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"file", "label"} <= set(rows[0]):
        raise DataError(f"{manifest_csv}: need a header with at least 'file' and 'label'")
    out = []
    for row in rows:
        match = SOURCE_PATTERN.match(row["file"])
        source = row.get("source") or (match.group(1) if match else "all")
        label = int(row["label"]) if row["label"].strip().isdigit() else -1
        if not 0 <= label < NUM_CLASSES:
            raise DataError(f"{manifest_csv}: label {row['label']} of {row['file']} is not 0-9")
        out.append((row["file"], label, source))
    return out


def preprocess_files(paths: list[Path], workers: int | None = None,
                     forms: tuple[PhotoInput, ...] = (PIXELS,)
                     ) -> tuple[tuple[np.ndarray, ...], list[str | None]]:
    """Decode and render in each form, in worker processes (tagging.photos.pool); failed
    images are zeros plus their error."""
    photos: list[bytes | None] = []
    read_errors: list[str | None] = []
    for path in paths:
        try:
            photos.append(Path(path).read_bytes())
            read_errors.append(None)
        except OSError as e:
            photos.append(None)
            read_errors.append(f"unreadable: {e.strerror or e}")
    with DecodingPool(Path(paths[0]).parent if paths else ".", workers, forms) as pool:
        arrays, errors = pool.decode(photos, [None] * len(photos))
    return arrays, [r or e for r, e in zip(read_errors, errors, strict=True)]


def load_labelled_photos(root: Path | str, workers: int | None = None) -> LabelledPhotos:
    """root/manifest.csv + root/images, preprocessed; undecodable photos are left out."""
    root = Path(root)
    if not (root / "manifest.csv").is_file():
        raise DataError(f"{root}: not a labelled photo folder (needs manifest.csv and images/)")
    rows = read_photo_manifest(root / "manifest.csv")
    (pixels,), errors = preprocess_files([root / "images" / f for f, _, _ in rows], workers)
    ok = np.array([e is None for e in errors])
    if not ok.any():
        raise DataError(f"{root}: none of the {len(rows)} photos could be read")
    return LabelledPhotos(
        pixels[ok], np.array([label for _, label, _ in rows])[ok],
        np.array([source for _, _, source in rows])[ok],
        [f for (f, _, _), k in zip(rows, ok, strict=True) if k],
        f"{int(ok.sum())} labelled photos in {root}")


def stratified_folds(labels: np.ndarray, sources: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold id (0..k-1) per photo, each (label, source) group dealt evenly across folds."""
    fold = np.zeros(len(labels), np.int64)
    rng = np.random.default_rng(seed)
    start = 0  # continue dealing where the last group stopped, so small groups spread out
    for label, source in sorted(set(zip(labels.tolist(), sources.tolist(), strict=True))):
        group = rng.permutation(np.nonzero((labels == label) & (sources == source))[0])
        fold[group] = (start + np.arange(len(group))) % k
        start += len(group)
    return fold
