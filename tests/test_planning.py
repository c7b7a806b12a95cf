"""Shard planning against Airflow's mapping limit ([core] max_map_length)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from helpers import write_input

from tagging.catalogue.planning import plan_shards
from tagging.errors import PartitionInvalid

DATE = "2026-11-20"


def write_partition(root, files: int, rows: int, row_group_size: int = 1) -> None:
    for i in range(files):
        table = pa.table({"product_id": [f"p{i}-{r}" for r in range(rows)]})
        write_input(root, DATE, table, f"part-{i}.parquet", row_group_size=row_group_size)


def covered(shards) -> list[tuple[str, int]]:
    """(file, row group) of every shard, in order: each exactly once means nothing lost."""
    return [(s["file"], g) for s in shards for g in range(*s["row_groups"])]


def test_shards_grow_to_fit_max_map_length(tmp_path):
    write_partition(tmp_path, files=2, rows=40)  # 80 row groups of one row
    small = plan_shards(tmp_path, DATE, rows_per_shard=1, max_shards=1024)
    assert len(small) == 80
    capped = plan_shards(tmp_path, DATE, rows_per_shard=1, max_shards=7)
    assert len(capped) <= 7
    assert covered(capped) == covered(small)
    assert sum(s["rows"] for s in capped) == 80
    assert [s["index"] for s in capped] == list(range(len(capped)))


def test_more_files_than_max_map_length_is_a_clear_error(tmp_path):
    write_partition(tmp_path, files=3, rows=2)
    with pytest.raises(PartitionInvalid, match=r"3 input files but at most 2 shards.*"
                                               r"max_map_length"):
        plan_shards(tmp_path, DATE, max_shards=2)
