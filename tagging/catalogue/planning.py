"""Cut a partition into shards of whole row groups: the unit of work of one DAG task."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TypedDict

import pyarrow.parquet as pq

from tagging.catalogue.layout import input_files
from tagging.settings import TaggingLimits

log = logging.getLogger(__name__)


class Shard(TypedDict):
    """Row groups [start, stop) of one input file (travels through XCom as JSON)."""

    date: str
    index: int
    file: str
    row_groups: list[int]  # [start, stop)
    rows: int


def plan_shards(catalogue_root: Path | str, date: str, *,
                rows_per_shard: int = TaggingLimits.rows_per_shard) -> list[Shard]:
    """Split the partition into shards of whole row groups (about `rows_per_shard` rows each)."""
    shards: list[Shard] = []
    for path in input_files(catalogue_root, date):
        meta = pq.ParquetFile(path).metadata
        start, rows = 0, 0
        for group in range(meta.num_row_groups):
            rows += meta.row_group(group).num_rows
            if rows >= rows_per_shard or group == meta.num_row_groups - 1:
                shards.append(Shard(date=date, index=len(shards), file=str(path),
                                    row_groups=[start, group + 1], rows=rows))
                start, rows = group + 1, 0
    log.info("partition %s: %d shards, %d rows", date, len(shards),
             sum(s["rows"] for s in shards))
    return shards
