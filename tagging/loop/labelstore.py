"""The labelled-photo store: the shop's own verified labels, as the tagger sees the photos.

Layout under the catalogue root::

    labels/.lock                   fcntl.flock'ed by every writer
    labels/_HARVEST.json           what was harvested from where (input keys, counts, rejects)
    labels/data/dt=YYYY-MM-DD.parquet   the accepted rows of one catalogue partition
    labels/data/photos-<id>.parquet     the rows of one labelled photo folder

Each data file is the whole contribution of one source (its rows built by
tagging.loop.harvest), replaced atomically when that source changed (a partition
re-exported with more `verified_category` values filled in), so harvesting the same input
again adds nothing. The store a trainer reads (tagging.loop.labelled) is the union,
deduplicated: by product_id (the latest verification wins), then by photo bytes (the
product seen first keeps the photo, so a photo never changes side). The holdout is a
fixed hash of product_id: a product never changes side as the store grows.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from model_registry.files import atomic_write_bytes, flocked
from tagging.catalogue.layout import has_input, input_files
from tagging.labels import CATEGORY_NAMES, NUM_CLASSES
from tagging.loop.harvest import (
    SCHEMA,
    LabelStoreError,
    SourceRows,
    files_key,
    folder_key,
    harvest_time,
    partition_rows,
    photo_folder_rows,
    photo_folder_source,
)
from tagging.settings import Settings

log = logging.getLogger(__name__)

STORE_DIR = "labels"
STATE_FILE = "_HARVEST.json"
HOLDOUT_FRACTION = 0.2  # fixed: changing it would move products between the two sides
SPLIT_SALT = b"catalogue-tagging holdout v1:"


def is_holdout(product_ids: list[str] | np.ndarray) -> np.ndarray:
    """True for the ~20 % of products held out: a salted SHA-256 of the id, nothing else."""
    limit = int(HOLDOUT_FRACTION * 2**64)
    return np.array([int.from_bytes(hashlib.sha256(SPLIT_SALT + str(p).encode()).digest()[:8],
                                    "big") < limit for p in product_ids], bool)


@dataclass
class HarvestReport:
    """What one harvest of one source did."""

    source: str
    harvested: bool  # False: the source was unchanged since its last harvest
    accepted: int = 0
    verified_rows: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"source": self.source, "harvested": self.harvested, "accepted": self.accepted,
                "verified_rows": self.verified_rows, "rejected": self.rejected}


class LabelStore:
    """The labelled-photo store of one catalogue (created on the first harvest)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.data_dir = self.root / "data"
        self.state_path = self.root / STATE_FILE

    @classmethod
    def of_catalogue(cls, catalogue_root: Path | str) -> LabelStore:
        return cls(Path(catalogue_root) / STORE_DIR)

    # ------------------------------------------------------------ harvesting

    def harvest_partition(self, catalogue_root: Path | str, day: str, *,
                          image_root: Path | None = None, workers: int | None = None
                          ) -> HarvestReport:
        """Harvest one catalogue partition's verified rows (skipped if its files are unchanged)."""
        source = f"dt={date.fromisoformat(day).isoformat()}"
        files = input_files(catalogue_root, day)
        image_root = image_root or _default_image_root(catalogue_root)
        with self._locked():
            state = self.state()
            key = files_key(files, state["sources"].get(source, {}).get("key"))
            if state["sources"].get(source, {}).get("key") == key:
                return HarvestReport(source, False, **_counts(state["sources"][source]))
            rows = partition_rows(source, files, image_root=image_root,
                                  previous=self._read_source(source), now=harvest_time(),
                                  workers=workers)
            return self._commit(state, source, key, rows)

    def harvest_recent(self, catalogue_root: Path | str, day: str, days: int = 30, *,
                       image_root: Path | None = None, workers: int | None = None
                       ) -> list[HarvestReport]:
        """Harvest the partitions of the `days` days ending with `day` that exist."""
        end = date.fromisoformat(day)
        reports = []
        for back in reversed(range(days)):
            current = (end - timedelta(days=back)).isoformat()
            if has_input(catalogue_root, current):
                reports.append(self.harvest_partition(catalogue_root, current,
                                                      image_root=image_root, workers=workers))
        return reports

    def add_photo_folder(self, folder: Path | str, *, workers: int | None = None
                         ) -> HarvestReport:
        """A labelled photo folder (manifest.csv + images/) joins the store, same split rule."""
        folder = Path(folder).resolve()
        source = photo_folder_source(folder)
        with self._locked():
            state = self.state()
            key = folder_key(folder)
            if state["sources"].get(source, {}).get("key") == key:
                return HarvestReport(source, False, **_counts(state["sources"][source]))
            rows = photo_folder_rows(folder, previous=self._read_source(source), now=harvest_time(),
                                     workers=workers)
            return self._commit(state, source, key, rows)

    def _commit(self, state: dict, source: str, key: Any, rows: SourceRows) -> HarvestReport:
        """Write the source's data file, then record it (a crash between: harvested again)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        pq.write_table(rows.table, buffer, compression="zstd")
        atomic_write_bytes(self._source_path(source), buffer.getvalue())
        state["sources"][source] = {
            "key": key, "file": self._source_path(source).name,
            "harvested_at": harvest_time().isoformat(), "verified_rows": rows.verified_rows,
            "accepted": rows.table.num_rows, "rejected": dict(sorted(rows.rejected.items())),
            "rejected_examples": rows.examples,
        }
        atomic_write_bytes(self.state_path, json.dumps(state, indent=2, sort_keys=True).encode())
        report = HarvestReport(source, True, **_counts(state["sources"][source]))
        log.info("harvested %s: %d labels accepted of %d verified rows, rejected %s", source,
                 report.accepted, report.verified_rows, report.rejected or "none")
        return report

    # ------------------------------------------------------------ reading

    def state(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {"sources": {}}
        except (OSError, json.JSONDecodeError) as e:
            raise LabelStoreError(f"{self.state_path}: unreadable ({e}); fix or remove it"
                                  ) from None

    def rows(self) -> pa.Table:
        """Every source's rows, before deduplication."""
        files = sorted(self.data_dir.glob("*.parquet")) if self.data_dir.is_dir() else []
        tables = [pq.read_table(f, schema=SCHEMA) for f in files]
        return pa.concat_tables(tables) if tables else SCHEMA.empty_table()

    def table(self) -> pa.Table:
        """Every label, deduplicated, sorted by product_id, with a boolean `holdout` column."""
        return deduplicate(self.rows())

    def status(self) -> dict:
        """Counts per side, class and source, and every rejection, for `tagging labels status`."""
        table = self.table()
        holdout = table["holdout"].to_numpy(zero_copy_only=False)
        labels = table["label"].to_numpy()
        sources = self.state()["sources"]
        return {
            "store": str(self.root),
            "labels": table.num_rows,
            "train": int((~holdout).sum()),
            "holdout": int(holdout.sum()),
            "per_class": {CATEGORY_NAMES[k]: {"train": int(((labels == k) & ~holdout).sum()),
                                              "holdout": int(((labels == k) & holdout).sum())}
                          for k in range(NUM_CLASSES)},
            "sources": {name: {k: v for k, v in s.items() if k != "key"}
                        for name, s in sorted(sources.items())},
            "rejected": dict(sum((Counter(s["rejected"]) for s in sources.values()), Counter())),
        }

    def _read_source(self, source: str) -> pa.Table | None:
        path = self._source_path(source)
        return pq.read_table(path, schema=SCHEMA) if path.exists() else None

    def _source_path(self, source: str) -> Path:
        safe = source.replace("photos:", "photos-").replace("/", "_")
        return self.data_dir / f"{safe}.parquet"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (two DAG runs may harvest at once); the kernel frees it."""
        with flocked(self.root / ".lock"):
            yield


def deduplicate(table: pa.Table) -> pa.Table:
    """Latest verification per product_id; then one product per photo (the first seen)."""
    frame = table.to_pandas()
    frame["first_seen"] = frame.groupby("product_id")["harvested_at"].transform("min")
    frame = frame.sort_values(["verified_at", "harvested_at", "source", "product_id"],
                              kind="stable").drop_duplicates("product_id", keep="last")
    frame = frame.sort_values(["first_seen", "product_id"], kind="stable"
                              ).drop_duplicates("photo_sha256", keep="first")
    frame = frame.sort_values("product_id", kind="stable").drop(columns="first_seen")
    out = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)
    return out.append_column("holdout", pa.array(is_holdout(frame["product_id"].to_numpy()),
                                                 pa.bool_()))


def _counts(entry: dict) -> dict:
    return {"accepted": entry["accepted"], "verified_rows": entry["verified_rows"],
            "rejected": entry["rejected"]}


def _default_image_root(catalogue_root: Path) -> Path:
    return Settings.from_env().image_root_for(catalogue_root)
