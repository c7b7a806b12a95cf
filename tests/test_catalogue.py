"""Tagging a Parquet partition end to end: real photos, real Parquet, real processes."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tagging.catalogue.demo import generate_demo_catalogue
from tagging.catalogue.layout import images_dir, incoming_root, input_dir
from tagging.catalogue.planning import plan_shards
from tagging.catalogue.publish import is_published, publish_partition
from tagging.catalogue.published import read_manifest, read_published
from tagging.catalogue.table import history
from tagging.catalogue.tagger import tag_shard_to_staging
from tagging.catalogue.validate import validate_partition
from tagging.errors import PartitionInvalid, PartitionNotFound
from tagging.pipeline.tag import tag_partition
from tagging.schema import OUTPUT_FIELDS

DATE = "2026-11-20"
REPO = Path(__file__).resolve().parents[1]


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(255 - pixels).resize((300, 300)).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


def bomb() -> bytes:
    """A tiny PNG whose header claims 60000 x 60000 pixels."""
    small = io.BytesIO()
    Image.new("L", (1, 1)).save(small, "PNG")
    raw = bytearray(small.getvalue())
    raw[16:24] = (60_000).to_bytes(4, "big") * 2  # IHDR width and height
    raw[29:33] = zlib.crc32(raw[12:29]).to_bytes(4, "big")  # the chunk's CRC
    return bytes(raw)


@pytest.fixture
def bad_catalogue(tmp_path, fmnist) -> Path:
    """One partition: good rows by bytes and by image_uri, and every kind of bad row."""
    root = tmp_path / "catalogue"
    images = images_dir(root).path
    images.mkdir(parents=True)
    (images / "ok.jpg").write_bytes(_jpeg(fmnist.x_test[1]))
    good = _jpeg(fmnist.x_test[0])
    rows = [  # (product_id, image, image_uri, expected error substring or None)
        ("p-good", good, None, None),
        ("p-uri", None, "ok.jpg", None),
        ("p-undecodable", b"not an image at all", None, "undecodable"),
        ("p-truncated", good[: len(good) // 3], None, "truncated"),
        ("p-empty", b"", None, "empty"),
        ("p-missing", None, None, "missing"),
        ("p-bomb", bomb(), None, "too large"),
        ("p-escape", None, "../../../etc/passwd", "escapes"),
        ("p-absent-file", None, "nope/absent.jpg", "not found"),
        (None, good, None, "product_id"),
        ("p-good-2", good, None, None),
    ]
    out = input_dir(root, DATE).path / "part-0.parquet"
    out.parent.mkdir(parents=True)
    pq.write_table(pa.table({
        "product_id": pa.array([r[0] for r in rows], pa.string()),
        "image": pa.array([r[1] for r in rows], pa.binary()),
        "image_uri": pa.array([r[2] for r in rows], pa.string()),
        "expected": pa.array([r[3] for r in rows], pa.string()),
        "price": pa.array([float(i) for i in range(len(rows))]),
    }), out, row_group_size=4)
    return root


def tag(root: Path, registry: Path, run_id: str = "run-1", tagged_at="2026-11-21T03:00:00"):
    shards = plan_shards(root, DATE, rows_per_shard=5)
    staged = [tag_shard_to_staging(s, catalogue_root=root, registry_root=registry,
                                   model_version="v0001", run_id=run_id, tagged_at=tagged_at,
                                   workers=2) for s in shards]
    return shards, staged


def test_bad_rows_get_tag_errors_and_no_row_is_lost(bad_catalogue, champion_registry, place):
    source = pq.read_table(input_dir(bad_catalogue, DATE).path)
    bad_catalogue = place(bad_catalogue)
    shards, staged = tag(bad_catalogue, champion_registry)
    assert len(shards) == 2  # 11 rows in row groups of 4: shards of >= 5 rows
    publish_partition(bad_catalogue, DATE, staged=staged, model_version="v0001",
                      tagged_at="2026-11-21T03:00:00")
    table = read_published(bad_catalogue, DATE)
    # every row once (a Delta table keeps no row order: product_id is the key)
    assert sorted(table["price"].to_pylist()) == source["price"].to_pylist()
    for row in table.to_pylist():
        if row["expected"] is None:
            assert row["tag_error"] is None and row["category"] is not None, row
            assert 0 <= row["category_id"] <= 9 and len(row["category_top3"]) == 3
        else:
            assert row["expected"] in row["tag_error"], (row["expected"], row["tag_error"])
            assert row["category"] is None and row["needs_review"]
    counts = read_manifest(bad_catalogue, DATE)["counts"]
    flagged = sum(table["needs_review"].to_pylist())
    assert counts == {"rows": 11, "tagged": 3, "errors": 8, "needs_review": flagged}
    assert flagged >= 8  # every untaggable row needs review
    with pytest.raises(PartitionInvalid, match="error rate"):
        validate_partition(bad_catalogue, DATE)


def test_output_schema_and_types(bad_catalogue, champion_registry):
    _, staged = tag(bad_catalogue, champion_registry)
    schema = pq.read_schema(staged[0])
    input_names = ["product_id", "image", "image_uri", "expected", "price"]
    assert schema.names == input_names + [f.name for f in OUTPUT_FIELDS]
    for field in OUTPUT_FIELDS:
        assert schema.field(field.name).type == field.type
    tagged_at = pq.read_table(staged[0])["tagged_at"].unique()
    assert len(tagged_at) == 1 and str(tagged_at[0]) == "2026-11-21 03:00:00+00:00"


def sha256s(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(incoming_root(root).path.rglob("*")) if p.is_file()}


def test_rerun_is_identical_and_input_untouched(bad_catalogue, champion_registry):
    before = sha256s(bad_catalogue)
    _, first = tag(bad_catalogue, champion_registry, run_id="a")
    _, second = tag(bad_catalogue, champion_registry, run_id="b")
    for a, b in zip(first, second, strict=True):
        assert pq.read_table(a).equals(pq.read_table(b))
    assert sha256s(bad_catalogue) == before


@pytest.fixture
def demo(tmp_path, fmnist_dir) -> Path:
    root = tmp_path / "catalogue"
    generate_demo_catalogue(root, [DATE], rows_per_day=40, data_dir=fmnist_dir, workers=2)
    return root


def test_round_trip_publishes_validates_and_skips_when_current(demo, champion_registry, place):
    demo = place(demo)
    summary = tag_partition(demo, DATE, registry_root=champion_registry, workers=2)
    assert summary["rows"] == 45 and summary["errors"] == 5  # 40 photos + 5 broken rows
    report = validate_partition(demo, DATE, max_error_rate=0.2, max_review_rate=1.0)
    assert report["rows"] == 45
    assert is_published(demo, DATE, "v0001")
    assert not is_published(demo, DATE, "v0002")
    manifest = read_manifest(demo, DATE)
    assert manifest["inputs"][0]["rows"] == 45 and manifest["model_version"] == "v0001"
    assert manifest["counts"]["rows"] == read_published(demo, DATE).num_rows == 45
    assert manifest["columns"][:2] == ["product_id", "image"]


def test_missing_partition_is_a_clear_error(tmp_path):
    with pytest.raises(PartitionNotFound, match="no input files"):
        plan_shards(tmp_path, DATE)


CRASH = """
import os, signal, sys
import deltalake
import tagging.catalogue.publish as publish
def killed_before_commit(table, actions, **kwargs):
    assert actions  # the day's data files are written, the commit is not
    os.kill(os.getpid(), signal.SIGKILL)
deltalake.DeltaTable.create_write_transaction = killed_before_commit
publish.publish_partition(sys.argv[1], sys.argv[2], staged=sys.argv[3:], model_version="v0002",
                          tagged_at="2026-11-22T00:00:00")
"""


def test_crash_mid_publish_keeps_previous_partition(bad_catalogue, champion_registry, place):
    bad_catalogue = place(bad_catalogue)
    _, staged = tag(bad_catalogue, champion_registry, run_id="first")
    publish_partition(bad_catalogue, DATE, staged=staged, model_version="v0001",
                      tagged_at="2026-11-21T03:00:00")
    before = read_manifest(bad_catalogue, DATE)
    table_before = read_published(bad_catalogue, DATE)
    _, staged = tag(bad_catalogue, champion_registry, run_id="second",
                    tagged_at="2026-11-22T00:00:00")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(CRASH), str(bad_catalogue),
                           DATE, *staged], cwd=REPO)
    assert proc.returncode == -9
    assert read_manifest(bad_catalogue, DATE) == before
    assert read_published(bad_catalogue, DATE).equals(table_before)
    # the next publish succeeds
    publish_partition(bad_catalogue, DATE, staged=staged, model_version="v0002",
                      tagged_at="2026-11-22T00:00:00")
    assert read_manifest(bad_catalogue, DATE)["tagged_at"].startswith("2026-11-22")
    assert [h["version"] for h in history(bad_catalogue, DATE)] == [2, 1]
