"""Publish a partition: the staged shards become the day's rows of the tagged Delta table in
one commit (tagging.catalogue.table), with the day's manifest: model version, input files
with SHA-256 and row counts, counts, live quality, the day's columns.

Re-publishing what is already published (same model, same input bytes, same review
answers) commits nothing, also when another run published it a moment before. The day's
review answers are applied on the way (tagging.catalogue.answers: a person's answer wins
over the model's tag in what search reads; the manifest's `reviews` says which answers);
live quality is measured on the model's own tags, before them (`staged_quality`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Iterator
from datetime import UTC, datetime
from typing import TypedDict

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tagging import storage
from tagging.catalogue.answers import DayAnswers
from tagging.catalogue.layout import input_files, published_dir, staging_day
from tagging.catalogue.published import read_manifest
from tagging.catalogue.quality import live_quality
from tagging.catalogue.table import commit_day
from tagging.errors import PartitionInvalid
from tagging.schema import INPUT_KEY, parse_time
from tagging.settings import TaggingLimits
from tagging.storage import Root, as_root

log = logging.getLogger(__name__)


class InputFile(TypedDict):
    file: str
    sha256: str
    rows: int


class Counts(TypedDict):
    rows: int
    tagged: int
    errors: int
    needs_review: int


def parquet_file(obj: Root | str) -> pq.ParquetFile:
    return pq.ParquetFile(storage.open_input(obj), pre_buffer=False)


def input_checksums(catalogue_root: Root | str, date: str) -> list[InputFile]:
    return [{"file": p.name, "sha256": storage.sha256(p)[0],
             "rows": parquet_file(p).metadata.num_rows}
            for p in input_files(catalogue_root, date)]


def is_published(catalogue_root: Root | str, date: str, model_version: str) -> bool:
    """True when the partition is published by this model version from the same input files."""
    manifest = read_manifest(catalogue_root, date)
    return manifest is not None and _same(manifest, model_version,
                                          input_checksums(catalogue_root, date))


def _same(manifest: dict | None, model_version: str, inputs: list[InputFile]) -> bool:
    return bool(manifest and manifest["model_version"] == model_version
                and manifest["inputs"] == inputs)


def publish_partition(catalogue_root: Root | str, date: str, *, staged: list[str],
                      model_version: str, tagged_at: str,
                      trained_on: Collection[str] | None = None) -> str:
    """Publish staged shards as the day's rows of the tagged table in one commit; returns
    where the day is (tagged/dt=DATE, inside the table).

    trained_on: the version's train-side product ids, so live quality grades only rows it
    did not train on (None: the holdout side only). Each commit is on the publication
    record (tagging.catalogue.publications).
    """
    root = as_root(catalogue_root)
    shards = sorted((as_root(s) for s in staged), key=lambda s: s.url)
    if not shards:
        raise PartitionInvalid(f"{date}: nothing staged to publish")
    inputs = staged_inputs(date, shards)
    answers = DayAnswers.load(root, date)
    out_schema = answers.schema(parquet_file(shards[0]).schema_arrow).remove_metadata()
    manifest = {
        "partition": date, "model_version": model_version,
        "tagged_at": parse_time(tagged_at).isoformat(),
        "published_at": datetime.now(UTC).isoformat(),
        "inputs": inputs, "counts": _counts(shards, answers),
        "quality": staged_quality(shards, answers, trained_on),
        "reviews": answers.manifest(),
        "columns": out_schema.names,
    }

    def rows() -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(out_schema, _batches(shards, out_schema,
                                                                      answers))

    version = commit_day(root, date, rows, manifest,
                         current=lambda now: _same(now, model_version, inputs)
                         and _reviews_sha256(now) == answers.sha256)
    log.info("published %s (table version %s): %s", published_dir(root, date), version,
             manifest["counts"])
    for run_dir in {s.parent for s in shards}:
        storage.delete_prefix(run_dir)
    collect_staging(root, date)
    return str(published_dir(root, date))


def _reviews_sha256(manifest: dict | None) -> str | None:
    return ((manifest or {}).get("reviews") or {}).get("sha256")


def _batches(shards: list[Root], schema: pa.Schema,
             answers: DayAnswers) -> Iterator[pa.RecordBatch]:
    """The staged rows with the day's answers applied, batch by batch (memory stays flat)."""
    for shard in shards:
        for batch in parquet_file(shard).iter_batches(batch_size=1024):
            yield from answers.apply(pa.Table.from_batches([batch])).cast(schema).to_batches()


def _counts(shards: list[Root], answers: DayAnswers) -> Counts:
    """Counts of the rows as published (answers applied), from the few columns they need."""
    counts = Counts(rows=0, tagged=0, errors=0, needs_review=0)
    for shard in shards:
        source = parquet_file(shard)
        table = answers.apply(source.read(columns=[
            c for c in source.schema_arrow.names if c in answers.COLUMNS or c == "tag_error"]))
        errors = table.num_rows - table["tag_error"].null_count
        counts["rows"] += table.num_rows
        counts["errors"] += errors
        counts["tagged"] += table.num_rows - errors
        counts["needs_review"] += pc.sum(table["needs_review"]).as_py() or 0
    return counts


def staged_quality(staged: list[Root], answers: DayAnswers,
                   trained_on: Collection[str] | None = None) -> dict:
    """Live quality of the model's own tags (the staged shards, before the answers are
    applied), on the day's unbiased truth: `verified_category` from the input, else the
    answer to an audit question. Answers to rows the model flagged are left out: those are
    the hard photos. Only products the version did not train on are graded (`trained_on`:
    its train side; None: the holdout side only; tagging.catalogue.quality.live_quality)."""
    names = parquet_file(staged[0]).schema_arrow.names if staged else []
    columns = [c for c in ("product_id", "category", "needs_review", "verified_category")
               if c in names]
    if not staged or "category" not in columns:
        return live_quality(pa.table({"category": pa.array([], pa.string()),
                                      "needs_review": pa.array([], pa.bool_())}))
    table = pa.concat_tables(parquet_file(s).read(columns=columns) for s in staged)
    audit = answers.audited()
    given = (table["verified_category"].to_pylist() if "verified_category" in columns
             else [None] * table.num_rows)
    truth = [str(g) if g is not None else audit.get(p)
             for g, p in zip(given, table["product_id"].to_pylist(), strict=True)]
    return live_quality(table.select(["product_id", "category", "needs_review"]).append_column(
        "verified_category", pa.array(truth, pa.string())), trained_on)


def staged_inputs(date: str, staged: list[Root]) -> list[InputFile]:
    """The input files the staged shards were tagged from, as their metadata records them
    (the SHA-256 of the bytes read, not of whatever the input folder holds now); every row
    of each file staged exactly once."""
    files: dict[str, InputFile] = {}
    staged_rows: dict[str, int] = {}
    seen: set[tuple[str, tuple[int, ...]]] = set()
    for path in staged:
        source = parquet_file(path)
        metadata = source.schema_arrow.metadata or {}
        if INPUT_KEY not in metadata:
            raise PartitionInvalid(f"{path}: not a staged shard (no {INPUT_KEY.decode()} "
                                   "metadata)")
        origin = json.loads(metadata[INPUT_KEY])
        name, groups = origin["file"], tuple(origin["row_groups"])
        if (name, groups) in seen:
            raise PartitionInvalid(f"{path}: row groups {list(groups)} of {name} staged twice")
        seen.add((name, groups))
        entry = files.setdefault(name, InputFile(file=name, sha256=origin["sha256"],
                                                 rows=origin["rows"]))
        if entry["sha256"] != origin["sha256"]:
            raise PartitionInvalid(f"{date}: shards of {name} were tagged from different "
                                   "contents of it (replaced during the run)")
        staged_rows[name] = staged_rows.get(name, 0) + source.metadata.num_rows
    for name, entry in files.items():
        if staged_rows[name] != entry["rows"]:
            raise PartitionInvalid(f"{date}: staged shards hold {staged_rows[name]} rows of "
                                   f"{name}, it has {entry['rows']}")
    return [files[name] for name in sorted(files)]


def collect_staging(root: Root | str, date: str,
                    max_age_s: float = TaggingLimits.staging_max_age_s) -> list[Root]:
    """Remove the day's staging folders of runs that died: nothing written in them for
    `max_age_s` (longer than any run: a DAG run between its shard tasks writes nothing for
    a while, hence the age). Returns the folders removed."""
    day = staging_day(root, date)
    runs: dict[Root, list[storage.ObjectInfo]] = {}
    for obj in storage.list_objects(day):
        run = obj.root
        while run.parent != day:
            run = run.parent
        runs.setdefault(run, []).append(obj)
    removed = []
    for run, objects in sorted(runs.items(), key=lambda r: r[0].url):
        if time.time() - max(o.mtime for o in objects) > max_age_s:
            storage.delete_prefix(run)
            log.warning("removed %s: staging left by a run that died", run)
            removed.append(run)
    return removed
