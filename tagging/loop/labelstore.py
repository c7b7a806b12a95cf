"""The labelled-photo store: the shop's own verified labels, as the tagger sees the photos.

Layout under the catalogue root::

    labels/.lock                   fcntl.flock'ed by every writer
    labels/_HARVEST.json           what was harvested from where (input keys, counts, rejects)
    labels/data/dt=YYYY-MM-DD.parquet   the accepted rows of one catalogue partition
    labels/data/photos-<id>.parquet     the rows of one labelled photo folder

Each data file is the whole contribution of one source, replaced atomically when that
source changed (a partition re-exported with more `verified_category` values filled in),
so harvesting the same input again adds nothing. The store a trainer reads is the union,
deduplicated: by product_id (the latest verification wins), then by photo bytes (the
product seen first keeps the photo, so a photo never changes side). The holdout is a
fixed hash of product_id: a product never changes side as the store grows.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from model_registry.files import atomic_write_bytes, flocked, sha256_file
from tagging.catalogue.layout import input_dir, input_files
from tagging.errors import TaggingError
from tagging.labels import CATEGORY_NAMES, CATEGORY_SLUGS, NUM_CLASSES
from tagging.model.data import fingerprint
from tagging.photos.folder import LabelledPhotos
from tagging.photos.imaging import ImageError, load_image_uri, preprocess
from tagging.photos.pool import DecodingPool
from tagging.settings import Settings

log = logging.getLogger(__name__)

STORE_DIR = "labels"
STATE_FILE = "_HARVEST.json"
HOLDOUT_FRACTION = 0.2  # fixed: changing it would move products between the two sides
SPLIT_SALT = b"catalogue-tagging holdout v1:"
PIXELS = 28 * 28
MAX_EXAMPLES = 20  # rejected rows named per source in the state (the rest are counted)
TIMESTAMP = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema([
    pa.field("product_id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),  # "dt=YYYY-MM-DD" or "photos:<folder>"
    pa.field("origin", pa.string(), nullable=False),  # reporting group: catalogue, cd, myn…
    pa.field("label", pa.int8(), nullable=False),
    pa.field("pixels", pa.binary(PIXELS), nullable=False),  # uint8 28x28, as the tagger sees
    pa.field("photo_sha256", pa.string(), nullable=False),
    pa.field("verified_at", TIMESTAMP, nullable=False),
    pa.field("harvested_at", TIMESTAMP, nullable=False),  # first harvest of this label
])
_FOLDER_SOURCE = re.compile(r"^\d+_([A-Za-z]+)_")  # 3_cd_017.jpg -> cd (tagging.photos.folder)


class LabelStoreError(TaggingError):
    """The store or one of its sources cannot be read or written."""


# ---------------------------------------------------------------- labels and the split


def parse_label(value: Any) -> int | None:
    """A class id from a category slug ("ankle-boot"), a name ("Ankle boot") or an id (9)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | np.integer):
        return int(value) if 0 <= value < NUM_CLASSES else None
    text = str(value).strip()
    if text.isdigit():
        return int(text) if int(text) < NUM_CLASSES else None
    slug = text.lower().replace("/", "-").replace(" ", "-")
    return CATEGORY_SLUGS.index(slug) if slug in CATEGORY_SLUGS else None


def is_holdout(product_ids: list[str] | np.ndarray) -> np.ndarray:
    """True for the ~20 % of products held out: a salted SHA-256 of the id, nothing else."""
    limit = int(HOLDOUT_FRACTION * 2**64)
    return np.array([int.from_bytes(hashlib.sha256(SPLIT_SALT + str(p).encode()).digest()[:8],
                                    "big") < limit for p in product_ids], bool)


# ---------------------------------------------------------------- decoding (worker processes)


def decode_photos(images: list[bytes | None], uris: list[str | None], image_root: Path,
                  workers: int | None = None
                  ) -> list[tuple[bytes | None, str | None, str | None]]:
    """(pixels, photo sha256, error) per row, in order: the tagger's decode path.

    The photo bytes are read here (an image_uri under the image root), to hash them;
    decoding runs in a DecodingPool, so a photo that kills its decoder is one rejected row.
    """
    photos: list[bytes | None] = []
    read_errors: list[str | None] = []
    for data, uri in zip(images, uris, strict=True):
        try:
            photos.append(load_image_uri(uri, image_root) if data is None and uri else data)
            read_errors.append(None)
        except ImageError as e:
            photos.append(None)
            read_errors.append(str(e))
    with DecodingPool(image_root, workers) as pool:
        pixels, errors = pool.decode(photos, [None] * len(photos))
    return [(None, None, read_error or error) if read_error or error
            else (pixels[i].tobytes(), hashlib.sha256(photos[i]).hexdigest(), None)
            for i, (read_error, error) in enumerate(zip(read_errors, errors, strict=True))]


@functools.cache
def preprocess_signature() -> str:
    """A hash of what tagging.photos.imaging.preprocess makes of two fixed synthetic photos.

    Part of every source's harvest key: when preprocessing changes, the stored pixels no
    longer match what the tagger feeds the model, so the sources are harvested again.
    """
    from PIL import Image, ImageDraw

    digest = hashlib.sha256()
    for shape, size in (("rectangle", (120, 160)), ("ellipse", (200, 150))):
        image = Image.new("RGB", size, (246, 244, 240))
        getattr(ImageDraw.Draw(image), shape)((20, 30, size[0] - 25, size[1] - 20),
                                              fill=(40, 60, 110))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        digest.update(preprocess(buffer.getvalue()).tobytes())
    return digest.hexdigest()


def _reject_reason(error: str) -> str:
    missing = error.startswith(("missing image", "image_uri not found", "empty image"))
    return "missing image" if missing else "undecodable photo"


# ---------------------------------------------------------------- one source -> rows


@dataclass
class SourceRows:
    """The accepted rows of one source, and what was rejected (counted, never trained on)."""

    table: pa.Table
    verified_rows: int
    rejected: Counter = field(default_factory=Counter)
    examples: list[dict] = field(default_factory=list)

    def reject(self, product_id: Any, reason: str, detail: str = "") -> None:
        self.rejected[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append({"product_id": product_id, "reason": reason,
                                  **({"detail": detail} if detail else {})})


def _timestamps(values: list[Any], fallback: list[datetime]) -> list[datetime]:
    """verified_at values (timestamps or ISO strings), else the fallback per row."""
    out = []
    for value, default in zip(values, fallback, strict=True):
        moment = value
        if isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                moment = None
        if isinstance(moment, date) and not isinstance(moment, datetime):
            moment = datetime(moment.year, moment.month, moment.day)
        if not isinstance(moment, datetime):
            moment = default
        out.append(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    return out


def build_rows(source: str, product_ids: list[Any], labels: list[Any], images: list[Any],
               uris: list[Any], verified_at: list[Any], origins: list[str], *,
               image_root: Path, previous: pa.Table | None, now: datetime,
               workers: int | None = None) -> SourceRows:
    """Validate, decode and preprocess one source's verified rows into store rows.

    previous: this source's rows from the last harvest: a label seen before keeps its
    harvested_at (and its verified_at when the input has none), so re-harvesting the
    same input writes the same rows.
    """
    result = SourceRows(SCHEMA.empty_table(), len(product_ids))
    keep, ids, classes, seen = [], [], [], set()
    for i, (pid, raw) in enumerate(zip(product_ids, labels, strict=True)):
        label = parse_label(raw)
        if pid is None or pid == "":
            result.reject(pid, "missing product_id")
        elif label is None:
            result.reject(pid, "unknown label", repr(raw))
        elif pid in seen:
            result.reject(pid, "duplicate product_id")
        else:
            seen.add(pid)
            keep.append(i)
            ids.append(str(pid))
            classes.append(label)
    decoded = decode_photos([images[i] for i in keep], [uris[i] for i in keep], image_root,
                            workers)
    before = {}
    if previous is not None:
        for row in previous.select(["product_id", "label", "photo_sha256", "verified_at",
                                    "harvested_at"]).to_pylist():
            before[(row["product_id"], row["label"], row["photo_sha256"])] = row
    rows: dict[str, list] = {name: [] for name in SCHEMA.names}
    for i, pid, label, (pixels, sha, error) in zip(keep, ids, classes, decoded, strict=True):
        if error is not None:
            result.reject(pid, _reject_reason(error), error)
            continue
        old = before.get((pid, label, sha))
        harvested = old["harvested_at"] if old else now
        stated = _timestamps([verified_at[i]], [old["verified_at"] if old else harvested])[0]
        for name, value in (("product_id", pid), ("source", source), ("origin", origins[i]),
                            ("label", label), ("pixels", pixels), ("photo_sha256", sha),
                            ("verified_at", stated), ("harvested_at", harvested)):
            rows[name].append(value)
    result.table = pa.table(rows, schema=SCHEMA)
    return result


# ---------------------------------------------------------------- the store


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
        catalogue_root = Path(catalogue_root)
        source = f"dt={date.fromisoformat(day).isoformat()}"
        files = input_files(catalogue_root, day)
        image_root = image_root or _default_image_root(catalogue_root)
        with self._locked():
            state = self.state()
            key = _files_key(files, state["sources"].get(source, {}).get("key"))
            if state["sources"].get(source, {}).get("key") == key:
                return HarvestReport(source, False, **_counts(state["sources"][source]))
            ids, labels, images, uris, stated = [], [], [], [], []
            for path in files:
                names = pq.read_schema(path).names
                if "verified_category" not in names:
                    continue
                wanted = [c for c in ("product_id", "verified_category", "image", "image_uri",
                                      "verified_at") if c in names]
                table = pq.read_table(path, columns=wanted,
                                      filters=pc.is_valid(pc.field("verified_category")))
                n = table.num_rows
                column = {c: table[c].to_pylist() if c in table.column_names else [None] * n
                          for c in ("product_id", "verified_category", "image", "image_uri",
                                    "verified_at")}
                ids += column["product_id"]
                labels += column["verified_category"]
                images += column["image"]
                uris += column["image_uri"]
                stated += column["verified_at"]
            rows = build_rows(source, ids, labels, images, uris, stated,
                              ["catalogue"] * len(ids), image_root=image_root,
                              previous=self._read_source(source), now=_now(), workers=workers)
            return self._commit(state, source, key, rows)

    def harvest_recent(self, catalogue_root: Path | str, day: str, days: int = 30, *,
                       image_root: Path | None = None, workers: int | None = None
                       ) -> list[HarvestReport]:
        """Harvest the partitions of the `days` days ending with `day` that exist."""
        end = date.fromisoformat(day)
        reports = []
        for back in reversed(range(days)):
            current = (end - timedelta(days=back)).isoformat()
            if any(input_dir(catalogue_root, current).glob("*.parquet")):
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
            key = _folder_key(folder)
            if state["sources"].get(source, {}).get("key") == key:
                return HarvestReport(source, False, **_counts(state["sources"][source]))
            rows = photo_folder_rows(folder, previous=self._read_source(source), now=_now(),
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
            "harvested_at": _now().isoformat(), "verified_rows": rows.verified_rows,
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


# ---------------------------------------------------------------- photo folders


def photo_folder_source(folder: Path) -> str:
    """The store's name for a photo folder: its name plus a hash of where it is."""
    digest = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:8]
    return f"photos:{Path(folder).name}-{digest}"


def photo_folder_rows(folder: Path | str, *, previous: pa.Table | None = None,
                      now: datetime | None = None, workers: int | None = None) -> SourceRows:
    """A labelled photo folder as store rows: product_id `<folder name>/<file>`."""
    import csv

    folder = Path(folder)
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        raise LabelStoreError(f"{folder}: not a labelled photo folder (needs manifest.csv "
                              "and images/)")
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"file", "label"} <= set(rows[0]):
        raise LabelStoreError(f"{manifest}: need a header with at least 'file' and 'label'")
    files = [r["file"] for r in rows]
    images = []
    for name in files:
        try:
            images.append((folder / "images" / name).read_bytes())
        except OSError:
            images.append(None)  # rejected as a missing image
    origins = [r.get("source") or (m.group(1) if (m := _FOLDER_SOURCE.match(n)) else "photos")
               for r, n in zip(rows, files, strict=True)]
    return build_rows(photo_folder_source(folder), [f"{folder.name}/{n}" for n in files],
                      [r["label"] for r in rows], images, [None] * len(rows),
                      [None] * len(rows), origins, image_root=folder, previous=previous,
                      now=now or _now(), workers=workers)


# ---------------------------------------------------------------- helpers


def _counts(entry: dict) -> dict:
    return {"accepted": entry["accepted"], "verified_rows": entry["verified_rows"],
            "rejected": entry["rejected"]}


def _files_key(files: list[Path], previous: list[dict] | None) -> list[dict]:
    """Name, size, mtime and SHA-256 of each input file (the hash is reused when the file's
    size and mtime are unchanged: hashing 30 days of photos every run would be slow), and
    the preprocessing signature."""
    known = {(p["file"], p["size"], p["mtime_ns"]): p["sha256"]
             for p in previous or [] if "file" in p}
    key: list[dict] = [{"preprocess": preprocess_signature()}]
    for path in files:
        stat = path.stat()
        sha = known.get((path.name, stat.st_size, stat.st_mtime_ns)) or sha256_file(path)
        key.append({"file": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                    "sha256": sha})
    return key


def _folder_key(folder: Path) -> dict:
    """The manifest's hash plus the name, size and mtime of every image."""
    images = folder / "images"
    listing = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                     for p in images.iterdir()) if images.is_dir() else []
    return {"manifest_sha256": sha256_file(folder / "manifest.csv"),
            "images_sha256": hashlib.sha256(json.dumps(listing).encode()).hexdigest(),
            "preprocess": preprocess_signature()}


def _default_image_root(catalogue_root: Path) -> Path:
    return Settings.from_env().image_root_for(catalogue_root)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def to_photos(table: pa.Table, description: str) -> LabelledPhotos:
    """Store rows as tagging.photos.folder.LabelledPhotos (pixels, labels, origins, ids)."""
    pixels = np.frombuffer(b"".join(table["pixels"].to_pylist()), np.uint8)
    return LabelledPhotos(pixels.reshape(-1, 28, 28).copy(), table["label"].to_numpy().astype(
        np.int64), np.array(table["origin"].to_pylist(), dtype=str),
        table["product_id"].to_pylist(), description)



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
                  *, workers: int | None = None) -> Labelled | None:
    """The labels of a store and/or a photo folder (read in place), deduplicated and split."""
    tables, names = [], []
    if label_store is not None:
        tables.append(LabelStore(label_store).rows())
        names.append(str(label_store))
    if real_photos is not None:
        tables.append(photo_folder_rows(real_photos, workers=workers).table)
        names.append(str(real_photos))
    if not tables:
        return None
    return Labelled.of(deduplicate(pa.concat_tables(tables)), " + ".join(names))
