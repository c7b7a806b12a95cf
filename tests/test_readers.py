"""The documentation's reader snippets (docs/search/: reading the table, the incremental
feed, time travel), run as written against a tagged table on the test S3 server; and why a
raw glob of the Parquet files is wrong."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads

from tagging import storage
from tagging.catalogue.table import commit_day, table_root

SEARCH_DOCS = Path(__file__).resolve().parents[1] / "docs" / "search"
READING = SEARCH_DOCS / "reading.md"
FEED = SEARCH_DOCS / "incremental-feed.md"
TIME_TRAVEL = SEARCH_DOCS / "time-travel.md"
DAY, OTHER = "2026-11-27", "2026-11-28"


def snippets(page: Path, marker: str = "reader-snippet") -> list[str]:
    """The python blocks marked `<!-- {marker} -->` in a page, in order."""
    return re.findall(rf"<!-- {marker} -->\n```python\n(.*?)```", page.read_text(),
                      flags=re.S)


def run(block: str, page: Path, uri: str, namespace: dict) -> None:
    code = block.replace("s3://shop/catalogue/tagged", uri)
    exec(compile(code, str(page), "exec"), namespace)


def rows(categories: list[str], review: list[bool]):
    table = pa.table({"product_id": [f"p{i}" for i in range(len(categories))],
                      "category": categories, "needs_review": review,
                      "category_confidence": pa.array([0.9] * len(categories), pa.float32())})
    return lambda: table.to_reader()


def test_documented_readers_on_s3(s3_env):
    catalogue = storage.Root(f"s3://tagging/readers-{uuid.uuid4().hex[:8]}")
    manifest = {"columns": ["product_id", "category", "needs_review", "category_confidence"]}
    commit_day(catalogue, DAY, rows(["bag", "bag", "coat"], [False, True, False]),
               {**manifest, "model_version": "old"})
    commit_day(catalogue, DAY, rows(["bag", "coat", "coat", "dress"], [False, False, True,
                                                                       False]),
               {**manifest, "model_version": "new"})
    commit_day(catalogue, OTHER, rows(["sandal"], [False]), {**manifest, "model_version": "x"})

    uri = str(table_root(catalogue))
    blocks = snippets(READING)
    assert len(blocks) == 3  # deltalake/pyarrow, pandas, DuckDB over Arrow
    namespace: dict = {}
    for block in blocks:
        run(block, READING, uri, namespace)
    assert sorted(namespace["day"]["category"].to_pylist()) == ["bag", "coat", "coat", "dress"]
    assert namespace["searchable"].num_rows == 3
    assert sorted(namespace["frame"]["category"]) == ["bag", "coat", "coat", "dress"]
    assert sorted(namespace["counts"]) == [("bag", 1), ("coat", 1), ("dress", 1)]

    # the incremental feed after version 1 (the day's first publication): the day replaced
    # at version 2 (3 rows out, 4 in), the other day added at version 3
    [feed] = snippets(FEED, "feed-snippet")
    run(feed, FEED, uri, namespace)
    changed = namespace["changed"]
    assert sorted(zip(changed["_commit_version"].to_pylist(),
                      changed["_change_type"].to_pylist(), changed["dt"].to_pylist(),
                      strict=True)) == [(2, "delete", DAY)] * 3 + [(2, "insert", DAY)] * 4 \
        + [(3, "insert", OTHER)]

    # time travel: the day as it was at table version 1
    [travel] = snippets(TIME_TRAVEL, "time-travel-snippet")
    run(travel, TIME_TRAVEL, uri, namespace)
    assert sorted(namespace["as_of_1"]["category"].to_pylist()) == ["bag", "bag", "coat"]
    namespace.clear()  # no deltalake-made dataset outlives the test (docs: rc 134)

    # A raw glob of the day's Parquet files sees the superseded version too.
    fs, path = storage.arrow_fs(table_root(catalogue) / f"dt={DAY}")
    globbed = pads.dataset(path, filesystem=fs, format="parquet").count_rows()
    assert globbed == 3 + 4
