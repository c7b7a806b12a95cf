"""A hostile but fair tester: bad inputs, faults and races against tagging, the registry, the CLI.

Every case ends in a clear error or a per-row `tag_error`, with no row lost and the
inputs unchanged. Real files, real Parquet, real processes; one quickly trained model
(conftest's champion_registry) shared by all. docs/platform/withstands.md lists the kinds.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import (
    copy_registry,
    encode,
    photo,
    png_chunk,
    png_claiming,
    writable,
    write_input,
)
from PIL import Image

from model_registry import CorruptMetadataError, Registry
from tagging.catalogue.layout import (
    images_dir,
    input_dir,
    staging_day,
    staging_dir,
    staging_root,
)
from tagging.catalogue.planning import plan_shards
from tagging.catalogue.publish import is_published, publish_partition
from tagging.catalogue.published import read_manifest, read_published
from tagging.catalogue.table import history
from tagging.catalogue.tagger import Tagger
from tagging.catalogue.validate import validate_partition
from tagging.cli import main
from tagging.errors import ImageError, ModelError, PartitionInvalid
from tagging.model.inference import Classifier
from tagging.photos.render import PIXELS

DATE = "2026-11-20"
REPO = Path(__file__).resolve().parents[1]
TAGGED_AT = datetime(2026, 11, 21, tzinfo=UTC)
SWOLLEN = 330 * 1024 * 1024
LOOSE = ["--max-error-rate", "1", "--max-review-rate", "1"]  # a day of nothing but bad rows


# ---------------------------------------------------------------- builders


def png16(side: int) -> bytes:
    """A valid all-black 16-bit grey PNG of side x side pixels: tiny file, huge decode."""
    packer = zlib.compressobj(9)
    row = b"\x00" * (1 + 2 * side)  # filter byte + 2 bytes per pixel
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data)
            + png_chunk(b"IEND", b""))


def items_table(rows: list[tuple], **extra: pa.Array) -> pa.Table:
    """rows: (product_id, image bytes | None, image_uri | None)."""
    return pa.table({"product_id": pa.array([r[0] for r in rows], pa.string()),
                     "image": pa.array([r[1] for r in rows], pa.binary()),
                     "image_uri": pa.array([r[2] for r in rows], pa.string()), **extra})


def write_day(root: Path, files: dict[str, pa.Table], date: str = DATE, **options) -> Path:
    for name, table in files.items():
        write_input(root, date, table, name, **options)
    return input_dir(root, date).path


def fingerprint(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`: proves the inputs were left unchanged."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def published_rows(root: Path, date: str = DATE) -> pa.Table:
    return read_published(root, date)


def cli(capsys, *args: str) -> tuple[int, str]:
    """Run the CLI in this process: (exit code, stdout + stderr)."""
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


def tag_args(root: Path, registry: Path, *extra: str) -> list[str]:
    return ["tag", "--catalogue", str(root), "--date", DATE, "--registry", str(registry),
            "--workers", "1", *extra]


def assert_one_line_error(code: int, out: str, *words: str) -> None:
    assert code == 1, out
    assert "Traceback" not in out and out.count("error:") == 1, out
    flat = " ".join(out.split())  # the console wraps long lines
    for word in words:
        assert word in flat, (word, out)


@pytest.fixture(scope="module")
def good(fmnist) -> list[bytes]:
    """Product photos made from Fashion-MNIST test images (PNG, fast to decode)."""
    return [photo(fmnist.x_test[i], "PNG") for i in range(4)]


@pytest.fixture(scope="module")
def tagger(tmp_path_factory, champion_registry):
    """One warm Tagger (one decoding process) for the tests that stage shards themselves."""
    images = tmp_path_factory.mktemp("no-images")
    with Tagger(Classifier.from_registry(champion_registry), workers=1,
                image_root=images) as warm:
        yield warm


def stage(tagger: Tagger, root: Path, shard: dict, run_id: str = "r1") -> str:
    """Tag one shard into the run's staging folder, as a shard task does; its path."""
    out = staging_dir(root, shard["date"], run_id) / f"shard-{shard['index']:05d}.parquet"
    tagger.write_shard(shard, out, TAGGED_AT)
    return str(out)


def publish(root: Path, staged: list[str]) -> Path:
    return publish_partition(root, DATE, staged=staged, model_version="v0001",
                             tagged_at=TAGGED_AT.isoformat())


@pytest.fixture
def registry(tmp_path, champion_registry) -> Path:
    """A private, writable copy of the shared registry (its champion v0001)."""
    return copy_registry(champion_registry, tmp_path / "registry")


def register_variant(root: Path, tmp_path: Path, **changes) -> str:
    """Register a copy of the champion's artifacts with `changes` to its metadata."""
    reg = Registry(root)
    info = reg.get("champion")
    artifact = tmp_path / f"artifact-{len(reg.version_ids())}"
    shutil.copytree(info.path, artifact, ignore=shutil.ignore_patterns("metadata.json"))
    writable(artifact)
    meta = {k: v for k, v in info.metadata.items()
            if k not in ("version", "created_at", "created_by", "parent_champion", "sha256")}
    for key, value in changes.items():
        meta[key] = value
    return reg.register(artifact, meta, created_by="adversary")


# ---------------------------------------------------------------- one day, every row bad


def bad_rows(root: Path, good: list[bytes]) -> list[tuple[str, bytes | None, str | None, str]]:
    """(product_id, image, image_uri, expected): `expected` is "tagged" or a tag_error part."""
    images = images_dir(root).path
    (images / "sub").mkdir(parents=True)
    (images / "ok.png").write_bytes(good[0])
    outside = root / "secret.png"
    outside.write_bytes(good[1])
    (images / "escape.png").symlink_to(outside)
    os.mkfifo(images / "fifo.png")
    with open(images / "huge.png", "wb") as f:
        f.truncate(65 * 1024 * 1024)  # sparse: 65 MB long, no disk used
    base = Image.open(io.BytesIO(good[2])).convert("RGB")
    grey = np.asarray(base.convert("L"), np.uint16) * 257
    exif = Image.Exif()
    exif[0x0112] = 8  # orientation: rotate back on decode
    rotated = encode(base.rotate(90, expand=True), "JPEG", exif=exif)
    frames = [base.convert("P"), Image.new("RGB", base.size, (0, 0, 0)).convert("P")]
    transparent = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    return [
        ("by-uri", None, "ok.png", "tagged"),
        ("cmyk-jpeg", encode(base.convert("CMYK"), "JPEG"), None, "tagged"),
        ("16-bit-png", encode(Image.fromarray(grey), "PNG"), None, "tagged"),
        ("animated-gif", encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
         None, "tagged"),
        ("webp", encode(base, "WEBP"), None, "tagged"),
        ("tiff", encode(base, "TIFF"), None, "tagged"),
        ("bmp", encode(base, "BMP"), None, "tagged"),
        ("exif-rotated", rotated, None, "tagged"),
        ("jpeg-named-gif", None, "sub/looks.gif", "tagged"),
        ("truncated-jpeg", encode(base, "JPEG")[:600], None, "truncated"),
        ("truncated-png", good[3][: len(good[3]) // 2], None, "truncated"),
        ("bomb-png", png_claiming(60_000, 60_000), None, "too large"),
        ("16-bit-near-limit", png16(8_900), None, "too large"),
        ("one-pixel", encode(Image.new("RGB", (1, 1), (10, 10, 10)), "PNG"), None, "blank"),
        ("all-white", encode(Image.new("RGB", (300, 300), (255, 255, 255)), "PNG"), None,
         "blank"),
        ("transparent", encode(transparent, "PNG"), None, "blank"),
        ("too-small", encode(base.resize((20, 24)), "PNG"), None,
         "too small for the encoder"),
        ("text", b"this is not a photo, it is a sentence", None, "undecodable"),
        ("svg", b'<svg xmlns="http://www.w3.org/2000/svg"><rect width="9"/></svg>', None,
         "undecodable"),
        ("html", b"<!DOCTYPE html><html><body>404 Not Found</body></html>", None,
         "undecodable"),
        ("pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", None, "undecodable"),
        ("zero-bytes", b"", None, "empty image"),
        ("eps", encode(base.convert("L").resize((40, 40)), "EPS"), None, "not allowed"),
        ("ppm", encode(base, "PPM"), None, "not allowed"),
        ("ico", encode(base.resize((64, 64)), "ICO"), None, "not allowed"),
        ("no-image", None, None, "missing image"),
        ("empty-uri", None, "", "missing image"),
        ("traversal-uri", None, "../../../etc/passwd", "escapes the image root"),
        ("absolute-uri", None, "/etc/passwd", "escapes the image root"),
        ("symlink-out-uri", None, "escape.png", "escapes the image root"),
        ("url-uri", None, "https://example.com/a.jpg", "URL"),
        ("file-url-uri", None, "file:///etc/passwd", "URL"),
        ("fifo-uri", None, "fifo.png", "not a file"),
        ("directory-uri", None, "sub", "not a file"),
        ("absent-uri", None, "sub/absent.png", "not found"),
        ("nul-byte-uri", None, "bad\x00name.png", "invalid image_uri"),
        ("oversized-file", None, "huge.png", "too large"),
        (None, good[0], None, "missing product_id"),
    ]


@pytest.fixture(scope="module")
def bad_day(tmp_path_factory, good, champion_registry):
    """`tagging tag` (a real subprocess) over a day where every row is a different bad input."""
    root = tmp_path_factory.mktemp("bad-day")
    rows = bad_rows(root, good)
    (images_dir(root).path / "sub" / "looks.gif").write_bytes(encode(
        Image.open(io.BytesIO(good[1])).convert("RGB"), "JPEG"))
    day = write_day(root, {"part-0.parquet": items_table(rows)}, row_group_size=8)
    before = fingerprint(day)
    # A Ghostscript that leaves a mark: EPS bytes must never make the decoder run it.
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "gs").write_text(f"#!/bin/sh\ntouch {root / 'gs-ran'}\nexit 1\n")
    (bin_dir / "gs").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "tagging.cli", *tag_args(root, champion_registry, *LOOSE)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    return {"root": root, "rows": rows, "proc": proc, "before": before, "day": day}


def test_a_day_of_bad_rows_is_tagged_with_every_row_present(bad_day):
    proc = bad_day["proc"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout
    table = published_rows(bad_day["root"])
    assert Counter(table["product_id"].to_pylist()) == Counter(r[0] for r in bad_day["rows"])
    assert fingerprint(bad_day["day"]) == bad_day["before"]


@pytest.mark.parametrize("index", range(38))
def test_each_bad_row_gets_its_reason(bad_day, index):
    if bad_day["proc"].returncode != 0:
        pytest.fail(bad_day["proc"].stdout + bad_day["proc"].stderr)
    product_id, _, _, expected = bad_day["rows"][index]
    row, = [r for r in published_rows(bad_day["root"]).to_pylist()
            if r["product_id"] == product_id]  # a Delta table keeps no row order
    if expected == "tagged":
        assert row["tag_error"] is None and row["category"] is not None, row["tag_error"]
        assert 0 < row["category_confidence"] <= 1
    else:
        assert row["tag_error"] and expected in row["tag_error"], (expected, row["tag_error"])
        assert row["category"] is None and row["needs_review"]


def test_eps_never_reaches_ghostscript(bad_day):  # hole 11
    assert bad_day["proc"].returncode == 0, bad_day["proc"].stderr
    assert not (bad_day["root"] / "gs-ran").exists()


def test_image_memory_is_bounded_by_bytes_per_pixel():  # hole 10
    """Under the pixel limit, but 16 bits per pixel: refused before decoding, and quickly."""
    data = png16(8_900)
    assert len(data) < 300_000
    start = time.process_time()
    with pytest.raises(ImageError, match=r"^image too large: .*bytes"):
        PIXELS.render(data)
    assert time.process_time() - start < 0.5


# ---------------------------------------------------------------- a decoder that dies


def test_a_killed_decoder_costs_only_its_row(tmp_path, good, champion_registry):  # hole 10
    """The OOM killer's way: whichever decoding process swells past a limit is SIGKILLed.

    A decoding process idles at about 80 MB and peaks near 100 MB on an ordinary photo;
    the 49 Mpx RGB photo takes it past 400 MB."""
    root = tmp_path / "catalogue"
    big = encode(Image.new("RGB", (7_000, 7_000), (128, 128, 128)), "PNG")  # 147 MB decoded
    rows = [(f"p{i}", good[i % 4], None) for i in range(40)]
    rows[13] = ("p-swelling", big, None)
    write_day(root, {"part-0.parquet": items_table(rows)})
    shard, = plan_shards(root, DATE)
    killed: list[int] = []
    stop = threading.Event()

    def oom_killer() -> None:
        me = psutil.Process()
        while not stop.is_set():
            for child in me.children(recursive=True):
                try:  # decoding workers only: the forkserver (our own child) forks them
                    if child.ppid() != me.pid and child.memory_info().rss > SWOLLEN:
                        child.kill()
                        killed.append(child.pid)
                except psutil.NoSuchProcess:
                    pass
            time.sleep(0.002)

    watcher = threading.Thread(target=oom_killer, daemon=True)
    watcher.start()
    out = tmp_path / "shard.parquet"
    try:
        with Tagger(Classifier.from_registry(champion_registry), workers=2,
                    image_root=images_dir(root).path) as tagger:
            stats = tagger.write_shard(shard, out, TAGGED_AT)
    finally:
        stop.set()
        watcher.join()
    assert killed, "the swelling decoder was never killed: the test proved nothing"
    table = pq.read_table(out)
    assert stats.rows == table.num_rows == 40
    errors = table["tag_error"].to_pylist()
    assert "decoding process died" in errors[13]
    assert [i for i, e in enumerate(errors) if e] == [13]


# ---------------------------------------------------------------- bad partitions


def assert_nothing_published(root: Path) -> None:
    assert read_manifest(root, DATE) is None


@pytest.mark.parametrize("column", ["dt", "category", "tag_error"])  # hole 5
def test_reserved_input_columns_are_refused_before_tagging(tmp_path, capsys, good,
                                                          champion_registry, column):
    root = tmp_path / "catalogue"
    table = items_table([("p1", good[0], None)]).append_column(column, pa.array(["x"]))
    day = write_day(root, {"part-0.parquet": table})
    before = fingerprint(day)
    code, out = cli(capsys, *tag_args(root, champion_registry))
    assert_one_line_error(code, out, "part-0.parquet", column)
    assert_nothing_published(root)
    assert not staging_root(root).path.exists()
    assert fingerprint(day) == before


def test_hidden_and_underscore_files_are_ignored(tmp_path, capsys, good,
                                                 champion_registry):  # hole 6
    root = tmp_path / "catalogue"
    rows = [(f"p{i}", good[i], None) for i in range(3)]
    write_day(root, {"part-0.parquet": items_table(rows), ".part-0.parquet": items_table(rows),
                     "_tmp.parquet": items_table(rows)})
    code, out = cli(capsys, *tag_args(root, champion_registry))
    assert code == 0, out
    assert published_rows(root).num_rows == 3
    assert [i["file"] for i in read_manifest(root, DATE)["inputs"]] == ["part-0.parquet"]


def retyped(table: pa.Table, column: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(column), column, values)


@pytest.mark.parametrize("case", [  # hole 7
    "extra-column-in-one-file", "int-product-id", "string-image", "int-image-uri",
    "no-product-id"])
def test_one_input_schema_per_day(tmp_path, capsys, good, champion_registry, case):
    root = tmp_path / "catalogue"
    table = items_table([("p1", good[0], None), ("p2", good[1], None)])
    second = items_table([("p3", good[2], None)])
    if case == "extra-column-in-one-file":
        second, column = second.append_column("colour", pa.array(["red"])), "colour"
    elif case == "int-product-id":
        second, column = retyped(second, "product_id", pa.array([3])), "product_id"
    elif case == "string-image":
        second, column = retyped(second, "image", pa.array(["abc"])), "image"
    elif case == "int-image-uri":
        second, column = retyped(second, "image_uri", pa.array([7])), "image_uri"
    else:
        second, column = second.drop_columns(["product_id"]), "product_id"
    day = write_day(root, {"part-0.parquet": table, "part-1.parquet": second})
    before = fingerprint(day)
    code, out = cli(capsys, *tag_args(root, champion_registry))
    assert_one_line_error(code, out, "part-1.parquet", column)
    assert_nothing_published(root)
    assert fingerprint(day) == before


@pytest.mark.parametrize("case", ["zero-byte", "not-parquet", "truncated-parquet", "no-files"])
def test_unreadable_input_files_are_clear_errors(tmp_path, capsys, good, champion_registry,
                                                 case):
    root = tmp_path / "catalogue"
    day = write_day(root, {"part-0.parquet": items_table([("p1", good[0], None)])})
    broken = day / "part-1.parquet"
    if case == "zero-byte":
        broken.write_bytes(b"")
    elif case == "not-parquet":
        broken.write_text("product_id,image\np1,abc\n")
    elif case == "truncated-parquet":
        broken.write_bytes((day / "part-0.parquet").read_bytes()[:-20])
    else:
        shutil.rmtree(day)
        day.mkdir()
    before = fingerprint(day)
    code, out = cli(capsys, *tag_args(root, champion_registry))
    assert_one_line_error(code, out, "no input files" if case == "no-files" else "part-1.parquet")
    assert_nothing_published(root)
    assert fingerprint(day) == before


def test_duplicate_ids_fail_validation_clearly(tmp_path, capsys, good, champion_registry):
    root = tmp_path / "catalogue"
    day = write_day(root, {"part-0.parquet": items_table(
        [("p1", good[0], None), ("p1", good[1], None), ("p2", good[2], None)])})
    before = fingerprint(day)
    code, out = cli(capsys, *tag_args(root, champion_registry))
    assert_one_line_error(code, out, "product_id values occur more than once")
    assert published_rows(root).num_rows == 3  # published for inspection, flagged invalid
    assert fingerprint(day) == before


# ---------------------------------------------------------------- inputs replaced mid-run


@pytest.mark.parametrize("moment", ["after-tagging", "between-shards"])  # hole 4
def test_manifest_names_the_bytes_actually_read(tmp_path, good, tagger, moment):
    root = tmp_path / "catalogue"
    old = items_table([(f"old-{i}", good[i % 4], None) for i in range(8)])
    new = items_table([(f"new-{i}", good[i % 4], None) for i in range(8)])
    day = write_day(root, {"part-0.parquet": old}, row_group_size=4)
    pq.write_table(new, tmp_path / "replacement.parquet", row_group_size=4)
    shards = plan_shards(root, DATE, rows_per_shard=4)
    assert len(shards) == 2

    def replace() -> None:  # an atomic rename: same name, same row count, other rows
        os.replace(tmp_path / "replacement.parquet", day / "part-0.parquet")

    if moment == "after-tagging":
        staged = [stage(tagger, root, s) for s in shards]
        replace()
        publish(root, staged)
        assert "old-0" in published_rows(root)["product_id"].to_pylist()
        old_sha = hashlib.sha256(pq_bytes(old)).hexdigest()
        assert read_manifest(root, DATE)["inputs"][0]["sha256"] == old_sha
        assert not is_published(root, DATE, "v0001")  # the new content is still to be tagged
    else:
        first = stage(tagger, root, shards[0])
        replace()
        with pytest.raises(PartitionInvalid, match=r"part-0\.parquet: changed"):
            stage(tagger, root, shards[1])
        assert Path(first).exists()
        assert_nothing_published(root)


def pq_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=4)
    return buffer.getvalue()


# ---------------------------------------------------------------- registry and model faults


def test_rollback_without_a_previous_champion_is_one_line(capsys, registry):  # hole 1
    code, out = cli(capsys, "registry", "--registry", str(registry), "rollback")
    assert_one_line_error(code, out, "nothing to roll back to")


@pytest.mark.parametrize("damage", ["garbage-metadata", "tampered-weights", "missing-weights"])
def test_a_damaged_version_is_one_line_error(tmp_path, capsys, registry, good, damage):  # hole 1
    version = Path(registry) / "versions" / "v0001"
    writable(version)
    if damage == "garbage-metadata":
        (version / "metadata.json").write_text("{not json")
    elif damage == "tampered-weights":
        with open(version / "weights.npz", "ab") as f:
            f.write(b"\0")
    else:
        (version / "weights.npz").unlink()
    code, out = cli(capsys, "registry", "--registry", str(registry), "show", "v0001")
    assert_one_line_error(code, out, "v0001")
    root = tmp_path / "catalogue"
    write_day(root, {"part-0.parquet": items_table([("p1", good[0], None)])})
    code, out = cli(capsys, *tag_args(root, registry))
    assert_one_line_error(code, out, "v0001")
    assert_nothing_published(root)


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.inf, math.nan])  # hole 2
def test_a_non_positive_or_non_finite_temperature_is_refused(champion_registry, temperature):
    good_one = Classifier.from_registry(champion_registry)
    with pytest.raises(ModelError, match="temperature"):
        Classifier(good_one.kernels, good_one.biases, temperature=temperature)


def test_a_registered_zero_temperature_is_refused_at_load(tmp_path, capsys, registry, good):
    reg = Registry(registry)
    meta = reg.get("champion").metadata
    version = register_variant(registry, tmp_path,
                               calibration={**meta.get("calibration", {}), "temperature": 0})
    with pytest.raises(ModelError, match="temperature"):
        Classifier.from_registry(registry, version)
    root = tmp_path / "catalogue"
    write_day(root, {"part-0.parquet": items_table([("p1", good[0], None)])})
    code, out = cli(capsys, *tag_args(root, registry, "--model", version))
    assert_one_line_error(code, out, "temperature")
    assert_nothing_published(root)


def test_non_finite_confidences_fail_validation(tmp_path, good, tagger):  # hole 2
    root = tmp_path / "catalogue"
    write_day(root, {"part-0.parquet": items_table([(f"p{i}", good[i], None) for i in range(4)])})
    shard, = plan_shards(root, DATE)
    staged = stage(tagger, root, shard)
    table = pq.read_table(staged)
    index = table.schema.get_field_index("category_confidence")
    table = table.set_column(index, table.schema.field(index),
                             pa.array([math.nan] * 4, pa.float32()))
    pq.write_table(table, staged)
    publish(root, [staged])
    with pytest.raises(PartitionInvalid, match="non-finite"):
        validate_partition(root, DATE)


def test_forged_metadata_is_refused_by_the_gate(tmp_path, capsys, registry):  # hole 3
    reg = Registry(registry)
    weak = reg.get("champion").metadata["metrics"]
    version = register_variant(registry, tmp_path, metrics={
        **weak, "accuracy": 0.01, "per_class_recall": [0.01] * 10})
    path = Path(registry) / "versions" / version / "metadata.json"
    writable(path)
    meta = json.loads(path.read_text())
    meta["metrics"] |= {"accuracy": 0.99, "per_class_recall": [0.99] * 10}
    path.write_text(json.dumps(meta))
    with pytest.raises(CorruptMetadataError, match=r"metadata\.json"):
        reg.get(version)
    code, out = cli(capsys, "registry", "--registry", str(registry), "promote", version)
    assert_one_line_error(code, out, "metadata.json")
    assert reg.champion() == "v0001"


def test_concurrent_promotions_leave_one_consistent_champion(tmp_path, registry):
    versions = [register_variant(registry, tmp_path) for _ in range(3)]
    code = ("import sys; from model_registry import Registry, GatePolicy; "
            "Registry(sys.argv[1]).promote(sys.argv[2], policy=GatePolicy(min_accuracy=0, "
            "min_class_recall=0, tolerance=1), actor=sys.argv[2])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(registry), v], cwd=REPO)
             for v in versions]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    reg = Registry(registry)
    assert reg.champion() in versions
    assert sorted(e["actor"] for e in reg.events() if e["event"] == "promoted"
                  and e["actor"] != "tests") == versions


# ---------------------------------------------------------------- staging, kills, publishing


def test_staging_leftovers_are_collected_but_never_a_fresh_runs(tmp_path, good,
                                                               tagger):  # hole 8
    root = tmp_path / "catalogue"
    write_day(root, {"part-0.parquet": items_table([(f"p{i}", good[i], None) for i in range(4)])})
    shard, = plan_shards(root, DATE)
    dead = Path(stage(tagger, root, shard, "killed-yesterday")).parent
    fresh = Path(stage(tagger, root, shard, "still-running")).parent  # between shard tasks
    old = time.time() - 3 * 24 * 3600
    for path in [dead, *dead.iterdir()]:
        os.utime(path, (old, old))
    staged = stage(tagger, root, shard, "this-one")
    publish(root, [staged])
    assert not dead.exists() and fresh.exists()
    assert not Path(staged).parent.exists()


def test_sigkill_while_tagging_then_rerun(tmp_path, good, champion_registry):
    root = tmp_path / "catalogue"
    rows = [(f"p{i}", good[i % 4], None) for i in range(120)]
    day = write_day(root, {"part-0.parquet": items_table(rows)}, row_group_size=10)
    before = fingerprint(day)
    command = [sys.executable, "-m", "tagging.cli",
               *tag_args(root, champion_registry, "--rows-per-shard", "10")]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(staging_root(root).path.rglob("shard-*.parquet")):
        assert proc.poll() is None and time.monotonic() < deadline, "finished before the kill"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its decoding processes, as a lost host
    proc.wait()
    assert_nothing_published(root)
    leftover = next(staging_day(root, DATE).path.iterdir())
    old = time.time() - 3 * 24 * 3600
    for path in [leftover, *leftover.iterdir()]:
        os.utime(path, (old, old))
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(published_rows(root)["product_id"].to_pylist()) == sorted(r[0] for r in rows)
    assert not leftover.exists()
    assert fingerprint(day) == before


PUBLISH = """
import sys
from tagging.catalogue.publish import publish_partition
publish_partition(sys.argv[1], sys.argv[2], staged=sys.argv[3:], model_version="v0001",
                  tagged_at="2026-11-21T00:00:00")
"""


def test_concurrent_publishes_of_the_same_result_commit_once(tmp_path, good, tagger):
    root = tmp_path / "catalogue"
    write_day(root, {"part-0.parquet": items_table([(f"p{i}", good[i], None) for i in range(4)])})
    shard, = plan_shards(root, DATE)
    runs = [stage(tagger, root, shard, f"r{n}") for n in range(4)]
    procs = [subprocess.Popen([sys.executable, "-c", PUBLISH, str(root), DATE, s], cwd=REPO,
                              stderr=subprocess.PIPE, text=True) for s in runs]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert published_rows(root).num_rows == 4
    validate_partition(root, DATE)
    assert len(history(root, DATE)) == 1  # the same model on the same input: one commit


@pytest.mark.parametrize("limit", [3_000_000_000, 1_500_000_000])
def test_tagging_under_an_address_space_limit(tmp_path, good, champion_registry, limit):
    """A batch host's `ulimit -v`: 3 GB is enough (the run publishes), 1.5 GB is refused at
    start with one line naming what it needs (it used to abort in the Delta commit)."""
    import resource

    write_day(tmp_path, {"part-0.parquet": items_table(
        [(f"p{i}", good[i % len(good)], None) for i in range(20)])})
    proc = subprocess.run(
        [sys.executable, "-m", "tagging.cli", *tag_args(tmp_path, champion_registry, *LOOSE)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
        env={**os.environ, "COLUMNS": "200"},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    if limit >= 3_000_000_000:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert published_rows(tmp_path).num_rows == 20
    else:
        assert_one_line_error(proc.returncode, proc.stdout + proc.stderr,
                              "address-space limit", "1.40 GB", "at least 2 GB")
        assert read_manifest(tmp_path, DATE) is None
