"""The training view of the label store: deduplicated labels split into the train side and
the fixed holdout, as LabelledPhotos (what tagging.model.train learns and calibrates from).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tagging.loop.harvest import TIMESTAMP, photo_folder_rows
from tagging.loop.labelstore import LabelStore, deduplicate
from tagging.model.data import fingerprint
from tagging.photos.folder import LabelledPhotos


def to_photos(table: pa.Table, description: str) -> LabelledPhotos:
    """Store rows as tagging.photos.folder.LabelledPhotos (pixels, labels, origins, ids, and
    the encoder features every row has)."""
    pixels = np.frombuffer(b"".join(table["pixels"].to_pylist()), np.uint8)
    return LabelledPhotos(pixels.reshape(-1, 28, 28).copy(), table["label"].to_numpy().astype(
        np.int64), np.array(table["origin"].to_pylist(), dtype=str),
        table["product_id"].to_pylist(), description, features_of(table))


def features_of(table: pa.Table) -> dict[str, np.ndarray]:
    """{key: float32 (n, d)} when every row has features of the same input, else {}."""
    keys = set(table["features_of"].to_pylist())
    if len(keys) != 1 or None in keys:
        return {}
    values = np.frombuffer(b"".join(table["features"].to_pylist()), np.float16)
    return {keys.pop(): values.reshape(table.num_rows, -1).astype(np.float32)}


@dataclass(frozen=True)
class Labelled:
    """Deduplicated labels split by product: the train side and the fixed holdout."""

    table: pa.Table  # deduplicate()'s output
    train: LabelledPhotos
    holdout: LabelledPhotos

    @classmethod
    def of(cls, table: pa.Table, description: str) -> Labelled:
        side = table["holdout"]
        train, holdout = table.filter(pc.invert(side)), table.filter(side)
        return cls(table, to_photos(train, f"{train.num_rows} train-side labels of {description}"),
                   to_photos(holdout, f"{holdout.num_rows} held-out labels of {description}"))

    def harvested_through(self) -> str | None:
        """When the newest train-side label was harvested (None: no train side)."""
        train = self.table.filter(pc.invert(self.table["holdout"]))
        newest = pc.max(train["harvested_at"]).as_py() if train.num_rows else None
        return newest.isoformat() if newest else None

    def new_train_labels(self, since: str | None) -> int:
        """Train-side labels harvested after `since` (all of them when None)."""
        train = self.table.filter(pc.invert(self.table["holdout"]))
        if since is None:
            return train.num_rows
        moment = pa.scalar(datetime.fromisoformat(since), TIMESTAMP)
        return pc.sum(pc.greater(train["harvested_at"], moment)).as_py() or 0

    def summary(self) -> dict:
        """Stored with a model version: what it learnt from and was calibrated on."""
        return {
            "train": len(self.train.labels), "holdout": len(self.holdout.labels),
            "train_fingerprint": fingerprint(self.train.pixels, self.train.labels),
            "holdout_fingerprint": fingerprint(self.holdout.pixels, self.holdout.labels),
            "harvested_through": self.harvested_through(),
        }


def load_labelled(label_store: Path | str | None = None, real_photos: Path | str | None = None,
                  *, workers: int | None = None, encoder: str | None = None
                  ) -> Labelled | None:
    """The labels of a store and/or a photo folder (read in place, with `encoder`'s
    features), deduplicated and split."""
    tables, names = [], []
    if label_store is not None:
        tables.append(LabelStore(label_store).rows())
        names.append(str(label_store))
    if real_photos is not None:
        tables.append(photo_folder_rows(real_photos, workers=workers, encoder=encoder).table)
        names.append(str(real_photos))
    if not tables:
        return None
    return Labelled.of(deduplicate(pa.concat_tables(tables)), " + ".join(names))
