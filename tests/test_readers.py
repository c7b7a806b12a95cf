"""The README's reader snippets ("Reading the published catalogue"), run as written against
a tagged table on the test S3 server; and why a raw glob of the Parquet files is wrong."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads

from tagging import storage
from tagging.catalogue.table import commit_day, table_root

README = Path(__file__).resolve().parents[1] / "README.md"
DAY, OTHER = "2026-11-27", "2026-11-28"


def snippets() -> list[str]:
    """The python blocks marked `<!-- reader-snippet -->` in the README, in order."""
    return re.findall(r"<!-- reader-snippet -->\n```python\n(.*?)```", README.read_text(),
                      flags=re.S)


def rows(categories: list[str], review: list[bool]):
    table = pa.table({"product_id": [f"p{i}" for i in range(len(categories))],
                      "category": categories, "needs_review": review,
                      "category_confidence": pa.array([0.9] * len(categories), pa.float32())})
    return lambda: table.to_reader()


def test_readme_readers_on_s3(s3_env):
    catalogue = storage.Root(f"s3://tagging/readers-{uuid.uuid4().hex[:8]}")
    manifest = {"columns": ["product_id", "category", "needs_review", "category_confidence"]}
    commit_day(catalogue, DAY, rows(["bag", "bag", "coat"], [False, True, False]),
               {**manifest, "model_version": "old"})
    commit_day(catalogue, DAY, rows(["bag", "coat", "coat", "dress"], [False, False, True,
                                                                       False]),
               {**manifest, "model_version": "new"})
    commit_day(catalogue, OTHER, rows(["sandal"], [False]), {**manifest, "model_version": "x"})

    blocks = snippets()
    assert len(blocks) == 3  # deltalake/pyarrow, pandas, DuckDB over Arrow
    namespace: dict = {}
    for block in blocks:
        code = block.replace("s3://shop/catalogue/tagged", str(table_root(catalogue)))
        exec(compile(code, str(README), "exec"), namespace)
    assert sorted(namespace["day"]["category"].to_pylist()) == ["bag", "coat", "coat", "dress"]
    assert namespace["searchable"].num_rows == 3
    assert sorted(namespace["frame"]["category"]) == ["bag", "coat", "coat", "dress"]
    assert sorted(namespace["counts"]) == [("bag", 1), ("coat", 1), ("dress", 1)]
    namespace.clear()  # no deltalake-made dataset outlives the test (README: rc 134)

    # A raw glob of the day's Parquet files sees the superseded version too.
    fs, path = storage.arrow_fs(table_root(catalogue) / f"dt={DAY}")
    globbed = pads.dataset(path, filesystem=fs, format="parquet").count_rows()
    assert globbed == 3 + 4
