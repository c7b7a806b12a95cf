"""Building the label store's rows: one source (a catalogue partition or a labelled photo
folder) -> validated, decoded, preprocessed rows, and the key that says whether it changed.

Rows are decoded exactly as the tagger decodes (tagging.photos, in a DecodingPool), so the
stored pixels are what a pixels model sees, and, when an encoder is named, its features are
computed once here and stored with the label (a retrain never encodes a photo again); bad
rows are counted and named, never stored.
tagging.loop.labelstore writes them; tagging.loop.labelled reads them for training.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from model_registry.files import sha256_file
from tagging import storage
from tagging.catalogue.answers import UNUSABLE
from tagging.errors import ImageError, TaggingError
from tagging.labels import parse_label
from tagging.model.inputs import PIXELS_NAME, ModelInput
from tagging.photos.decode import load_image_uri
from tagging.photos.pool import DecodingPool
from tagging.photos.render import PIXELS, render_forms

PIXEL_BYTES = 28 * 28
MAX_EXAMPLES = 20  # rejected rows named per source in the state (the rest are counted)
TIMESTAMP = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema([
    pa.field("product_id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),  # "dt=YYYY-MM-DD" or "photos:<folder>"
    pa.field("origin", pa.string(), nullable=False),  # reporting group: catalogue, cd, myn…
    pa.field("label", pa.int8(), nullable=False),
    pa.field("pixels", pa.binary(PIXEL_BYTES), nullable=False),  # uint8 28x28, as the tagger sees
    pa.field("photo_sha256", pa.string(), nullable=False),
    # An encoder's features (float16, d values) and which (tagging.model.inputs key); null
    # when harvested without an encoder.
    pa.field("features", pa.binary()),
    pa.field("features_of", pa.string()),
    pa.field("verified_at", TIMESTAMP, nullable=False),
    pa.field("harvested_at", TIMESTAMP, nullable=False),  # first harvest of this label
])
_FOLDER_SOURCE = re.compile(r"^\d+_([A-Za-z]+)_")  # 3_cd_017.jpg -> cd (tagging.photos.folder)


class LabelStoreError(TaggingError):
    """The store or one of its sources cannot be read or written."""


def harvest_time() -> datetime:
    """Now, to the second: a label's harvested_at."""
    return datetime.now(UTC).replace(microsecond=0)


# ---------------------------------------------------------------- decoding (worker processes)


Decoded = tuple[bytes | None, bytes | None, str | None, str | None]


def decode_photos(images: list[bytes | None], uris: list[str | None], image_root: Path,
                  workers: int | None = None, encoder: str | None = None,
                  known: dict[str, tuple[bytes, bytes | None]] | None = None) -> list[Decoded]:
    """(pixels, features, photo sha256, error) per row, in order: the tagger's decode path,
    and the features of `encoder` (none when it is None or "pixels").

    The photo bytes are read here (an image_uri under the image root), to hash them; a
    photo already in `known` (sha256 -> pixels, features: this source's last harvest, with
    the same encoder) is not decoded or encoded again. Decoding runs in a DecodingPool, so
    a photo that kills its decoder is one rejected row.
    """
    known = known or {}
    photos: list[bytes | None] = []
    hashes: list[str | None] = []
    read_errors: list[str | None] = []
    for data, uri in zip(images, uris, strict=True):
        try:
            data = load_image_uri(uri, image_root) if data is None and uri else data
            read_errors.append(None)
        except ImageError as e:
            data = None
            read_errors.append(str(e))
        hashes.append(hashlib.sha256(data).hexdigest() if data else None)
        photos.append(None if hashes[-1] in known else data)
    new = [i for i, (data, error) in enumerate(zip(photos, read_errors, strict=True))
           if error is None and hashes[i] not in known]
    model_input = ModelInput(encoder or PIXELS_NAME)
    forms = (PIXELS,) if model_input.is_pixels else (PIXELS, model_input.photo_input)
    with DecodingPool(image_root, workers, forms) as pool:
        rendered, errors = pool.decode([photos[i] for i in new], [None] * len(new))
    ok = np.array([e is None for e in errors], bool)
    features = None
    if not model_input.is_pixels and new:
        from tagging.encoder import Encoder

        features = Encoder.load(model_input.name).features_of(rendered[1], ok)
        features = features.astype(np.float16)
    out: list[Decoded] = [(None, None, None, e) if e else (*known.get(h, (None, None)), h, None)
                          for e, h in zip(read_errors, hashes, strict=True)]
    for k, i in enumerate(new):
        out[i] = ((rendered[0][k].tobytes(),
                   None if features is None else features[k].tobytes(), hashes[i], None)
                  if ok[k] else (None, None, None, errors[k]))
    return out


@functools.cache
def preprocess_signature(encoder: str | None = None) -> str:
    """A hash of what the decoding path makes of two fixed synthetic photos: the 28x28
    pixels, and the encoder's input (plus which weights) when features are harvested.

    Part of every source's harvest key: when preprocessing or the encoder changes, the
    stored values no longer match what the tagger feeds the model, so the sources are
    harvested again.
    """
    from PIL import Image, ImageDraw

    model_input = ModelInput(encoder or PIXELS_NAME)
    forms = (PIXELS,) if model_input.is_pixels else (PIXELS, model_input.photo_input)
    digest = hashlib.sha256(b"" if model_input.is_pixels else model_input.key.encode())
    for shape, size in (("rectangle", (120, 160)), ("ellipse", (200, 150))):
        image = Image.new("RGB", size, (246, 244, 240))
        getattr(ImageDraw.Draw(image), shape)((20, 30, size[0] - 25, size[1] - 20),
                                              fill=(40, 60, 110))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        for rendered in render_forms(buffer.getvalue(), forms):
            digest.update(rendered.tobytes())
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
               workers: int | None = None, encoder: str | None = None,
               reuse: bool = False) -> SourceRows:
    """Validate, decode and preprocess one source's verified rows into store rows (with
    `encoder`'s features, when named).

    previous: this source's rows from the last harvest: a label seen before keeps its
    harvested_at (and its verified_at when the input has none), so re-harvesting the
    same input writes the same rows; with `reuse` (the same preprocessing signature), a
    photo seen before keeps its pixels and features (it is not decoded or encoded again).
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
    features_of = None if encoder is None else ModelInput(encoder).key
    known = {} if previous is None or not reuse else {
        row["photo_sha256"]: (row["pixels"], row["features"]) for row in previous.select(
            ["photo_sha256", "pixels", "features", "features_of"]).to_pylist()
        if row["features_of"] == features_of}
    decoded = decode_photos([images[i] for i in keep], [uris[i] for i in keep], image_root,
                            workers, encoder, known)
    before = {}
    if previous is not None:
        for row in previous.select(["product_id", "label", "photo_sha256", "verified_at",
                                    "harvested_at"]).to_pylist():
            before[(row["product_id"], row["label"], row["photo_sha256"])] = row
    rows: dict[str, list] = {name: [] for name in SCHEMA.names}
    for i, pid, label, (pixels, features, sha, error) in zip(keep, ids, classes, decoded,
                                                            strict=True):
        if error is not None:
            result.reject(pid, _reject_reason(error), error)
            continue
        old = before.get((pid, label, sha))
        harvested = old["harvested_at"] if old else now
        stated = _timestamps([verified_at[i]], [old["verified_at"] if old else harvested])[0]
        for name, value in (("product_id", pid), ("source", source), ("origin", origins[i]),
                            ("label", label), ("pixels", pixels), ("photo_sha256", sha),
                            ("features", features),
                            ("features_of", features_of if features is not None else None),
                            ("verified_at", stated), ("harvested_at", harvested)):
            rows[name].append(value)
    result.table = pa.table(rows, schema=SCHEMA)
    return result


def partition_rows(source: str, files: list[storage.Root], *, image_root: storage.Root | Path,
                   previous: pa.Table | None, now: datetime, workers: int | None = None,
                   answers: pa.Table | None = None, encoder: str | None = None,
                   reuse: bool = False) -> SourceRows:
    """The verified rows of one catalogue partition's input files: `verified_category`, and
    the review answers about the day (tagging.catalogue.answers; an answer wins over the
    input's value). Photos answered "unusable" are counted, never trained on."""
    answered = {} if answers is None else {
        pid: (answer, at) for pid, answer, at in zip(
            answers["product_id"].to_pylist(), answers["answer"].to_pylist(),
            answers["answered_at"].to_pylist(), strict=True)}
    ids, labels, images, uris, stated, unusable, found = [], [], [], [], [], [], set()
    for path in files:
        fs, where = storage.arrow_fs(path)  # a local file or an S3 object
        with storage.storage_errors(path):
            names = pq.read_schema(where, filesystem=fs).names
        wanted = [c for c in ("product_id", "verified_category", "image", "image_uri",
                              "verified_at") if c in names]
        conditions = [pc.is_valid(pc.field("verified_category"))] \
            if "verified_category" in names else []
        if answered:
            conditions.append(pc.field("product_id").isin(pa.array(list(answered), pa.string())))
        if not conditions:
            continue
        condition = conditions[0] if len(conditions) == 1 else conditions[0] | conditions[1]
        with storage.storage_errors(path):
            table = pq.read_table(where, filesystem=fs, columns=wanted, filters=condition)
        for row in table.to_pylist():
            pid, label, when = row["product_id"], row.get("verified_category"), \
                row.get("verified_at")
            if pid in answered:
                found.add(pid)
                answer, answered_at = answered[pid]
                if answer != UNUSABLE:
                    label, when = answer, answered_at
                elif label is None:
                    unusable.append(pid)
                    continue
            ids.append(pid)
            labels.append(label)
            images.append(row.get("image"))
            uris.append(row.get("image_uri"))
            stated.append(when)
    rows = build_rows(source, ids, labels, images, uris, stated, ["catalogue"] * len(ids),
                      image_root=image_root, previous=previous, now=now, workers=workers,
                      encoder=encoder, reuse=reuse)
    for pid in unusable:
        rows.reject(pid, "unusable photo (review answer)")
    for pid in sorted(set(answered) - found):
        rows.reject(pid, "answered product not in the input")
    rows.verified_rows += len(unusable) + len(set(answered) - found)
    return rows


# ---------------------------------------------------------------- photo folders


def photo_folder_source(folder: Path) -> str:
    """The store's name for a photo folder: its name plus a hash of where it is."""
    digest = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:8]
    return f"photos:{Path(folder).name}-{digest}"


def photo_folder_rows(folder: Path | str, *, previous: pa.Table | None = None,
                      now: datetime | None = None, workers: int | None = None,
                      encoder: str | None = None, reuse: bool = False) -> SourceRows:
    """A labelled photo folder as store rows: product_id `<folder name>/<file>`."""
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
                      now=now or harvest_time(), workers=workers, encoder=encoder,
                      reuse=reuse)


# ---------------------------------------------------------------- has a source changed?


def files_key(files: list[Path | storage.Root], previous: list[dict] | None,
              encoder: str | None = None) -> list[dict]:
    """Name, size, mtime (an S3 object: ETag) and SHA-256 of each input file (the hash is
    reused when size and mtime are unchanged: hashing 30 days of photos every run would be
    slow), and the preprocessing signature (with the encoder's)."""
    known = {(p["file"], p["size"], p.get("mtime_ns", p.get("etag"))): p["sha256"]
             for p in previous or [] if "file" in p}
    key: list[dict] = [{"preprocess": preprocess_signature(encoder)}]
    for path in map(storage.as_root, files):
        identity = storage.identity(path)
        stamp = ({"size": identity[1], "etag": identity[0]} if path.is_remote
                 else {"size": identity[1], "mtime_ns": identity[2]})
        sha = (known.get((path.name, *stamp.values())) or storage.sha256(path)[0])
        key.append({"file": path.name, **stamp, "sha256": sha})
    return key


def same_preprocessing(old_key: Any, new_key: Any) -> bool:
    """Were two harvest keys (files_key, folder_key) taken with the same preprocessing
    signature (so the stored pixels and features are still what the tagger computes)?"""
    def signature(key: Any) -> str | None:
        entries = key if isinstance(key, list) else [key]
        return next((e["preprocess"] for e in entries if isinstance(e, dict)
                     and "preprocess" in e), None)

    return old_key is not None and signature(old_key) == signature(new_key)


def folder_key(folder: Path, encoder: str | None = None) -> dict:
    """The manifest's hash plus the name, size and mtime of every image, and the
    preprocessing signature (with the encoder's)."""
    images = folder / "images"
    listing = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                     for p in images.iterdir()) if images.is_dir() else []
    return {"manifest_sha256": sha256_file(folder / "manifest.csv"),
            "images_sha256": hashlib.sha256(json.dumps(listing).encode()).hexdigest(),
            "preprocess": preprocess_signature(encoder)}
