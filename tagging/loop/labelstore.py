"""The labelled-photo store: the shop's own verified labels, as the tagger sees the photos.

Layout under the store's root (<catalogue>/labels: a folder, or s3://bucket/prefix/labels)::

    data/dt=YYYY-MM-DD.parquet   one object per source: the accepted rows of one catalogue
    data/photos-<id>.parquet     partition or labelled photo folder, and in its Parquet footer
                                 (key "tagging.harvest") what was harvested from where (the
                                 input key, counts, rejects)
    _HARVEST.json                stores written before: read for the sources it names, never
                                 written again

Each source object is the whole contribution of one source (rows built by
tagging.loop.harvest) with its own state, so rows and state can never disagree and two
sources never share an object: no lock and no shared state file. An object is replaced
whole (atomically) when its source changed (a partition re-exported with more
`verified_category` values filled in, or new review answers in
reviews/dt=D/answers.parquet), by a compare-and-swap on its ETag (create-only for
a new source): a harvester that lost the race to another harvest of the same source reads
the inputs again and finds them harvested (or harvests the newer ones), so harvesting the
same input again adds nothing. The store a trainer reads (tagging.loop.labelled) is the
union, deduplicated: by product_id (the latest verification wins), then by photo bytes (the
product seen first keeps the photo, so a photo never changes side). The holdout is a fixed
hash of product_id (tagging.labels.is_holdout): a product never changes side as the store
grows.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypedDict

import pyarrow as pa
import pyarrow.parquet as pq

from model_registry.store import AlreadyExists, Conflict, open_store
from tagging.catalogue.answers import DayAnswers
from tagging.catalogue.layout import has_input, image_root_for, input_files, label_store_dir
from tagging.labels import CATEGORY_NAMES, NUM_CLASSES, is_holdout
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
    same_preprocessing,
)
from tagging.settings import LoopPolicy
from tagging.storage import Root, as_root, read_parquet_bytes

log = logging.getLogger(__name__)

DATA = "data/"
LEGACY_STATE = "_HARVEST.json"
STATE_KEY = b"tagging.harvest"  # a source object's state, in its Parquet footer
MAX_SWAPS = 20  # harvests of one source lost in a row to other harvests of it


class HarvestedSource(TypedDict):
    source: str
    harvested: bool
    accepted: int
    verified_rows: int
    rejected: dict[str, int]


@dataclass
class HarvestReport:
    """What one harvest of one source did."""

    source: str
    harvested: bool  # False: the source was unchanged since its last harvest
    accepted: int = 0
    verified_rows: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> HarvestedSource:
        return HarvestedSource(source=self.source, harvested=self.harvested,
                               accepted=self.accepted, verified_rows=self.verified_rows,
                               rejected=self.rejected)


class LabelStore:
    """The labelled-photo store of one catalogue (created on the first harvest)."""

    def __init__(self, root: Root | Path | str):
        self.root = as_root(root)
        self.objects = open_store(self.root)

    @classmethod
    def of_catalogue(cls, catalogue_root: Root | Path | str) -> LabelStore:
        return cls(label_store_dir(catalogue_root))

    # ------------------------------------------------------------ harvesting

    def harvest_partition(self, catalogue_root: Path | str, day: str, *,
                          image_root: Path | None = None, workers: int | None = None,
                          encoder: str | None = None) -> HarvestReport:
        """Harvest one catalogue partition's verified rows and review answers (skipped if
        its files, its answers file and the encoder are unchanged); `encoder`: whose
        features to store with each label (tagging.model.inputs)."""
        source = f"dt={date.fromisoformat(day).isoformat()}"
        image_root = image_root or image_root_for(catalogue_root)

        def build(entry: dict | None, previous: pa.Table | None) -> tuple[Any, SourceRows | None]:
            files = input_files(catalogue_root, day)
            answers = DayAnswers.load(catalogue_root, day)
            key = files_key(files, entry and entry.get("key"), encoder)
            if answers.sha256:
                key.append({"review_answers_sha256": answers.sha256})
            if entry is not None and entry.get("key") == key:
                return key, None
            return key, partition_rows(source, files, image_root=image_root,
                                       previous=previous, now=harvest_time(), workers=workers,
                                       answers=answers.table, encoder=encoder,
                                       reuse=same_preprocessing(entry and entry.get("key"), key))

        return self._harvest(source, build)

    def harvest_recent(self, catalogue_root: Path | str, day: str,
                       days: int = LoopPolicy.harvest_days, *,
                       image_root: Path | None = None, workers: int | None = None,
                       encoder: str | None = None) -> list[HarvestReport]:
        """Harvest the partitions of the `days` days ending with `day` that exist."""
        end = date.fromisoformat(day)
        reports = []
        for back in reversed(range(days)):
            current = (end - timedelta(days=back)).isoformat()
            if has_input(catalogue_root, current):
                reports.append(self.harvest_partition(catalogue_root, current,
                                                      image_root=image_root, workers=workers,
                                                      encoder=encoder))
        return reports

    def add_photo_folder(self, folder: Path | str, *, workers: int | None = None,
                         encoder: str | None = None) -> HarvestReport:
        """A labelled photo folder (manifest.csv + images/) joins the store, same split rule."""
        folder = Path(folder).resolve()

        def build(entry: dict | None, previous: pa.Table | None) -> tuple[Any, SourceRows | None]:
            key = folder_key(folder, encoder)
            if entry is not None and entry.get("key") == key:
                return key, None
            return key, photo_folder_rows(
                folder, previous=previous, now=harvest_time(), workers=workers,
                encoder=encoder, reuse=same_preprocessing(entry and entry.get("key"), key))

        return self._harvest(photo_folder_source(folder), build)

    def _harvest(self, source: str, build: Callable[[dict | None, pa.Table | None],
                                                    tuple[Any, SourceRows | None]]
                 ) -> HarvestReport:
        """Read the source's object, let `build` decide (key, new rows or None: unchanged),
        then replace the object by a compare-and-swap. Lost to another harvest of the same
        source: read it again and decide again (its inputs are read again too)."""
        key = self._source_key(source)
        for _ in range(MAX_SWAPS):
            found = self.objects.get(key)
            previous, entry = (None, None) if found is None else _decode(
                found[0], self.objects.location(key))
            if entry is None and previous is not None:  # a store written before
                entry = self._legacy_state().get(source)
            input_key, rows = build(entry, previous)
            if rows is None:
                return HarvestReport(source, False, **_counts(entry))
            entry = {
                "source": source, "key": input_key, "file": key.removeprefix(DATA),
                "harvested_at": harvest_time().isoformat(), "verified_rows": rows.verified_rows,
                "accepted": rows.table.num_rows, "rejected": dict(sorted(rows.rejected.items())),
                "rejected_examples": rows.examples,
            }
            try:
                self.objects.put(key, _encode(rows.table, entry),
                                 mode="create" if found is None else found[1])
            except (AlreadyExists, Conflict):
                log.info("%s was harvested by another process meanwhile: reading it again",
                         source)
                continue
            report = HarvestReport(source, True, **_counts(entry))
            log.info("harvested %s: %d labels accepted of %d verified rows, rejected %s",
                     source, report.accepted, report.verified_rows, report.rejected or "none")
            return report
        raise LabelStoreError(f"{self.objects.location(key)}: replaced by other harvests "
                              f"{MAX_SWAPS} times in a row; harvest again")

    # ------------------------------------------------------------ reading

    def exists(self) -> bool:
        """Has anything been harvested into this store?"""
        return bool(self._source_keys())

    def state(self) -> dict:
        """{"sources": {source: what its last harvest read and did}}."""
        return {"sources": {source: entry for source, _, entry in self._sources()}}

    def rows(self) -> pa.Table:
        """Every source's rows, before deduplication."""
        tables = [table for _, table, _ in self._sources()]
        return pa.concat_tables(tables) if tables else SCHEMA.empty_table()

    def table(self) -> pa.Table:
        """Every label, deduplicated, sorted by product_id, with a boolean `holdout` column."""
        return deduplicate(self.rows())

    def status(self) -> dict:
        """Counts per side, class and source, and every rejection, for `tagging labels status`."""
        loaded = self._sources()
        table = deduplicate(pa.concat_tables([t for _, t, _ in loaded]) if loaded
                            else SCHEMA.empty_table())
        holdout = table["holdout"].to_numpy(zero_copy_only=False)
        labels = table["label"].to_numpy()
        sources = {source: entry for source, _, entry in loaded}
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

    def _sources(self) -> list[tuple[str, pa.Table, dict]]:
        """(source, rows, state) of every source object, in name order."""
        keys = self._source_keys()
        legacy = {e.get("file"): (name, e) for name, e in self._legacy_state().items()
                  } if keys else {}
        loaded = []
        for key, found in zip(keys, self.objects.get_many(keys), strict=True):
            if found is None:  # removed since the listing
                continue
            table, entry = _decode(found[0], self.objects.location(key))
            name = key.removeprefix(DATA)
            if entry is None and name in legacy:
                source, entry = legacy[name]
            elif entry is None:  # written before, and not in _HARVEST.json: counts only
                source = table["source"][0].as_py() if table.num_rows else name
                entry = {"file": name, "accepted": table.num_rows,
                         "verified_rows": table.num_rows, "rejected": {},
                         "rejected_examples": []}
            else:
                source = entry["source"]
            loaded.append((source, table, entry))
        return loaded

    def _source_keys(self) -> list[str]:
        return [o.key for o in self.objects.list(DATA) if o.key.endswith(".parquet")]

    def _legacy_state(self) -> dict:
        """The sources _HARVEST.json names (a store written before states were in the
        source objects)."""
        found = self.objects.get(LEGACY_STATE)
        if found is None:
            return {}
        try:
            return json.loads(found[0])["sources"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise LabelStoreError(f"{self.objects.location(LEGACY_STATE)}: unreadable ({e}); "
                                  "fix or remove it") from None

    @staticmethod
    def _source_key(source: str) -> str:
        return f"{DATA}{source.replace('photos:', 'photos-').replace('/', '_')}.parquet"


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


def _encode(table: pa.Table, entry: dict) -> bytes:
    """One source object: its rows, with its state in the Parquet footer."""
    buffer = io.BytesIO()
    pq.write_table(table.replace_schema_metadata({STATE_KEY: json.dumps(entry)}), buffer,
                   compression="zstd")
    return buffer.getvalue()


def _decode(data: bytes, where: str) -> tuple[pa.Table, dict | None]:
    """(rows, state) of a source object; state None for one written before states moved in."""
    try:
        table = read_parquet_bytes(data, SCHEMA)
        metadata = table.schema.metadata or {}
        return (table.replace_schema_metadata(None),
                json.loads(metadata[STATE_KEY]) if STATE_KEY in metadata else None)
    except (pa.ArrowException, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LabelStoreError(f"{where}: unreadable ({e}); remove it to harvest its source "
                              "again") from None
