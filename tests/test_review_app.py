"""The review app over HTTP (a real uvicorn process on loopback) and the queue's fill, on a
partition published by the real tagger: the API's answers and errors, identity and
cross-site refusals, photos served only from the catalogue's rows, SIGKILL mid-answer."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from review_support import (
    DAY,
    ESCAPE_ID,
    HOSTILE_ID,
    HTML_ID,
    URI_ID,
    URL_ID,
    VERIFIED_ID,
    AppServer,
    app_env,
    filled_store,
    queued,
    request,
    running,
    tagged_catalogue,
)

from tagging.catalogue.published import read_published
from tagging.review.queue import fill, in_audit
from tagging.review.service import photo_url
from tagging.review.store import ReviewStore
from tagging.settings import ReviewSettings

HOSTILE: dict[str, int] = {}  # what each hostile request got: printed for the report


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, fmnist, champion_registry):
    return tagged_catalogue(tmp_path_factory.mktemp("review-app"), fmnist, champion_registry)


@pytest.fixture(scope="module")
def app(catalogue, tmp_path_factory):
    work = tmp_path_factory.mktemp("app")
    filled_store(work / "review.db", catalogue).close()
    with running(work, app_env(catalogue, work / "review.db")) as server:
        yield server
    print("\nhostile requests:", json.dumps(HOSTILE, indent=1))


def test_fill_asks_flagged_rows_and_an_audit_slice_once(catalogue, tmp_path):
    settings = ReviewSettings(audit_share=0.5)
    store = ReviewStore(str(tmp_path / "review.db"))
    [report] = fill(store, catalogue, settings=settings)
    rows = read_published(catalogue, DAY, ["product_id", "needs_review", "tag_error",
                                           "verified_category"]).to_pylist()
    expected = {}
    for row in rows:
        if row["verified_category"] is not None:
            continue
        if row["needs_review"]:
            expected[row["product_id"]] = "needs_review"
        elif row["tag_error"] is None and in_audit(row["product_id"], 0.5, settings.audit_seed):
            expected[row["product_id"]] = "audit"
    assert queued(store) == expected
    assert VERIFIED_ID not in expected and report.already_verified == 1
    assert {ESCAPE_ID, HTML_ID} <= set(expected)  # untaggable photos are asked too
    assert 0 < report.audit < sum(1 for r in rows if not r["needs_review"])
    assert report.added == len(expected)
    assert [r.added for r in fill(store, catalogue, settings=settings)] == [0]  # idempotent
    assert queued(store) == expected
    assert not any(in_audit(r["product_id"], 0.0, "s") for r in rows)
    assert all(in_audit(r["product_id"], 1.0, "s") for r in rows)


def test_api_answers_and_refuses(app, catalogue):
    status, _, body = request(app, "GET", "/api/queue?limit=3", user="api-client")
    items = json.loads(body)["items"]
    assert status == 200 and len(items) == 3
    first = items[0]
    assert first["image_url"] == photo_url(DAY, first["product_id"])
    assert {"partition", "product_id", "top3", "model_version"} <= set(first)

    answer = {"partition": DAY, "product_id": first["product_id"], "category": "bag"}
    status, _, body = request(app, "POST", "/api/verifications", user="api-client", body=answer)
    record = json.loads(body)
    assert status == 201 and record["category"] == "bag"
    assert record["reviewer"] == "api-client" and record["top3"] == first["top3"]
    # any published product may be answered, queued or not (a PIM correcting a tag)
    status, _, _ = request(app, "POST", "/api/verifications", user="api-client",
                           body={**answer, "product_id": VERIFIED_ID})
    assert status == 201

    cases = {
        "unknown category": ("POST", "/api/verifications", {"user": "api-client",
                             "body": {**answer, "category": "hat"}}, 422),
        "unknown product": ("POST", "/api/verifications", {"user": "api-client",
                            "body": {**answer, "product_id": "no-such-sku"}}, 404),
        "unpublished day": ("POST", "/api/verifications", {"user": "api-client",
                            "body": {**answer, "partition": "1999-01-01"}}, 404),
        "path as day": ("POST", "/api/verifications", {"user": "api-client",
                        "body": {**answer, "partition": "../../etc"}}, 404),
        "no identity (API)": ("POST", "/api/verifications", {"user": None, "body": answer}, 401),
        "no identity (page)": ("GET", "/", {"user": None, "headers": {"Accept": "text/html"}},
                               401),
        "no identity (status)": ("GET", "/api/status", {"user": None}, 401),
        "foreign Origin (API)": ("POST", "/api/verifications", {
            "user": "api-client", "body": answer,
            "headers": {"Origin": "https://evil.example"}}, 403),
        "Origin null": ("POST", "/api/verifications", {
            "user": "api-client", "body": answer, "headers": {"Origin": "null"}}, 403),
        "cross-site fetch (no Origin)": ("POST", "/api/undo", {
            "user": "api-client", "headers": {"Sec-Fetch-Site": "cross-site"}}, 403),
        "foreign Origin (form)": ("POST", "/answer", {
            "user": "api-client", "form": {**answer, "answer": "bag", "csrf": "x"},
            "headers": {"Origin": "https://evil.example"}}, 403),
        "form without its cookie token": ("POST", "/answer", {
            "user": "api-client", "form": {"partition": DAY, "product_id": first["product_id"],
                                           "answer": "bag", "csrf": "guessed"}}, 403),
        "JSON sent as text/plain": ("POST", "/api/verifications", {
            "user": "api-client", "body": answer,
            "headers": {"Content-Type": "text/plain"}}, 422),
    }
    for name, (method, path, kwargs, expected) in cases.items():
        got = request(app, method, path, **kwargs)[0]
        HOSTILE[name] = got
        assert got == expected, name
    # the app's own origin is welcome
    status, _, _ = request(app, "POST", "/api/verifications", user="api-client", body=answer,
                           headers={"Origin": app.url})
    assert status == 201

    status, _, body = request(app, "GET", "/api/status", user="api-client")
    state = json.loads(body)
    assert status == 200 and state["per_reviewer"]["api-client"] >= 2
    assert request(app, "POST", "/api/undo", user="api-client")[0] == 200
    assert request(app, "POST", "/api/undo", user="nobody-yet")[0] == 404

    status, _, body = request(app, "GET", "/openapi.json", user=None)
    paths = json.loads(body)["paths"]
    assert {"/api/queue", "/api/verifications", "/api/status", "/api/undo"} <= set(paths)
    assert paths["/api/verifications"]["post"]["responses"].keys() >= {"201", "404", "422"}


def test_metrics_are_scraped_without_identity_and_name_nothing(app, catalogue):
    """Prometheus /metrics: the store's counts and ages, no header needed, no product id,
    reviewer or photo in it (test_api_answers_and_refuses answered before)."""
    from prometheus_client.parser import text_string_to_metric_families

    status, headers, body = request(app, "GET", "/metrics", user=None)
    assert status == 200
    assert {k.lower(): v for k, v in headers.items()}["content-type"].startswith("text/plain")
    text = body.decode()
    samples = {s.name: s.value for family in text_string_to_metric_families(text)
               for s in family.samples}
    store = ReviewStore(str(app.env["TAGGING_REVIEW_DB"]))
    vitals = store.vitals()
    store.close()
    assert samples["tagging_review_queue_length"] == vitals["queue"] > 0
    assert samples["tagging_review_answers_total"] == vitals["answers_total"] >= 2
    assert samples["tagging_review_answers_per_hour"] >= 2
    assert samples["tagging_review_oldest_open_seconds"] > 0
    assert "tagging_review_claimed" in samples
    products = read_published(catalogue, DAY, ["product_id"])["product_id"].to_pylist()
    assert not [p for p in products if p in text]
    assert "api-client" not in text and DAY not in text


def test_photos_come_only_from_the_catalogue_rows(app):
    def get(product_id: str) -> tuple[int, dict[str, str], bytes]:
        return request(app, "GET", photo_url(DAY, product_id), user="viewer")

    items = json.loads(request(app, "GET", "/api/queue?limit=100", user="viewer")[2])["items"]
    served = {}
    for item in items:
        status, headers, body = get(item["product_id"])
        served[item["product_id"]] = (status, headers.get("content-type"))
        if status == 200:
            assert headers["x-content-type-options"] == "nosniff"
            assert "sandbox" in headers["content-security-policy"]
            kind = "image/png" if body.startswith(b"\x89PNG") else "image/jpeg"
            assert headers["content-type"] == kind  # from the bytes, not a name
    assert served[ESCAPE_ID][0] == 403  # image_uri out of the image root
    assert served[HTML_ID][0] == 415  # HTML is not served as anything
    if URI_ID in served:
        assert served[URI_ID] == (200, "image/png")
    for name, product_id in [("photo: image_uri escaping the root", ESCAPE_ID),
                             ("photo: HTML bytes", HTML_ID),
                             ("photo: not a queued product", "sku-unknown"),
                             ("photo: a path as product id", "../../../../etc/passwd")]:
        HOSTILE[name] = get(product_id)[0]
    assert HOSTILE["photo: not a queued product"] == 404
    assert HOSTILE["photo: a path as product id"] == 404
    for product_id in (HOSTILE_ID, URL_ID):  # ids with markup and URL characters
        if product_id in served:
            assert served[product_id][0] == 200
    assert request(app, "GET", photo_url(DAY, items[0]["product_id"]), user=None)[0] == 401


def test_page_escapes_and_sets_strict_cookies(app, catalogue, tmp_path):
    store = ReviewStore(str(tmp_path / "hostile.db"))
    fill(store, catalogue, settings=ReviewSettings(audit_share=1.0))
    with running(tmp_path, app_env(catalogue, tmp_path / "hostile.db")) as server:
        for _ in range(100):  # answer everything in front of the hostile id
            status, headers, body = request(server, "GET", "/", user="reader",
                                            headers={"Accept": "text/html"})
            page = body.decode()
            if "pwned" in page:
                break
            product = page.split('name="product_id" value="')[1].split('"')[0]
            request(server, "POST", "/api/verifications", user="reader",
                    body={"partition": DAY, "product_id": _unescape(product), "category": "bag"})
        assert status == 200 and "<script>document.title" not in page
        assert "&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;" in page
        assert "default-src 'none'" in headers["content-security-policy"]
        cookie = headers["set-cookie"].lower()
        assert "samesite=strict" in cookie and "httponly" in cookie


def _unescape(value: str) -> str:
    import html

    return html.unescape(value)


def test_sigkill_mid_answer_loses_no_committed_answer(catalogue, tmp_path):
    db = tmp_path / "review.db"
    products = list(queued(filled_store(db, catalogue)))
    assert products
    committed: list[dict] = []
    stop = threading.Event()

    def answer_forever(name: str) -> None:
        i = 0
        while not stop.is_set():
            body = {"partition": DAY, "product_id": products[i % len(products)],
                    "category": "coat"}
            try:
                status, _, raw = request(server, "POST", "/api/verifications", user=name,
                                         body=body)
            except OSError:
                return  # the app died mid-request: this answer was never acknowledged
            assert status == 201, raw
            committed.append(json.loads(raw))
            i += 1

    server = AppServer(tmp_path, app_env(catalogue, db)).start()
    try:
        threads = [threading.Thread(target=answer_forever, args=(f"r{i}",)) for i in range(3)]
        for thread in threads:
            thread.start()
        while len(committed) < 30 and any(t.is_alive() for t in threads):
            time.sleep(0.01)
        assert len(committed) >= 30
        server.kill()  # SIGKILL while answers are in flight
        stop.set()
        for thread in threads:
            thread.join(30)
    finally:
        server.stop()
    acknowledged = {r["id"]: r for r in committed}
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    stored = {a["id"]: a for a in ReviewStore(str(db)).answers()}
    assert set(acknowledged) <= set(stored)
    assert all(stored[i]["product_id"] == r["product_id"] for i, r in acknowledged.items())
    print(f"\nSIGKILL: {len(acknowledged)} answers acknowledged, {len(stored)} stored")
    with running(tmp_path, app_env(catalogue, db)) as again:  # and it starts again
        state = json.loads(request(again, "GET", "/api/status", user="r0")[2])
        assert state["answers"] == len(stored)


def test_cli_fills_shows_disagreements_and_exports(catalogue, tmp_path):
    def tagging(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "tagging.cli", "review", *args,
                               "--catalogue", str(catalogue), "--db", str(db)],
                              capture_output=True, text=True, timeout=300, check=False,
                              env={**os.environ, "COLUMNS": "200"})
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    db = tmp_path / "review.db"
    assert "needs review" in tagging("fill")
    store = ReviewStore(str(db))
    product = next(iter(queued(store)))
    item = store.item(DAY, product)
    for who, answer in (("ann", "bag"), ("ben", "coat")):
        store.answer(who, DAY, product, answer, model_version=item.model_version,
                     top3=item.top3)
    out = tagging("status")
    assert "1 disagreements" in out and "ann: bag, ben: coat" in out
    assert "written" in tagging("export") and "unchanged" in tagging("export")
