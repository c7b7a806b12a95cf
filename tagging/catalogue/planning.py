"""Cut a partition into shards of whole row groups: the unit of work of one DAG task.

Planning is also where a day's input is checked, before anything is tagged: every file
readable as Parquet, one schema for the day, the contract's column types, no column the
output would overwrite. Each shard carries its file's SHA-256 and identity (inode, size,
mtime) as planned, so the tagger can prove it reads those very bytes and the manifest can
name them.
"""

from __future__ import annotations

import logging
from typing import NamedTuple, TypedDict

import pyarrow as pa
import pyarrow.parquet as pq

from tagging import storage
from tagging.catalogue.layout import PARTITION_KEY, input_files
from tagging.errors import PartitionInvalid
from tagging.schema import OUTPUT_NAMES
from tagging.settings import MAX_MAP_LENGTH_ENV, Settings, TaggingLimits

log = logging.getLogger(__name__)

# Contract columns (DESIGN.md) and the types they may have; a null-typed column (every value
# null) is accepted for the optional ones.
STRING = (pa.types.is_string, pa.types.is_large_string)
BINARY = (pa.types.is_binary, pa.types.is_large_binary)
COLUMN_TYPES = {"product_id": (STRING, "string"), "image": (BINARY, "binary"),
                "image_uri": (STRING, "string")}
RESERVED = (PARTITION_KEY, *OUTPUT_NAMES)


class Shard(TypedDict):
    """Row groups [start, stop) of one input file (travels through XCom as JSON)."""

    date: str
    index: int
    file: str
    row_groups: list[int]  # [start, stop)
    rows: int
    file_rows: int  # rows of the whole file
    sha256: str  # of the whole file, as planned
    identity: list  # of the object hashed (tagging.storage.identity)


def plan_shards(catalogue_root: storage.Root | str, date: str, *,
                rows_per_shard: int = TaggingLimits.rows_per_shard,
                max_shards: int = Settings.max_map_length) -> list[Shard]:
    """Check the day's input, then split it into shards of whole row groups (about
    `rows_per_shard` rows each).

    Never more than `max_shards` (Airflow's [core] max_map_length: a longer list cannot be
    mapped): the shard size grows until the plan fits, and a day with more input files
    than `max_shards` is a PartitionInvalid before anything is mapped.
    """
    files = input_files(catalogue_root, date)
    if len(files) > max_shards:
        raise PartitionInvalid(
            f"partition {date} has {len(files)} input files but at most {max_shards} shards "
            f"may be mapped (Airflow's [core] max_map_length, {MAX_MAP_LENGTH_ENV}): "
            "merge the files or raise the limit")
    inputs: list[_Input] = []
    first: tuple[storage.Root, pa.Schema] | None = None
    for path in files:
        sha256, identity = storage.sha256(path)
        with storage.open_input(path) as handle:
            try:
                source = pq.ParquetFile(handle)
            except (pa.ArrowException, OSError) as e:
                raise PartitionInvalid(f"{path}: not a readable Parquet file: {e}") from None
            schema, meta = source.schema_arrow, source.metadata
        if storage.identity(path) != identity:
            raise PartitionInvalid(f"{path}: replaced while it was planned; plan again")
        check_schema(path, schema)
        if first is None:
            first = (path, schema)
        else:
            check_same_schema(path, schema, *first)
        inputs.append(_Input(path, [meta.row_group(g).num_rows
                                    for g in range(meta.num_row_groups)],
                             meta.num_rows, sha256, identity))
    total = sum(i.file_rows for i in inputs)
    size = rows_per_shard
    shards = _cut(date, inputs, size)
    while len(shards) > max_shards:
        # Each shard holds >= size rows except the last of each file, so this fits soon.
        size = max(2 * size, -(-total // max_shards))
        shards = _cut(date, inputs, size)
    if size != rows_per_shard:
        log.warning("partition %s: %d rows in shards of %d would exceed max_map_length=%d; "
                    "shard size grown to %d rows", date, total, rows_per_shard, max_shards,
                    size)
    log.info("partition %s: %d shards, %d rows", date, len(shards), total)
    return shards


class _Input(NamedTuple):
    """One checked input file, as planned."""

    path: storage.Root
    group_rows: list[int]
    file_rows: int
    sha256: str
    identity: list[int]


def _cut(date: str, inputs: list[_Input], rows_per_shard: int) -> list[Shard]:
    """Greedy cut: consecutive row groups of one file until `rows_per_shard` rows."""
    shards: list[Shard] = []
    for source in inputs:
        start, rows = 0, 0
        for group, n in enumerate(source.group_rows):
            rows += n
            if rows >= rows_per_shard or group == len(source.group_rows) - 1:
                shards.append(Shard(date=date, index=len(shards), file=str(source.path),
                                    row_groups=[start, group + 1], rows=rows,
                                    file_rows=source.file_rows, sha256=source.sha256,
                                    identity=source.identity))
                start, rows = group + 1, 0
    return shards


def check_schema(path: storage.Root, schema: pa.Schema) -> None:
    """The contract's column rules for one input file; PartitionInvalid naming the column."""
    clash = [name for name in schema.names if name in RESERVED]
    if clash:
        raise PartitionInvalid(f"{path}: input column {clash[0]!r} is reserved (the partition "
                               f"key and the output columns: {', '.join(RESERVED)})")
    if "product_id" not in schema.names:
        raise PartitionInvalid(f"{path}: no 'product_id' column (required, string)")
    for name, (tests, wanted) in COLUMN_TYPES.items():
        if name not in schema.names:
            continue
        kind = schema.field(name).type
        if not any(test(kind) for test in tests) and not (
                name != "product_id" and pa.types.is_null(kind)):
            raise PartitionInvalid(f"{path}: column {name!r} is {kind}, must be {wanted}")


def check_same_schema(path: storage.Root, schema: pa.Schema, first_path: storage.Root,
                      first: pa.Schema) -> None:
    """One schema per day: readers of the whole catalogue would drop or fail on a column."""
    if schema.equals(first, check_metadata=False):
        return
    for name in dict.fromkeys([*first.names, *schema.names]):
        if name not in schema.names:
            problem = f"has no column {name!r}"
        elif name not in first.names:
            problem = f"has column {name!r}"
        elif schema.field(name).type != first.field(name).type:
            problem = f"has column {name!r} as {schema.field(name).type}"
        else:
            continue
        raise PartitionInvalid(
            f"{path}: {problem}, unlike {first_path.name} (one schema per day: "
            f"{first.to_string(show_schema_metadata=False).replace(chr(10), ', ')})")
    raise PartitionInvalid(f"{path}: columns in another order than {first_path.name}")
