"""The labelled-photo store: harvest, rejects, deduplication, the fixed holdout, idempotency,
concurrent harvests; the store on a local folder and on the S3 server (`labels_root`: the
behaviour is the same), the catalogue's inputs on disk."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import photo, write_input

from tagging.catalogue.layout import images_dir
from tagging.labels import is_holdout, parse_label
from tagging.loop.harvest import LabelStoreError, photo_folder_source
from tagging.loop.labelstore import LabelStore
from tagging.photos.render import PIXELS

REPO = Path(__file__).resolve().parents[1]


def write_partition(root: Path, day: str, rows: list[dict], name: str = "part-0.parquet") -> Path:
    """catalogue/incoming/dt=DAY/NAME with the given rows (missing columns are null)."""
    columns = {"product_id": pa.string(), "image": pa.binary(), "image_uri": pa.string(),
               "verified_category": pa.string(), "title": pa.string()}
    table = pa.table({c: [r.get(c) for r in rows] for c in columns},
                     schema=pa.schema(list(columns.items())))
    return write_input(root, day, table, name)


@pytest.fixture(scope="module")
def photos(fmnist) -> list[tuple[bytes, int]]:
    """Eight distinct product photos made from test images, with their true class."""
    return [(photo(fmnist.x_test[i], "PNG"), int(fmnist.y_test[i])) for i in range(8)]


@pytest.fixture
def store(labels_root) -> LabelStore:
    return LabelStore(labels_root)


def labels_of(store: LabelStore) -> dict[str, int]:
    table = store.table()
    return dict(zip(table["product_id"].to_pylist(), table["label"].to_pylist(), strict=True))


def test_parse_label_accepts_slugs_names_and_ids_only():
    assert [parse_label(v) for v in ("ankle-boot", "Ankle boot", "T-shirt/top", "3", 7,
                                     " coat ")] == [9, 9, 0, 3, 7, 4]
    assert [parse_label(v) for v in ("boots", "10", -1, 12, "", None, True)] == [None] * 7


def test_harvest_counts_rejects_and_stores_what_the_tagger_sees(tmp_path, photos, store):
    images_dir(tmp_path).path.mkdir()
    (images_dir(tmp_path).path / "p5.png").write_bytes(photos[5][0])
    rows = [
        {"product_id": "p0", "image": photos[0][0], "verified_category": "dress"},
        {"product_id": "p1", "image": photos[1][0], "verified_category": "7"},
        {"product_id": "p2", "image": photos[2][0], "verified_category": "boots"},
        {"product_id": "p3", "image": b"not a photo", "verified_category": "bag"},
        {"product_id": "p4", "verified_category": "bag"},
        {"product_id": "p5", "image_uri": "p5.png", "verified_category": "sandal"},
        {"product_id": "p6", "image_uri": "gone.png", "verified_category": "sandal"},
        {"product_id": "p7", "image": photos[7][0]},  # not verified: not a label at all
    ]
    write_partition(tmp_path, "2026-03-01", rows)
    report = store.harvest_partition(tmp_path, "2026-03-01")
    assert report.harvested and report.verified_rows == 7 and report.accepted == 3
    assert report.rejected == {"missing image": 2, "undecodable photo": 1, "unknown label": 1}
    assert labels_of(store) == {"p0": 3, "p1": 7, "p5": 5}

    table = store.table()
    row = table.filter(pa.compute.equal(table["product_id"], "p5")).to_pylist()[0]
    np.testing.assert_array_equal(np.frombuffer(row["pixels"], np.uint8).reshape(28, 28),
                                  PIXELS.render(photos[5][0]))
    assert row["source"] == "dt=2026-03-01" and len(row["photo_sha256"]) == 64
    status = store.status()
    assert status["labels"] == 3 and status["train"] + status["holdout"] == 3
    assert status["rejected"]["missing image"] == 2
    examples = status["sources"]["dt=2026-03-01"]["rejected_examples"]
    assert {e["product_id"] for e in examples} == {"p2", "p3", "p4", "p6"}


def test_reharvest_adds_nothing_and_a_changed_partition_is_harvested_again(tmp_path, photos,
                                                                          store):
    day = "2026-03-01"
    path = write_partition(tmp_path, day, [
        {"product_id": "a", "image": photos[0][0], "verified_category": "dress"},
        {"product_id": "b", "image": photos[1][0]}])
    assert store.harvest_partition(tmp_path, day).harvested
    objects = store.objects.list()
    first, rows = store.table(), store.rows()

    assert not store.harvest_partition(tmp_path, day).harvested
    assert store.objects.list() == objects  # nothing written
    os.utime(path, ns=(1, 1))  # same bytes, new mtime: hashed again, same rows written
    assert store.harvest_partition(tmp_path, day).harvested
    assert store.table().equals(first) and store.rows().equals(rows)
    assert [o.key for o in store.objects.list()] == ["data/dt=2026-03-01.parquet"]

    # the day is re-exported with one more verified row: harvested again, one more label
    write_partition(tmp_path, day, [
        {"product_id": "a", "image": photos[0][0], "verified_category": "dress"},
        {"product_id": "b", "image": photos[1][0], "verified_category": "sneaker"}])
    report = store.harvest_partition(tmp_path, day)
    assert report.harvested and report.accepted == 2
    table = store.table()
    assert labels_of(store) == {"a": 3, "b": 7}
    kept = table.filter(pa.compute.equal(table["product_id"], "a"))
    assert kept["harvested_at"].equals(first["harvested_at"])  # a's label is not new


def test_duplicates_and_a_product_verified_twice(tmp_path, photos, store):
    write_partition(tmp_path, "2026-03-01", [
        {"product_id": "x", "image": photos[0][0], "verified_category": "dress"},
        {"product_id": "x", "image": photos[1][0], "verified_category": "coat"},
        {"product_id": "y", "image": photos[2][0], "verified_category": "bag"}])
    write_partition(tmp_path, "2026-03-02", [
        # verified again later with another label: the latest verification wins
        {"product_id": "y", "image": photos[2][0], "verified_category": "pullover"},
        # the same photo bytes as x under another product id: stored once (x came first)
        {"product_id": "z", "image": photos[0][0], "verified_category": "dress"}])
    reports = store.harvest_recent(tmp_path, "2026-03-02", days=30)
    assert [r.source for r in reports] == ["dt=2026-03-01", "dt=2026-03-02"]
    assert reports[0].rejected == {"duplicate product_id": 1}
    assert labels_of(store) == {"x": 3, "y": 2}
    assert store.table()["source"].to_pylist() == ["dt=2026-03-01", "dt=2026-03-02"]


def test_verified_at_from_the_input_decides_which_verification_is_latest(tmp_path, photos,
                                                                         store):
    for day, label, when in (("2026-03-01", "coat", "2026-03-05T10:00:00+00:00"),
                             ("2026-03-02", "shirt", "2026-03-04T10:00:00+00:00")):
        write_input(tmp_path, day, pa.table({"product_id": ["q"], "image": [photos[3][0]],
                                             "verified_category": [label],
                                             "verified_at": [when]}))
    store.harvest_recent(tmp_path, "2026-03-02")
    table = store.table()
    assert labels_of(store) == {"q": 4}  # verified on the 5th, the later verification
    assert table["verified_at"][0].as_py() == datetime(2026, 3, 5, 10, tzinfo=UTC)


def test_holdout_is_a_fixed_fifth_and_never_moves_as_the_store_grows():
    ids = [f"sku-{i}" for i in range(5000)]
    side = is_holdout(ids)
    assert 0.18 < side.mean() < 0.22
    grown = is_holdout([f"new-{i}" for i in range(300)] + ids[::-1])
    np.testing.assert_array_equal(grown[300:][::-1], side)
    np.testing.assert_array_equal(is_holdout(ids[:10]), side[:10])


def test_holdout_side_of_stored_products_is_stable_as_days_are_added(tmp_path, photos, store):
    sides: dict[str, bool] = {}
    for d, (image, label) in enumerate(photos):
        write_partition(tmp_path, f"2026-03-0{d + 1}", [
            {"product_id": f"p{d}", "image": image, "verified_category": str(label)}])
        store.harvest_recent(tmp_path, f"2026-03-0{d + 1}", days=3)
        table = store.table()
        now = dict(zip(table["product_id"].to_pylist(), table["holdout"].to_pylist(),
                       strict=True))
        assert {k: now[k] for k in sides} == sides
        sides = now
    assert len(sides) == len(photos)


def test_features_are_computed_once_per_photo(tmp_path, photos, monkeypatch):
    """A re-harvested day (a row verified later) encodes only its new photo: the others
    keep their stored pixels and features; another encoder's features are all new."""
    from tagging.encoder import DEFAULT_ENCODER, Encoder
    from tagging.model.inputs import ModelInput

    encoded: list[int] = []
    features_of = Encoder.features_of
    monkeypatch.setattr(Encoder, "features_of", lambda self, images, ok: (
        encoded.append(int(ok.sum())), features_of(self, images, ok))[1])
    store = LabelStore(tmp_path / "labels")
    rows = [{"product_id": f"p{i}", "image": photos[i][0],
             "verified_category": str(photos[i][1])} for i in range(3)]
    write_partition(tmp_path, "2026-03-01", [*rows[:2], {**rows[2], "verified_category": None}])
    assert store.harvest_partition(tmp_path, "2026-03-01", encoder=DEFAULT_ENCODER).harvested
    before = store.table()
    write_partition(tmp_path, "2026-03-01", rows)
    assert store.harvest_partition(tmp_path, "2026-03-01", encoder=DEFAULT_ENCODER).harvested
    assert encoded == [2, 1]
    after = store.table()
    assert after["features_of"].unique().to_pylist() == [ModelInput(DEFAULT_ENCODER).key]
    assert after["features"].to_pylist()[:2] == before["features"].to_pylist()
    assert len(after["features"][2].as_py()) == 2 * 1280  # float16
    assert store.harvest_partition(tmp_path, "2026-03-01",
                                   encoder="efficientnet-lite1").harvested
    assert encoded == [2, 1, 3]


def test_a_photo_folder_joins_the_store(tmp_path, photo_set, store):
    report = store.add_photo_folder(photo_set)
    assert report.accepted == 40 and report.rejected == {"undecodable photo": 1}
    assert not store.add_photo_folder(photo_set).harvested
    table = store.table()
    assert set(table["origin"].to_pylist()) == {"shop", "studio"}
    assert table["source"].unique().to_pylist() == [photo_folder_source(photo_set)]
    assert all(p.startswith(f"{photo_set.name}/") for p in table["product_id"].to_pylist())


def test_a_change_of_preprocessing_harvests_again(tmp_path, photos, monkeypatch, store):
    """Stored pixels must be what the tagger feeds the model, so a new preprocessing
    (another signature) makes the unchanged partition be harvested again."""
    import tagging.loop.harvest as harvest

    write_partition(tmp_path, "2026-03-01", [
        {"product_id": "a", "image": photos[0][0], "verified_category": "dress"}])
    assert store.harvest_partition(tmp_path, "2026-03-01").harvested
    assert not store.harvest_partition(tmp_path, "2026-03-01").harvested
    monkeypatch.setattr(harvest, "preprocess_signature", lambda encoder=None: "a new one")
    assert store.harvest_partition(tmp_path, "2026-03-01").harvested


HARVESTER = """
    import sys, time
    from pathlib import Path
    from tagging.loop.labelstore import LabelStore

    store, catalogue, day, go = sys.argv[1], Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    while not go.exists():
        time.sleep(0.005)
    print(LabelStore(store).harvest_recent(catalogue, day, days=2, workers=1)[-1].harvested,
          flush=True)
"""


def test_concurrent_harvests_lose_nothing(tmp_path, photos, store):
    """Four processes harvest two days at once (each source object is replaced by a
    compare-and-swap, and no object is shared by two sources): both days land, complete,
    once each, and every process exits cleanly (store objects read through io.BytesIO made
    one in 16-60 abort at exit: storage.read_parquet_bytes)."""
    for d in range(2):
        write_partition(tmp_path, f"2026-03-0{d + 1}", [
            {"product_id": f"p{d}{i}", "image": photos[2 * d + i][0],
             "verified_category": str(photos[2 * d + i][1])} for i in range(2)])
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(HARVESTER),
                               str(store.root), str(tmp_path), "2026-03-02", str(go)],
                              env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    time.sleep(2.0)  # let every interpreter start, then release them together
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert labels_of(store) == {f"p{d}{i}": photos[2 * d + i][1] for d in range(2)
                                for i in range(2)}
    assert store.rows().num_rows == 4
    assert sorted(store.state()["sources"]) == ["dt=2026-03-01", "dt=2026-03-02"]
    assert not any(r.harvested for r in store.harvest_recent(tmp_path, "2026-03-02", days=2))


def test_a_store_written_before_is_read_and_not_harvested_again(tmp_path, photos, store):
    """Source objects without their state in the footer, and _HARVEST.json naming them."""
    write_partition(tmp_path, "2026-03-01", [
        {"product_id": "a", "image": photos[0][0], "verified_category": "dress"},
        {"product_id": "b", "image": b"broken", "verified_category": "bag"}])
    store.harvest_partition(tmp_path, "2026-03-01")
    (source, _, entry), = store._sources()
    buffer = io.BytesIO()
    pq.write_table(store.rows(), buffer)  # no state in the footer, as before
    store.objects.put("data/dt=2026-03-01.parquet", buffer.getvalue())
    store.objects.put("_HARVEST.json", json.dumps({"sources": {source: entry}}).encode())
    assert store.state() == {"sources": {source: entry}}
    assert store.status()["rejected"] == {"undecodable photo": 1}
    assert not store.harvest_partition(tmp_path, "2026-03-01").harvested


def test_an_unreadable_source_object_is_a_clear_error(tmp_path, photos, store):
    write_partition(tmp_path, "2026-03-01", [
        {"product_id": "a", "image": photos[0][0], "verified_category": "dress"}])
    store.harvest_partition(tmp_path, "2026-03-01")
    store.objects.put("data/dt=2026-03-01.parquet", b"not parquet")
    with pytest.raises(LabelStoreError, match=r"data/dt=2026-03-01\.parquet: unreadable"):
        store.table()
    with pytest.raises(LabelStoreError, match="remove it to harvest its source again"):
        store.harvest_partition(tmp_path, "2026-03-01")


def test_the_store_of_a_catalogue_on_s3_is_beside_it(s3_env):
    assert str(LabelStore.of_catalogue("s3://tagging/shop/catalogue/").root) == \
        "s3://tagging/shop/catalogue/labels"


def test_a_harvest_that_loses_the_swap_reads_again(tmp_path, photos, store, labels_root):
    """Another harvest of the same source lands between our read and our write: our
    compare-and-swap fails, we read the object again and find the inputs harvested."""
    day = "2026-03-01"
    write_partition(tmp_path, day, [
        {"product_id": "a", "image": photos[0][0], "verified_category": "dress"}])
    other = LabelStore(labels_root)
    put, calls = store.objects.put, []

    def put_after_the_other(key, data, mode="overwrite"):
        calls.append(mode)
        if len(calls) == 1:
            assert other.harvest_partition(tmp_path, day).harvested
        return put(key, data, mode)

    store.objects.put = put_after_the_other
    assert not store.harvest_partition(tmp_path, day).harvested
    assert calls == ["create"]  # lost once, then found nothing to do
    assert labels_of(store) == {"a": 3}
