"""Tag one day's catalogue partition: plan shards, tag them, publish atomically, validate.

Layout under a catalogue root:
    incoming/dt=YYYY-MM-DD/*.parquet           input, never modified
    _staging/dt=YYYY-MM-DD/<run_id>/shard-N    one file per shard, written atomically
    tagged/.versions/dt=YYYY-MM-DD/<id>/       an immutable published copy + _MANIFEST.json
    tagged/dt=YYYY-MM-DD -> .versions/...      symlink, swapped atomically on publish
No TensorFlow on this path: predictions come from tagging.inference (NumPy).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tagging import config
from tagging.imaging import ImageError, load_image_uri, preprocess
from tagging.inference import Classifier
from tagging.labels import CATEGORY_SLUGS
from tagging.review import needs_review

log = logging.getLogger(__name__)

MANIFEST = "_MANIFEST.json"
READ_BATCH_ROWS = 1024  # rows per record batch read, predicted and written at once
CHUNK_ROWS = 32  # rows per task sent to a decoding worker (small: short tail at a shard's end)
IN_FLIGHT_BATCHES = 2  # record batches queued for the workers while one is predicted + written
STAGES = ("read", "decode", "wait", "predict", "write")  # ShardStats.seconds keys
TOP3_TYPE = pa.list_(pa.struct([("category", pa.string()), ("confidence", pa.float32())]))
OUTPUT_FIELDS = [
    pa.field("category", pa.string()),
    pa.field("category_id", pa.int8()),
    pa.field("category_confidence", pa.float32()),
    pa.field("category_top3", TOP3_TYPE),
    pa.field("needs_review", pa.bool_()),
    pa.field("model_version", pa.string()),
    pa.field("tagged_at", pa.timestamp("us", tz="UTC")),
    pa.field("tag_error", pa.string()),
]
OUTPUT_NAMES = [f.name for f in OUTPUT_FIELDS]


class PartitionNotFound(FileNotFoundError):
    """The partition has no input Parquet files."""


class PartitionInvalid(ValueError):
    """A published partition breaks the output contract or a quality limit."""


# ---------------------------------------------------------------- paths


def input_dir(catalogue_root: Path | str, date: str) -> Path:
    return Path(catalogue_root) / "incoming" / f"dt={date}"


def published_dir(catalogue_root: Path | str, date: str) -> Path:
    return Path(catalogue_root) / "tagged" / f"dt={date}"


def staging_dir(catalogue_root: Path | str, date: str, run_id: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    return Path(catalogue_root) / "_staging" / f"dt={date}" / safe


def input_files(catalogue_root: Path | str, date: str) -> list[Path]:
    files = sorted(input_dir(catalogue_root, date).glob("*.parquet"))
    if not files:
        raise PartitionNotFound(f"no input files in {input_dir(catalogue_root, date)}")
    return files


# ---------------------------------------------------------------- planning


def plan_shards(catalogue_root: Path | str, date: str, *,
                rows_per_shard: int = 20_000) -> list[dict]:
    """Split the partition into shards of whole row groups (about `rows_per_shard` rows each)."""
    shards: list[dict] = []
    for path in input_files(catalogue_root, date):
        meta = pq.ParquetFile(path).metadata
        start, rows = 0, 0
        for group in range(meta.num_row_groups):
            rows += meta.row_group(group).num_rows
            if rows >= rows_per_shard or group == meta.num_row_groups - 1:
                shards.append({"date": date, "index": len(shards), "file": str(path),
                               "row_groups": [start, group + 1], "rows": rows})
                start, rows = group + 1, 0
    log.info("partition %s: %d shards, %d rows", date, len(shards),
             sum(s["rows"] for s in shards))
    return shards


# ---------------------------------------------------------------- decoding (worker processes)


def decode_chunk(images: list[bytes | None], uris: list[str | None],
                 image_root: str) -> tuple[np.ndarray, list[str | None], float]:
    """Preprocess a chunk of rows; returns pixels (n, 28, 28), per-row errors, CPU seconds."""
    start = time.process_time()
    pixels = np.zeros((len(images), 28, 28), dtype=np.uint8)
    errors: list[str | None] = [None] * len(images)
    for i, (data, uri) in enumerate(zip(images, uris, strict=True)):
        try:
            if data is None and uri:
                data = load_image_uri(uri, Path(image_root))
            pixels[i] = preprocess(data)
        except ImageError as e:
            errors[i] = str(e)
        except Exception as e:  # a row must never take the batch down
            errors[i] = f"preprocessing failed: {type(e).__name__}: {e}"
    return pixels, errors, time.process_time() - start


def column_or_nulls(batch: pa.RecordBatch, name: str) -> list:
    if name in batch.schema.names:
        return batch.column(name).to_pylist()
    return [None] * batch.num_rows


# ---------------------------------------------------------------- tagging


@dataclass
class ShardStats:
    """Counts, and seconds per stage: main-process read / wait for decoding / predict / write,
    and `decode`: CPU seconds of the decoding workers, summed over them."""

    rows: int = 0
    errors: int = 0
    needs_review: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))


class Tagger:
    """A pinned model version plus warm decoding workers, reused across shards."""

    def __init__(self, classifier: Classifier, *, review_threshold: float | None = None,
                 image_root: Path, workers: int | None = None):
        self.classifier = classifier
        # an explicit threshold replaces the model's policy
        self.review_policy = (dict(classifier.review_policy) if review_threshold is None
                              else {"confidence_threshold": float(review_threshold)})
        self.workers = workers or os.cpu_count() or 1
        self.image_root = image_root
        self.pool = ProcessPoolExecutor(self.workers, mp_context=get_context("forkserver"))

    def __enter__(self) -> Tagger:
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(cancel_futures=True)

    def _decoded(self, batches: Iterator[pa.RecordBatch], seconds: dict[str, float]
                 ) -> Iterator[tuple[pa.RecordBatch, np.ndarray, list[str | None]]]:
        """Record batches with their decoded pixels, in order, a bounded number in flight."""
        in_flight: deque[tuple[pa.RecordBatch, list[Future]]] = deque()
        while True:
            start = time.perf_counter()
            batch = next(batches, None)
            seconds["read"] += time.perf_counter() - start
            if batch is None:
                break
            # Python bytes, not Arrow slices: pickling a slice sends its whole parent buffer.
            images = column_or_nulls(batch, "image")
            uris = column_or_nulls(batch, "image_uri")
            futures = [self.pool.submit(decode_chunk, images[i:i + CHUNK_ROWS],
                                        uris[i:i + CHUNK_ROWS], str(self.image_root))
                       for i in range(0, batch.num_rows, CHUNK_ROWS)]
            in_flight.append((batch, futures))
            if len(in_flight) > IN_FLIGHT_BATCHES:
                yield self._collect(*in_flight.popleft(), seconds)
        while in_flight:
            yield self._collect(*in_flight.popleft(), seconds)

    @staticmethod
    def _collect(batch: pa.RecordBatch, futures: list[Future], seconds: dict[str, float]):
        start = time.perf_counter()
        results = [f.result() for f in futures]
        seconds["wait"] += time.perf_counter() - start
        seconds["decode"] += sum(r[2] for r in results)
        pixels = np.concatenate([r[0] for r in results]) if results else np.zeros((0, 28, 28))
        errors = [e for r in results for e in r[1]]
        return batch, pixels, errors

    def tag_columns(self, batch: pa.RecordBatch, pixels: np.ndarray,
                    errors: list[str | None], tagged_at: datetime) -> list[pa.Array]:
        """The output columns for one record batch."""
        n = batch.num_rows
        ids = column_or_nulls(batch, "product_id")
        errors = [e if pid is not None else (e or "missing product_id")
                  for e, pid in zip(errors, ids, strict=True)]
        failed = np.array([e is not None for e in errors], dtype=bool)
        probs = self.classifier.predict_proba(pixels) if n else np.zeros((0, 10), np.float32)
        top = np.argsort(-probs, axis=1, kind="stable")[:, :3]
        best = top[:, 0]
        review = failed | needs_review(probs, self.review_policy)
        return [
            SLUGS.take(pa.array(best, mask=failed)),
            pa.array(best.astype(np.int8), pa.int8(), mask=failed),
            pa.array(probs[np.arange(n), best], pa.float32(), mask=failed),
            top3_column(top, np.take_along_axis(probs, top, axis=1), failed),
            pa.array(review, pa.bool_()),
            pa.repeat(pa.scalar(self.classifier.version, pa.string()), n),
            pa.repeat(pa.scalar(tagged_at, pa.timestamp("us", tz="UTC")), n),
            pa.array(errors, pa.string()),
        ]

    def tag_shard(self, shard: dict, out_path: Path, tagged_at: datetime,
                  on_rows: Callable[[int], None] | None = None) -> ShardStats:
        """Stream the shard's row groups through decode -> predict -> write; atomic output."""
        # pre_buffer would keep every row group's column chunks of the shard cached until the
        # end: memory would grow with the shard; without it, one record batch at a time.
        source = pq.ParquetFile(shard["file"], pre_buffer=False)
        clash = set(source.schema_arrow.names) & set(OUTPUT_NAMES)
        if clash:
            raise PartitionInvalid(f"{shard['file']}: input already has columns {sorted(clash)}")
        schema = pa.schema(list(source.schema_arrow) + OUTPUT_FIELDS)
        batches = source.iter_batches(batch_size=READ_BATCH_ROWS,
                                      row_groups=range(*shard["row_groups"]))
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(f".{out_path.name}.{uuid.uuid4().hex}.tmp")
        stats = ShardStats()
        seconds = stats.seconds
        try:
            with pq.ParquetWriter(tmp, schema, **writer_options(schema)) as writer:
                for batch, pixels, errors in self._decoded(batches, seconds):
                    start = time.perf_counter()
                    columns = self.tag_columns(batch, pixels, errors, tagged_at)
                    seconds["predict"] += time.perf_counter() - start
                    start = time.perf_counter()
                    writer.write_batch(pa.RecordBatch.from_arrays(
                        list(batch.columns) + columns, schema=schema))
                    seconds["write"] += time.perf_counter() - start
                    stats.rows += batch.num_rows
                    stats.errors += len(columns[-1]) - columns[-1].null_count
                    stats.needs_review += pc.sum(columns[4]).as_py() or 0
                    if on_rows:
                        on_rows(batch.num_rows)
            os.replace(tmp, out_path)
        finally:
            tmp.unlink(missing_ok=True)
        return stats


SLUGS = pa.array(CATEGORY_SLUGS, pa.string())


def top3_column(top: np.ndarray, confidence: np.ndarray, failed: np.ndarray) -> pa.Array:
    """list<struct<category, confidence>> of the three best classes; null where `failed`."""
    values = pa.StructArray.from_arrays(
        [SLUGS.take(pa.array(top.ravel())), pa.array(confidence.ravel(), pa.float32())],
        fields=list(TOP3_TYPE.value_type))
    offsets = pa.array(np.arange(0, 3 * len(top) + 1, 3, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, values, TOP3_TYPE, mask=pa.array(failed))


def writer_options(schema: pa.Schema) -> dict:
    """Parquet settings: photo bytes are already compressed, so no zstd, dictionary or
    statistics for binary columns (they only cost time); zstd for everything else."""
    binary = {f.name for f in schema if pa.types.is_binary(f.type)
              or pa.types.is_large_binary(f.type)}
    others = [c for c in parquet_columns(schema) if c not in binary]
    return {"compression": {c: "none" for c in binary} | dict.fromkeys(others, "zstd"),
            "use_dictionary": others, "write_statistics": others}


def parquet_columns(schema: pa.Schema) -> list[str]:
    """The Parquet leaf column paths of an Arrow schema (nested: `a.list.element.b`)."""
    buffer = io.BytesIO()
    pq.write_table(schema.empty_table(), buffer)
    return [column.path for column in pq.ParquetFile(buffer).schema]


def parse_time(value: str | datetime) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def tag_shard(shard: dict, *, catalogue_root: Path | str, registry_root: Path | str,
              model_version: str, run_id: str, tagged_at: str,
              review_threshold: float | None = None, workers: int | None = None) -> str:
    """Tag one shard with a pinned model version; returns the staged Parquet path."""
    out = staging_dir(catalogue_root, shard["date"], run_id) / f"shard-{shard['index']:05d}.parquet"
    classifier = Classifier.from_registry(registry_root, model_version)
    start = time.perf_counter()
    with Tagger(classifier, review_threshold=review_threshold, workers=workers,
                image_root=config.image_root(Path(catalogue_root))) as tagger:
        stats = tagger.tag_shard(shard, out, parse_time(tagged_at))
    log.info("shard %d: %d rows (%d errors, %d need review) in %.1f s (stages: %s) -> %s",
             shard["index"], stats.rows, stats.errors, stats.needs_review,
             time.perf_counter() - start, rounded(stats.seconds), out)
    return str(out)


# ---------------------------------------------------------------- publishing


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_checksums(catalogue_root: Path | str, date: str) -> list[dict]:
    return [{"file": p.name, "sha256": sha256_file(p),
             "rows": pq.ParquetFile(p).metadata.num_rows}
            for p in input_files(catalogue_root, date)]


def read_manifest(catalogue_root: Path | str, date: str) -> dict | None:
    path = published_dir(catalogue_root, date) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def is_published(catalogue_root: Path | str, date: str, model_version: str) -> bool:
    """True when the partition is published by this model version from the same input files."""
    manifest = read_manifest(catalogue_root, date)
    return bool(manifest and manifest["model_version"] == model_version
                and manifest["inputs"] == input_checksums(catalogue_root, date))


def publish_partition(catalogue_root: Path | str, date: str, *, staged: list[str],
                      model_version: str, tagged_at: str) -> Path:
    """Publish staged shards as tagged/dt=DATE in one atomic symlink swap."""
    root = Path(catalogue_root)
    inputs = input_checksums(root, date)
    staged_paths = sorted(Path(s) for s in staged)
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in staged_paths)
    expected = sum(i["rows"] for i in inputs)
    if rows != expected:
        raise PartitionInvalid(f"{date}: staged shards hold {rows} rows, input has {expected}")
    version_dir = root / "tagged" / ".versions" / f"dt={date}" / (
        datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:8])
    tmp_dir = version_dir.with_name(version_dir.name + ".tmp")
    tmp_dir.mkdir(parents=True)
    outputs, counts = [], {"rows": 0, "tagged": 0, "errors": 0, "needs_review": 0}
    for i, src in enumerate(staged_paths):
        dest = tmp_dir / f"part-{i:05d}.parquet"
        try:
            os.link(src, dest)
        except OSError:
            shutil.copy2(src, dest)
        table = pq.read_table(dest, columns=["tag_error", "needs_review"])
        errors = table.num_rows - table["tag_error"].null_count
        counts["rows"] += table.num_rows
        counts["errors"] += errors
        counts["tagged"] += table.num_rows - errors
        counts["needs_review"] += pc.sum(table["needs_review"]).as_py() or 0
        outputs.append({"file": dest.name, "rows": table.num_rows, "sha256": sha256_file(dest)})
    manifest = {
        "partition": date, "model_version": model_version,
        "tagged_at": parse_time(tagged_at).isoformat(),
        "published_at": datetime.now(UTC).isoformat(),
        "inputs": inputs, "outputs": outputs, "counts": counts,
    }
    (tmp_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    for path in [*tmp_dir.iterdir(), tmp_dir]:
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    os.rename(tmp_dir, version_dir)
    swap_symlink(published_dir(root, date), version_dir)
    log.info("published %s: %s", published_dir(root, date), counts)
    cleanup(root, date, keep=version_dir, staged_dirs={p.parent for p in staged_paths})
    return published_dir(root, date)


def swap_symlink(link: Path, target: Path) -> None:
    """Point `link` at `target` atomically (rename a fresh symlink over the old one)."""
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex}.link")
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)
    fd = os.open(link.parent, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def cleanup(root: Path, date: str, *, keep: Path, staged_dirs: set[Path]) -> None:
    """Drop published staging dirs, debris of crashed publishes, and all but two versions."""
    for d in staged_dirs:
        shutil.rmtree(d, ignore_errors=True)
    entries = sorted(keep.parent.iterdir(), key=lambda p: p.name)
    versions = [p for p in entries if not p.name.endswith(".tmp")]
    for old in [p for p in entries if p.name.endswith(".tmp")] + versions[:-2]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
    for link in root.joinpath("tagged").glob(f".dt={date}.*.link"):
        link.unlink(missing_ok=True)


# ---------------------------------------------------------------- validation


def validate_partition(catalogue_root: Path | str, date: str, *, max_error_rate: float = 0.05,
                       max_review_rate: float = 0.6) -> dict:
    """Check a published partition against its input and the quality limits."""
    manifest = read_manifest(catalogue_root, date)
    if manifest is None:
        raise PartitionInvalid(f"{published_dir(catalogue_root, date)}: not published")
    problems = []
    input_rows = sum(pq.ParquetFile(p).metadata.num_rows
                     for p in input_files(catalogue_root, date))
    parts = sorted(published_dir(catalogue_root, date).glob("part-*.parquet"))
    table = pq.read_table(parts, columns=["product_id", *OUTPUT_NAMES]) if parts else None
    rows = table.num_rows if table is not None else 0
    if rows != input_rows:
        problems.append(f"{rows} published rows, input has {input_rows}")
    for path in parts:
        schema = pq.read_schema(path)
        for wanted in OUTPUT_FIELDS:
            if wanted.name not in schema.names or schema.field(wanted.name).type != wanted.type:
                problems.append(f"{path.name}: column {wanted.name} missing or not {wanted.type}")
    counts = manifest["counts"]
    error_rate = counts["errors"] / max(counts["rows"], 1)
    review_rate = counts["needs_review"] / max(counts["rows"], 1)
    if error_rate > max_error_rate:
        problems.append(f"error rate {error_rate:.3f} > limit {max_error_rate}")
    if review_rate > max_review_rate:
        problems.append(f"needs-review rate {review_rate:.3f} > limit {max_review_rate}")
    if table is not None:
        ids = table["product_id"].drop_null()
        duplicates = pc.filter(pc.value_counts(ids).field("counts"),
                               pc.greater(pc.value_counts(ids).field("counts"), 1))
        if len(duplicates):
            problems.append(f"{len(duplicates)} product_id values occur more than once")
    report = {"partition": date, "rows": rows, "input_rows": input_rows,
              "error_rate": round(error_rate, 4), "review_rate": round(review_rate, 4),
              "model_version": manifest["model_version"], "problems": problems}
    if problems:
        raise PartitionInvalid(f"partition {date} failed validation: " + "; ".join(problems))
    log.info("partition %s valid: %s", date, report)
    return report


def truth_agreement(catalogue_root: Path | str, date: str) -> dict:
    """Accuracy of the published tags against a known label column, when the input has one.

    `verified_category` (merchandiser-confirmed) wins over `true_category` (demo data).
    Rows without a label or without a tag are left out; `unflagged` covers rows not
    marked needs_review.
    """
    parts = sorted(published_dir(catalogue_root, date).glob("part-*.parquet"))
    names = pq.read_schema(parts[0]).names if parts else []
    truth = next((c for c in ("verified_category", "true_category") if c in names), None)
    if truth is None:
        return {}
    table = pq.read_table(parts, columns=[truth, "category", "needs_review"])
    rows = table.filter(pc.and_(pc.is_valid(table[truth]), pc.is_valid(table["category"])))
    correct = pc.equal(rows[truth], rows["category"])
    unflagged = pc.invert(rows["needs_review"])
    n_unflagged = pc.sum(unflagged).as_py() or 0
    return {
        f"accuracy_vs_{truth}": round(pc.mean(correct).as_py() or 0.0, 4),
        "unflagged_precision": round(
            (pc.sum(pc.and_(correct, unflagged)).as_py() or 0) / max(n_unflagged, 1), 4),
        "unflagged_coverage": round(n_unflagged / max(rows.num_rows, 1), 4),
    }


# ---------------------------------------------------------------- all in one (CLI)


def tag_partition(catalogue_root: Path | str, date: str, *, registry_root: Path | str,
                  model: str = "champion", review_threshold: float | None = None,
                  workers: int | None = None, rows_per_shard: int = 20_000,
                  progress: bool = False) -> dict:
    """Plan, tag every shard with one warm worker pool, publish; returns a summary."""
    from rich.progress import Progress

    shards = plan_shards(catalogue_root, date, rows_per_shard=rows_per_shard)
    classifier = Classifier.from_registry(registry_root, model)
    tagged_at = datetime.now(UTC).replace(microsecond=0)
    run_id = f"cli-{tagged_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    start = time.perf_counter()
    staged, seconds = [], dict.fromkeys(STAGES, 0.0)
    with Tagger(classifier, review_threshold=review_threshold, workers=workers,
                image_root=config.image_root(Path(catalogue_root))) as tagger, \
            Progress(disable=not progress) as bar:
        task = bar.add_task(f"tagging {date}", total=sum(s["rows"] for s in shards))
        for shard in shards:
            out = staging_dir(catalogue_root, date, run_id) / f"shard-{shard['index']:05d}.parquet"
            stats = tagger.tag_shard(shard, out, tagged_at, lambda n: bar.advance(task, n))
            staged.append(str(out))
            seconds = {k: v + stats.seconds[k] for k, v in seconds.items()}
    elapsed = time.perf_counter() - start
    path = publish_partition(catalogue_root, date, staged=staged,
                             model_version=classifier.version, tagged_at=tagged_at.isoformat())
    manifest = read_manifest(catalogue_root, date)
    counts = manifest["counts"]
    return {"partition": date, "model_version": classifier.version, **counts,
            "seconds": round(elapsed, 2), "images_per_s": round(counts["rows"] / elapsed, 1),
            "stage_seconds": rounded(seconds), "output": str(path)}


def rounded(seconds: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in seconds.items()}
