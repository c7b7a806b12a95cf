"""Tag one shard: stream record batches -> decode in worker processes -> encode -> predict
-> write.

Output columns follow the catalogue contract (DESIGN.md): every input column, then
OUTPUT_FIELDS (tagging.schema). No TensorFlow on this path: an encoder version's
features come from LiteRT (tagging.encoder), batched in this process; predictions from
tagging.model.inference (NumPy).
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tagging import storage
from tagging.catalogue.layout import image_root_for, shard_path
from tagging.catalogue.planning import Shard
from tagging.errors import PartitionInvalid, TaggingError
from tagging.memory import address_space_problem
from tagging.model.inference import Classifier, PhotoModel
from tagging.model.policy import needs_review
from tagging.photos.pool import CHUNK_ROWS, Chunk, DecodingPool, joined
from tagging.schema import (
    INPUT_KEY,
    OUTPUT_FIELDS,
    OUTPUT_NAMES,
    SLUGS,
    TAGGED_AT_TYPE,
    TOP3_TYPE,
    parse_time,
)

log = logging.getLogger(__name__)

READ_BATCH_ROWS = 1024  # rows per record batch read, predicted and written at once
# An encoder's input is 150 KB a photo (224 px RGB): smaller batches keep memory flat.
ENCODER_BATCH_ROWS = 256
IN_FLIGHT_BATCHES = 2  # record batches queued for the workers while one is predicted + written
STAGES = ("read", "decode", "wait", "encode", "predict", "write")  # ShardStats.seconds keys


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
                 image_root: storage.Root | Path | str, workers: int | None = None):
        if problem := address_space_problem():  # before any worker or runtime starts
            raise TaggingError(problem)
        form = classifier.model_input.photo_input
        # first: it refuses a daemonic process
        self.decoder = DecodingPool(image_root, workers, (form,))
        self.model = PhotoModel.of(classifier)
        self.classifier = classifier
        self.batch_rows = READ_BATCH_ROWS if form.kind == "pixels" else ENCODER_BATCH_ROWS
        # an explicit threshold replaces the model's policy
        self.review_policy = (dict(classifier.review_policy) if review_threshold is None
                              else {"confidence_threshold": float(review_threshold)})

    def __enter__(self) -> Tagger:
        return self

    def __exit__(self, *exc) -> None:
        self.decoder.__exit__(*exc)

    def _decoded(self, batches: Iterator[pa.RecordBatch], seconds: dict[str, float]
                 ) -> Iterator[tuple[pa.RecordBatch, np.ndarray, list[str | None]]]:
        """Record batches with their decoded pixels, in order, a bounded number in flight."""
        in_flight: deque[tuple[pa.RecordBatch, list[Chunk]]] = deque()
        while True:
            start = time.perf_counter()
            batch = next(batches, None)
            seconds["read"] += time.perf_counter() - start
            if batch is None:
                break
            # Python bytes, not Arrow slices: pickling a slice sends its whole parent buffer.
            images = column_or_nulls(batch, "image")
            uris = column_or_nulls(batch, "image_uri")
            chunks = [self.decoder.submit(images[i:i + CHUNK_ROWS], uris[i:i + CHUNK_ROWS])
                      for i in range(0, batch.num_rows, CHUNK_ROWS)]
            in_flight.append((batch, chunks))
            if len(in_flight) > IN_FLIGHT_BATCHES:
                yield self._collect(*in_flight.popleft(), seconds)
        while in_flight:
            yield self._collect(*in_flight.popleft(), seconds)

    def _collect(self, batch: pa.RecordBatch, chunks: list[Chunk], seconds: dict[str, float]):
        start = time.perf_counter()
        results = [self.decoder.result(chunk) for chunk in chunks]
        seconds["wait"] += time.perf_counter() - start
        seconds["decode"] += sum(r[2] for r in results)
        (rendered,), errors = joined(self.decoder.forms, results)
        ids = column_or_nulls(batch, "product_id")
        errors = [e if pid is not None else (e or "missing product_id")
                  for e, pid in zip(errors, ids, strict=True)]
        start = time.perf_counter()
        inputs = self.model.inputs(rendered, np.array([e is None for e in errors], bool))
        seconds["encode"] += time.perf_counter() - start
        return batch, inputs, errors

    def tag_columns(self, batch: pa.RecordBatch, inputs: np.ndarray,
                    errors: list[str | None], tagged_at: datetime) -> list[pa.Array]:
        """The output columns for one record batch (inputs: the classifier's, errors: per
        row, a missing product_id included)."""
        n = batch.num_rows
        failed = np.array([e is not None for e in errors], dtype=bool)
        probs = self.classifier.predict_proba(inputs) if n else np.zeros((0, 10), np.float32)
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
            pa.repeat(pa.scalar(tagged_at, TAGGED_AT_TYPE), n),
            pa.array(errors, pa.string()),
            pa.array(np.where(failed, None, "model"), pa.string()),  # publish may verify it
        ]

    def write_shard(self, shard: Shard, out_path: storage.Root | Path | str,
                    tagged_at: datetime,
                    on_rows: Callable[[int], None] | None = None) -> ShardStats:
        """Stream the shard's row groups through decode -> predict -> write; atomic output.

        The input must be the very object planned (same identity: inode, size and mtime of
        a file; ETag and size of an S3 object) before and after it is read, so the SHA-256
        the plan took, stored in the output's metadata for the manifest, is that of the
        bytes read; an object replaced since is an error, never tagged under the old hash.
        """
        source = storage.as_root(shard["file"])
        self._check_identity(shard, source)
        with storage.open_input(source) as handle:
            stats = self._write(handle, shard, storage.as_root(out_path), tagged_at, on_rows)
        self._check_identity(shard, source)
        return stats

    @staticmethod
    def _check_identity(shard: Shard, source: storage.Root) -> None:
        if storage.identity(source) != shard["identity"]:
            raise PartitionInvalid(f"{shard['file']}: changed since the run was planned "
                                   "(replaced or rewritten); a new run tags its content")

    def _write(self, handle: pa.NativeFile, shard: Shard, out_path: storage.Root,
               tagged_at: datetime, on_rows: Callable[[int], None] | None) -> ShardStats:
        # pre_buffer would keep every row group's column chunks of the shard cached until the
        # end: memory would grow with the shard; without it, one record batch at a time.
        source = pq.ParquetFile(handle, pre_buffer=False)
        origin = {"file": storage.as_root(shard["file"]).name, "sha256": shard["sha256"],
                  "rows": shard["file_rows"], "row_groups": shard["row_groups"]}
        schema = pa.schema(list(source.schema_arrow) + OUTPUT_FIELDS,
                           metadata={INPUT_KEY: json.dumps(origin)})
        batches = source.iter_batches(batch_size=self.batch_rows,
                                      row_groups=range(*shard["row_groups"]))
        stats = ShardStats()
        seconds = stats.seconds
        with storage.atomic_writer(out_path) as sink, \
                pq.ParquetWriter(sink, schema, **writer_options(schema)) as writer:
            for batch, inputs, errors in self._decoded(batches, seconds):
                start = time.perf_counter()
                columns = self.tag_columns(batch, inputs, errors, tagged_at)
                seconds["predict"] += time.perf_counter() - start
                start = time.perf_counter()
                writer.write_batch(pa.RecordBatch.from_arrays(
                    list(batch.columns) + columns, schema=schema))
                seconds["write"] += time.perf_counter() - start
                stats.rows += batch.num_rows
                errors_column = columns[OUTPUT_NAMES.index("tag_error")]
                stats.errors += len(errors_column) - errors_column.null_count
                stats.needs_review += pc.sum(
                    columns[OUTPUT_NAMES.index("needs_review")]).as_py() or 0
                if on_rows:
                    on_rows(batch.num_rows)
        return stats


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


def tag_shard_to_staging(shard: Shard, *, catalogue_root: storage.Root | Path | str,
                         registry_root: storage.Root | Path | str, model_version: str,
                         run_id: str,
                         tagged_at: str, review_threshold: float | None = None,
                         workers: int | None = None) -> str:
    """Tag one shard with a pinned model version; returns the staged Parquet path."""
    out = shard_path(catalogue_root, shard["date"], run_id, shard["index"])
    classifier = Classifier.from_registry(registry_root, model_version)
    start = time.perf_counter()
    with Tagger(classifier, review_threshold=review_threshold, workers=workers,
                image_root=image_root_for(catalogue_root)) as tagger:
        stats = tagger.write_shard(shard, out, parse_time(tagged_at))
    log.info("shard %d: %d rows (%d errors, %d need review) in %.1f s (stages: %s) -> %s",
             shard["index"], stats.rows, stats.errors, stats.needs_review,
             time.perf_counter() - start, rounded(stats.seconds), out)
    return str(out)


def rounded(seconds: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in seconds.items()}
