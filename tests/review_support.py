"""Shared by the review tests: a real tagged partition, the app in its own process, Chromium.

The partition is tagged by the real tagger with the session's quickly trained champion
(conftest.champion_registry) and holds hostile rows: a product id that is a script tag,
ids with URL characters, an image_uri out of the image root, HTML bytes as a photo, a row
already verified in the input. The app runs as `python -m uvicorn --factory ...` on a
free loopback port and is stopped by its PID. Chromium and chromedriver are Debian's
(/usr/bin): Selenium never downloads anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import photo

from tagging.labels import CATEGORY_SLUGS

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--window-size=1280,900"]
USER_HEADER = "X-Forwarded-User"
HOSTILE_ID = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'
URL_ID = "sku/with ?query#hash&%2F"
ESCAPE_ID = "sku-escape"
HTML_ID = "sku-html"
URI_ID = "sku-uri"
VERIFIED_ID = "sku-verified"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_partition(root: Path, day: str, fmnist: Any, rows: int = 40, *,
                    offset: int = 0) -> Path:
    """A day of the catalogue's input: Fashion-MNIST test photos plus hostile rows."""
    images = root / "images"
    (images / "ok").mkdir(parents=True, exist_ok=True)
    (images / "ok" / "photo.png").write_bytes(photo(fmnist.x_test[offset + rows], "PNG"))
    ids, data, uris, truth, verified = [], [], [], [], []

    def add(pid: str, image: bytes | None, uri: str | None, label: int, given: str | None):
        ids.append(pid)
        data.append(image)
        uris.append(uri)
        truth.append(CATEGORY_SLUGS[label])
        verified.append(given)

    for i in range(offset, offset + rows):
        add(f"sku-{i:04d}", photo(fmnist.x_test[i], "JPEG" if i % 2 else "PNG"), None,
            int(fmnist.y_test[i]), None)
    label = int(fmnist.y_test[offset + rows])
    add(HOSTILE_ID, photo(fmnist.x_test[offset + rows], "JPEG"), None, label, None)
    add(URL_ID, photo(fmnist.x_test[offset + rows + 1], "JPEG"), None,
        int(fmnist.y_test[offset + rows + 1]), None)
    add(URI_ID, None, "ok/photo.png", label, None)
    add(ESCAPE_ID, None, "../../../../etc/passwd", 0, None)
    add(HTML_ID, b"<html><script>alert(1)</script></html>", None, 0, None)
    label = int(fmnist.y_test[offset + rows + 2])
    add(VERIFIED_ID, photo(fmnist.x_test[offset + rows + 2], "JPEG"), None, label,
        CATEGORY_SLUGS[label])
    out = root / "incoming" / f"dt={day}" / "part-0.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "product_id": pa.array(ids, pa.string()),
        "image": pa.array(data, pa.binary()),
        "image_uri": pa.array(uris, pa.string()),
        "true_category": pa.array(truth, pa.string()),
        "verified_category": pa.array(verified, pa.string()),
    }), out, row_group_size=16)
    return out


def tag_day(root: Path, day: str, registry: Path) -> dict:
    """Tag and publish a day with the real tagger (the threshold flags about half of a
    quickly trained model's tags)."""
    from tagging.pipeline.tag import tag_partition

    return tag_partition(root, day, registry_root=registry, review_threshold=0.5, workers=1)


class AppServer:
    """`python -m uvicorn --factory tagging.review.server:app_from_env` on a free port."""

    def __init__(self, workdir: Path, env: dict[str, str]):
        self.workdir = workdir
        self.env = {**os.environ, **env}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log = workdir / f"app-{self.port}.log"

    def start(self, timeout: float = 60) -> AppServer:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory",
                 "tagging.review.server:app_from_env", "--host", "127.0.0.1",
                 "--port", str(self.port), "--log-level", "warning"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2):
                    return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"review app did not start: {self.log.read_text()}"
                                       ) from None
                time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL, as the OOM killer would."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


@contextlib.contextmanager
def running(workdir: Path, env: dict[str, str]) -> Iterator[AppServer]:
    server = AppServer(workdir, env).start()
    try:
        yield server
    finally:
        server.stop()


def request(server: AppServer, method: str, path: str, *, user: str | None = "alice",
            body: Any = None, headers: dict[str, str] | None = None,
            form: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one HTTP request to the app (no redirects followed)."""
    data, sent = None, dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
    if form is not None:
        from urllib.parse import urlencode

        data = urlencode(form).encode()
        sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
    if user is not None:
        sent[USER_HEADER] = user
    req = urllib.request.Request(server.url + path, data=data, method=method, headers=sent)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def chromium(user: str | None, profile: Path, *, javascript: bool = True) -> Any:
    """A headless Chromium driven by Debian's chromedriver; `user` is sent as the sign-in
    proxy's header on every request (DevTools), as an SSO proxy would add it."""
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip("Chromium not installed: apt-get install -y chromium chromium-driver "
                    "(make system-deps)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download
    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console: CSP reports
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                              options=options)
    if user is not None:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {USER_HEADER: user}})
    return driver


DAY = "2026-06-01"


def tagged_catalogue(workdir: Path, fmnist: Any, registry: Path, *, day: str = DAY,
                     rows: int = 40) -> Path:
    """A catalogue with one day of photos (hostile rows included) published by the tagger."""
    root = workdir / "catalogue"
    write_partition(root, day, fmnist, rows)
    tag_day(root, day, registry)
    return root


def app_env(catalogue: Path, db: Path, **extra: str) -> dict[str, str]:
    return {"TAGGING_CATALOGUE": str(catalogue), "TAGGING_REVIEW_DB": str(db), **extra}


def filled_store(db: Path, catalogue: Path, *, audit_share: float = 0.05):
    """A review store at `db`, filled from the catalogue's published days."""
    from tagging.review.queue import fill
    from tagging.review.store import ReviewStore
    from tagging.settings import ReviewSettings

    store = ReviewStore(str(db))
    fill(store, catalogue, settings=ReviewSettings(audit_share=audit_share))
    return store


def queued(store: Any) -> dict[str, str]:
    """product_id -> reason of every queued item."""
    with store.db.transaction() as cur:
        rows = cur.execute("SELECT product_id, reason FROM items").all()
    return {r["product_id"]: r["reason"] for r in rows}
