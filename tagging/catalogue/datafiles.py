"""A day's data files of the tagged table, written by us and streamed batch by batch (memory
stays flat however large the day): `dt=D/part-<uuid>.parquet` under the table root, each
one appearing whole or not at all (tagging.storage's atomic writer), without the partition
column (Delta keeps it in the add action), and the Delta add actions that commit them.

delta-rs's write_deltalake held a whole day in memory before writing (deltalake 1.6.6:
peak RSS grew with the day's bytes); the commit itself stays delta-rs's
(tagging.catalogue.table).
"""

from __future__ import annotations

import io
import json
import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tagging import storage
from tagging.storage import Root

ROW_GROUP_ROWS = 1024
TARGET_FILE_BYTES = 128 * 1024 * 1024  # a new file once one is this large


def writer_options(schema: pa.Schema) -> dict[str, Any]:
    """zstd, row groups of 1,024 rows (readers stream them); photo bytes are already
    compressed: no dictionary or statistics for binary columns."""
    binary = {f.name for f in schema
              if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)}
    buffer = io.BytesIO()
    pq.write_table(schema.empty_table(), buffer)
    others = [c.path for c in pq.ParquetFile(buffer).schema if c.path not in binary]
    return {"compression": "zstd", "use_dictionary": others, "write_statistics": others}


def write_day_files(table_root: Root, partition_key: str, date: str,
                    rows: pa.RecordBatchReader,
                    target_bytes: int = TARGET_FILE_BYTES) -> list[Any]:
    """Write `rows` as the day's data files (at least one, rolling at `target_bytes`);
    their add actions, paths relative to `table_root`."""
    groups = row_groups(rows)
    group = next(groups, None)
    options = writer_options(rows.schema)
    adds = []
    while not adds or group is not None:
        name = f"{partition_key}={date}/part-{uuid.uuid4()}.parquet"
        with storage.atomic_writer(table_root / name) as sink:
            with pq.ParquetWriter(sink, rows.schema, **options) as writer:
                while group is not None and sink.tell() < target_bytes:
                    writer.write_table(group, row_group_size=ROW_GROUP_ROWS)
                    group = next(groups, None)
            size = sink.tell()
        adds.append(add_action(name, size, {partition_key: date}, writer.writer.metadata,
                               rows.schema))
    return adds


def row_groups(rows: pa.RecordBatchReader, size: int = ROW_GROUP_ROWS) -> Iterator[pa.Table]:
    """The stream regrouped into tables of `size` rows, the last one shorter (a written
    table is a row group of its own, however few rows its batches have)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in rows:
        pending.append(batch)
        count += batch.num_rows
        while count >= size:
            table = pa.Table.from_batches(pending, rows.schema)
            yield table.slice(0, size)
            rest = table.slice(size)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(pending, rows.schema)


def add_action(path: str, size: int, partition_values: dict[str, str],
               metadata: pq.FileMetaData, schema: pa.Schema) -> Any:
    """The Delta add action of a written file, its stats from the file's footer."""
    from deltalake.transaction import AddAction

    return AddAction(path=path, size=size, partition_values=partition_values,
                     modification_time=int(time.time() * 1000), data_change=True,
                     stats=json.dumps(file_stats(metadata, schema)))


def file_stats(metadata: pq.FileMetaData, schema: pa.Schema) -> dict[str, Any]:
    """Delta file statistics: numRecords, nullCount of the top-level primitive columns,
    and minValues/maxValues of their numbers, strings and booleans (the exact values Parquet
    recorded; a column without them in every row group has none)."""
    exact = {f.name for f in schema if pa.types.is_integer(f.type)
             or pa.types.is_floating(f.type) or pa.types.is_string(f.type)
             or pa.types.is_large_string(f.type) or pa.types.is_boolean(f.type)}
    nulls: dict[str, int] = {}
    lows: dict[str, list[Any]] = {}
    highs: dict[str, list[Any]] = {}
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        for c in range(group.num_columns):
            column = group.column(c)
            name, stats = column.path_in_schema, column.statistics
            if name not in schema.names or stats is None:
                continue
            if stats.has_null_count:
                nulls[name] = nulls.get(name, 0) + stats.null_count
            if name in exact and stats.has_min_max:
                lows.setdefault(name, []).append(stats.min)
                highs.setdefault(name, []).append(stats.max)
            elif name in exact and stats.num_values:
                exact.discard(name)  # values without recorded bounds: no bounds at all
    bounded = [n for n in lows if n in exact and all(_finite(v) for v in lows[n] + highs[n])]
    return {"numRecords": metadata.num_rows, "nullCount": nulls,
            "minValues": {n: min(lows[n]) for n in bounded},
            "maxValues": {n: max(highs[n]) for n in bounded}}


def _finite(value: Any) -> bool:
    return not isinstance(value, float) or math.isfinite(value)
