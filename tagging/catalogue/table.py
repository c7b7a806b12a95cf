"""The tagged output as ONE Delta Lake table, `<catalogue>/tagged`, partitioned by `dt`.

The same code on local disk and on S3 (tagging.storage gives the storage options and the
pyarrow filesystem). Publishing a day is one Delta commit replacing that day's rows
(`mode="overwrite"` of the partition dt=D): a reader sees the old complete day or the new
one. We write the day's data files ourselves, streamed (tagging.catalogue.datafiles), and
delta-rs commits them (`create_write_transaction`). The day's manifest (inputs with
SHA-256, counts, live quality, model version) is

- written first as its own create-only object `tagged/_manifests/dt=D/<n>.json`
  (underscore: no Delta reader or vacuum looks there), and
- referenced by the commit itself: the commit carries the Delta app transaction
  `tagging/dt=D` = n (part of every later snapshot, checkpoints included, so the pointer
  survives log clean-up), and a copy of the manifest in its commitInfo (`history`).

So the day's manifest is found atomically with its rows (`read_manifest`), and a publish
killed before its commit leaves an unreferenced manifest and unreferenced data files that
no reader sees (vacuum removes the files after the retention period).

Concurrency is delta-rs's: commits are create-only writes of the next log entry; a
publisher of another day is retried by delta-rs's conflict checker; a publisher of the
same day loses with CommitFailedError, and `commit_day` re-reads the day (nothing to do if
the winner published the same thing) and tries again, a bounded number of times. So does
a re-publish of another day: a commit of file actions reads the whole table for delta-rs
(no predicate), so files removed by any concurrent commit conflict with it.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from tagging import storage
from tagging.catalogue.datafiles import write_day_files
from tagging.catalogue.publications import record_publication
from tagging.errors import ObjectExists, PartitionInvalid, PartitionNotFound, StorageError
from tagging.settings import TableLimits
from tagging.storage import Root, as_root

log = logging.getLogger(__name__)

TABLE = "tagged"
PARTITION_KEY = "dt"
MANIFESTS = "_manifests"
# commitInfo keys of our commits (custom metadata)
OPERATION, PARTITION, MANIFEST = "tagging.operation", "tagging.partition", "tagging.manifest"
COMMIT_ID = "tagging.commit"  # one per commit: which table version was ours

Batches = Callable[[], pa.RecordBatchReader]
LIMITS = TableLimits()


def table_root(catalogue: Root | str) -> Root:
    return as_root(catalogue) / TABLE  # = layout.tagged_root


def app_id(date: str) -> str:
    """The Delta app transaction whose version points at the day's manifest object."""
    return f"tagging/{PARTITION_KEY}={date}"


def manifest_object(catalogue: Root | str, date: str, pointer: int) -> Root:
    return table_root(catalogue) / MANIFESTS / f"{PARTITION_KEY}={date}" / f"{pointer:020d}.json"


def table_config(limits: TableLimits = LIMITS) -> dict[str, str]:
    """Set when the table is created: change data feed on (search's incremental feed),
    removed files and log entries kept `retention_days` (time travel, restore)."""
    interval = f"interval {limits.retention_days} days"
    return {"delta.enableChangeDataFeed": "true",
            "delta.deletedFileRetentionDuration": interval,
            "delta.logRetentionDuration": interval,
            "delta.checkpointInterval": str(limits.checkpoint_interval)}


def open_table(catalogue: Root | str, version: int | None = None):
    """The table (at `version`), or None when nothing was ever published."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    root = table_root(catalogue)
    storage.check_reachable(root)
    try:
        with storage.storage_errors(root):
            return DeltaTable(root.url, version=version,
                              storage_options=storage.delta_options(root))
    except TableNotFoundError:
        return None
    except Exception as e:  # deltalake's own errors for a version out of range, etc.
        if version is not None and "version" in str(e).lower():
            raise PartitionNotFound(f"{root}: no table version {version} (there is none, or "
                                    "it is older than the retention period)") from None
        raise


def _pointer(table, date: str) -> int | None:
    return table.transaction_version(app_id(date)) if table is not None else None


def read_manifest(catalogue: Root | str, date: str, *, version: int | None = None,
                  table=None) -> dict[str, Any] | None:
    """The manifest of the day's current publication (as of table `version`), or None."""
    table = table if table is not None else open_table(catalogue, version)
    pointer = _pointer(table, date)
    if pointer is None:
        return None
    return json.loads(storage.read_bytes(manifest_object(catalogue, date, pointer)))


def published_days(catalogue: Root | str) -> list[str]:
    """The days with a publication, oldest first."""
    table = open_table(catalogue)
    if table is None:
        return []
    prefix = table_root(catalogue) / MANIFESTS
    days = {o.root.parent.name.removeprefix(f"{PARTITION_KEY}=")
            for o in storage.list_objects(prefix)}
    return sorted(d for d in days if _pointer(table, d) is not None)


def day_dataset(catalogue: Root | str, date: str, *, version: int | None = None,
                table=None) -> pads.Dataset:
    """The day's files as a pyarrow dataset read with pyarrow's own filesystem (never the
    Python-backed one deltalake makes by default: see `read_day`)."""
    table = table if table is not None else open_table(catalogue, version)
    if table is None or _pointer(table, date) is None:
        raise PartitionNotFound(f"{table_root(catalogue)}: {date} is not published")
    fs, path = storage.arrow_fs(table_root(catalogue))
    return table.to_pyarrow_dataset(file_pruning_predicate=f"{PARTITION_KEY} = '{date}'",
                                    filesystem=pafs.SubTreeFileSystem(path, fs))


def read_day(catalogue: Root | str, date: str, columns: list[str] | None = None, *,
             version: int | None = None) -> pa.Table:
    """The published rows of a day: its own columns (as published), or `columns`.

    Read through pyarrow's native filesystem: deltalake's default (a PyFileSystem over its
    Rust store) kept alive until interpreter exit aborted the process now and then
    ("terminate called without an active exception", rc 134; 2 of 30 runs here, 0 of 30
    with a native filesystem).
    """
    table = open_table(catalogue, version)
    manifest = read_manifest(catalogue, date, table=table)
    dataset = day_dataset(catalogue, date, table=table)
    wanted = columns or (manifest or {}).get("columns") or [
        n for n in dataset.schema.names if n != PARTITION_KEY]
    with storage.storage_errors(table_root(catalogue)):
        return dataset.to_table(columns=wanted)


def iter_day(catalogue: Root | str, date: str, *, version: int | None = None,
             batch_size: int = 1024) -> pa.RecordBatchReader:
    """The day's rows (its own columns) as a stream of record batches."""
    table = open_table(catalogue, version)
    manifest = read_manifest(catalogue, date, table=table) or {}
    dataset = day_dataset(catalogue, date, table=table)
    columns = manifest.get("columns") or [n for n in dataset.schema.names
                                          if n != PARTITION_KEY]
    scanner = dataset.scanner(columns=columns, batch_size=batch_size)
    return scanner.to_reader()


def merged_schema(table, day: pa.Schema, root: Root):
    """The table's schema with the day's new columns after its own (Delta types); a column
    the day has with another type than the table's is refused."""
    from deltalake import Schema

    fields = {f.name: f for f in table.schema().fields}
    added = []
    for field in Schema.from_arrow(day).fields:
        if field.name not in fields:
            added.append(field)
        elif field.type != fields[field.name].type:
            ours, theirs = (getattr(t, "type", t) for t in (field.type, fields[field.name].type))
            raise PartitionInvalid(f"{root}: column {field.name} is {ours} in the day, "
                                   f"{theirs} in the table")
    return Schema([*table.schema().fields, *added])


def commit_day(catalogue: Root | str, date: str, rows: Batches, manifest: dict[str, Any], *,
               operation: str = "publish",
               current: Callable[[dict[str, Any] | None], bool] | None = None,
               limits: TableLimits = LIMITS) -> int | None:
    """Replace the day's rows with `rows()` in one commit that carries `manifest`.

    current(manifest_now): True when the day as published now already is what we would
    publish (checked first, and again after losing a race to another publisher of the
    day): then nothing is committed and None is returned. Otherwise the new table version.
    """
    from deltalake import CommitProperties, Transaction
    from deltalake.exceptions import CommitFailedError

    root = table_root(catalogue)
    if open_table(catalogue) is None:
        _create(catalogue, limits)
    files: list | None = None  # the day's data files: written once, for every attempt
    lost = 0  # commits lost to another publisher of the same day
    for attempt in range(1, limits.commit_attempts + limits.commit_retries + 1):
        table = open_table(catalogue)
        now = read_manifest(catalogue, date, table=table)
        if current is not None and current(now):
            log.info("%s: %s is already published as wanted: no new commit", root, date)
            _discard(root, files)
            return None
        if files is None:
            reader = rows()
        schema = merged_schema(table, reader.schema, root)
        if _needs_timestamp_ntz(table, schema):
            _add_timestamp_ntz(catalogue)
            continue
        pointer = _write_manifest(catalogue, date, manifest, after=_pointer(table, date))
        if files is None:
            with storage.storage_errors(root):
                files = write_day_files(root, PARTITION_KEY, date, reader)
        commit_id = uuid.uuid4().hex
        properties = CommitProperties(
            custom_metadata={OPERATION: operation, PARTITION: date, COMMIT_ID: commit_id,
                             MANIFEST: json.dumps(manifest, sort_keys=True)},
            app_transactions=[Transaction(app_id=app_id(date), version=pointer)],
            max_commit_retries=limits.commit_retries)
        try:
            with storage.storage_errors(root):
                # the table as checked above, not the URL: delta-rs then checks our commit
                # against every commit since that check (with the URL it re-read the table,
                # and a same-day publish in between committed twice)
                table.create_write_transaction(
                    files, mode="overwrite", schema=schema,
                    partition_by=[PARTITION_KEY],
                    partition_filters=[(PARTITION_KEY, "=", date)],
                    commit_properties=properties)
        except CommitFailedError as e:
            # another publisher of the day, or (delta-rs reads the whole table for a commit
            # of file actions) a re-publish of another day: only the first kind counts
            same_day = _pointer(open_table(catalogue), date) != _pointer(table, date)
            lost += same_day
            log.warning("%s: a concurrent commit %s conflicted with ours (attempt %d): %s",
                        root, f"of {date}" if same_day else "of another day", attempt,
                        str(e).splitlines()[0])
            if lost == limits.commit_attempts:
                break
            time.sleep(random.uniform(0, 0.05 * attempt))  # racers do not retry in step
            continue
        except StorageError:
            raise
        except Exception as e:  # delta-rs reports a failed request as OSError or its own
            raise storage.describe(e, root) from e
        version = _version_of(catalogue, commit_id)
        log.info("%s: %s %s as table version %d", root, operation, date, version)
        record_publication(catalogue, manifest, version)  # what search sees changed
        maintain(catalogue, limits)
        return version
    _discard(root, files)
    raise PartitionInvalid(
        f"{root}: {date} was published by other runs {lost} times, and the table changed "
        f"under {attempt} attempts, while this one tried: refusing to publish over them; "
        "re-run when they are done")


def _needs_timestamp_ntz(table, schema) -> bool:
    """A timestamp without time zone needs the table feature; write_deltalake added it in
    its commit, create_write_transaction does not (it commits a table no reader opens)."""
    features = table.protocol().writer_features or []
    return '"timestamp_ntz"' in schema.to_json() and "timestampNtz" not in features


def _add_timestamp_ntz(catalogue: Root | str) -> None:
    """Enable timestampNtz in a commit of its own (another publisher may do it too)."""
    from deltalake import TableFeatures

    try:
        with storage.storage_errors(table_root(catalogue)):
            # the table's features then are listed: the change data feed's too (config on)
            open_table(catalogue).alter.add_feature(
                [TableFeatures.TimestampWithoutTimezone, TableFeatures.ChangeDataFeed],
                allow_protocol_versions_increase=True)
    except StorageError:
        raise
    except Exception as e:  # a concurrent commit: the next attempt sees the table anew
        log.warning("%s: enabling timestampNtz: %s", table_root(catalogue), e)


def _discard(root: Root, files: list | None) -> None:
    """Delete data files written for a commit that will not be made (nothing refers to
    them)."""
    for add in files or []:
        storage.delete(root / add.path)


def _version_of(catalogue: Root | str, commit_id: str) -> int:
    """The table version of our commit (others may have committed after it), read from the
    log entries themselves: history()'s version numbers were seen off by one while another
    publisher committed."""
    log_dir = table_root(catalogue) / "_delta_log"
    latest = open_table(catalogue).version()
    for version in range(latest, max(-1, latest - 50), -1):
        entry = storage.read_bytes(log_dir / f"{version:020d}.json").decode()
        infos = [json.loads(line).get("commitInfo") or {} for line in entry.splitlines()
                 if line.strip()]
        if any(info.get(COMMIT_ID) == commit_id for info in infos):
            return version
    raise PartitionInvalid(f"{table_root(catalogue)}: commit {commit_id} not in the last 50 "
                           "versions of the table")


def _create(catalogue: Root | str, limits: TableLimits) -> None:
    """Create the empty table (product_id and dt; each day's columns merge in). Its own
    commit first: publishers racing to create it with their rows were seen to mix (the
    losers of version 0 appended at version 1 without a conflict check). Version 0 only,
    never retried: a racer that loses it does not commit a second CREATE TABLE (delta-rs
    retried it as version 1, which rewrote the metadata under the other publishers)."""
    from deltalake import CommitProperties, DeltaTable

    root = table_root(catalogue)
    schema = pa.schema([("product_id", pa.string()), (PARTITION_KEY, pa.string())])
    try:
        with storage.storage_errors(root):
            DeltaTable.create(root.url, schema, partition_by=[PARTITION_KEY], mode="ignore",
                              configuration=table_config(limits),
                              storage_options=storage.delta_options(root),
                              commit_properties=CommitProperties(max_commit_retries=0))
    except Exception as e:  # another publisher created it first
        if open_table(catalogue) is None:
            raise storage.describe(e, root) from e


def _write_manifest(catalogue: Root | str, date: str, manifest: dict[str, Any], *,
                    after: int | None) -> int:
    """Store the manifest create-only under a new pointer (> the current one); its pointer."""
    pointer = max(time.time_ns() // 1000, (after or 0) + 1)
    body = json.dumps(manifest, indent=2, sort_keys=True).encode()
    while True:
        try:
            storage.write_bytes(manifest_object(catalogue, date, pointer), body,
                                create_only=True)
            return pointer
        except ObjectExists:
            pointer += 1


def maintain(catalogue: Root | str, limits: TableLimits = LIMITS) -> None:
    """After a publish: delete files superseded more than `retention_days` ago (and data
    files of publishes that died before their commit, once as old), and expired log
    entries. Best effort: a failure is logged, the publication stands."""
    table = open_table(catalogue)
    try:
        with storage.storage_errors(table_root(catalogue)):
            hours = limits.retention_days * 24
            if table.vacuum(retention_hours=hours, dry_run=True, full=True):
                removed = table.vacuum(retention_hours=hours, dry_run=False, full=True)
                log.info("vacuum: removed %d files older than %d days", len(removed),
                         limits.retention_days)
            table.cleanup_metadata()
    except StorageError as e:
        log.warning("table maintenance skipped: %s", e)


def history(catalogue: Root | str, date: str | None = None) -> list[dict[str, Any]]:
    """Commits of the table (of one day), newest first: version, time, operation, and for
    ours the model version, counts and what a restore restored from."""
    table = open_table(catalogue)
    if table is None:
        return []
    entries = []
    for commit in table.history():
        day = commit.get(PARTITION)
        if date is not None and day != date:
            continue
        manifest = json.loads(commit[MANIFEST]) if MANIFEST in commit else {}
        entries.append({
            "version": commit["version"],
            "time": datetime.fromtimestamp(commit["timestamp"] / 1000, UTC).isoformat(),
            "operation": commit.get(OPERATION, commit.get("operation")),
            "partition": day, "model_version": manifest.get("model_version"),
            "counts": manifest.get("counts"), "restored_from": manifest.get("restored_from"),
        })
    return entries


def restore_day(catalogue: Root | str, date: str, version: int) -> int | None:
    """Restore the day's rows and manifest as of table `version` as a new commit (the
    rollback after a bad model); returns the new table version."""
    old = read_manifest(catalogue, date, version=version)
    if old is None:
        raise PartitionNotFound(f"{table_root(catalogue)}: {date} was not published at "
                                f"table version {version}")
    manifest = {**old, "restored_from": version,
                "restored_at": datetime.now(UTC).isoformat()}
    return commit_day(catalogue, date, lambda: iter_day(catalogue, date, version=version),
                      manifest, operation="restore")


def changes(catalogue: Root | str, since: int) -> dict[str, Any]:
    """What changed after table version `since`: per version the day and the rows inserted
    and deleted (Delta's change data feed, which delta-rs derives for these overwrites from
    the commits' add and remove actions: it writes no _change_data files for them)."""
    table = open_table(catalogue)
    if table is None:
        raise PartitionNotFound(f"{table_root(catalogue)}: no table yet")
    latest = table.version()
    if since >= latest:
        return {"since": since, "latest": latest, "days": {}}
    try:
        feed = pa.RecordBatchReader.from_stream(table.load_cdf(
            starting_version=since + 1,
            columns=["product_id", PARTITION_KEY, "_change_type", "_commit_version"])
        ).read_all()
    except Exception as e:  # deltalake's and pyarrow's errors alike
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise PartitionInvalid(
            f"{table_root(catalogue)}: no change feed from version {since + 1} ({first}); "
            "files older than the retention period are vacuumed: read the whole table "
            "instead") from e
    days: dict[str, dict[str, Any]] = {}
    for row in feed.select([PARTITION_KEY, "_change_type", "_commit_version"]).to_pylist():
        day = days.setdefault(row[PARTITION_KEY], {"versions": set(), "insert": 0, "delete": 0})
        day["versions"].add(row["_commit_version"])
        kind = "insert" if row["_change_type"] == "insert" else "delete"
        day[kind] += 1
    return {"since": since, "latest": latest,
            "days": {d: {**v, "versions": sorted(v["versions"])}
                     for d, v in sorted(days.items())}}
