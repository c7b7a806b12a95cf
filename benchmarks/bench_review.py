"""How fast the review app serves (issue 17): the page, a photo, an answer, several reviewers.

    .venv/bin/python benchmarks/bench_review.py                 # 300 photos, 200 requests
    .venv/bin/python benchmarks/bench_review.py --requests 500

A tiny model (1 epoch on 3,000 images) tags a day of demo photos (762x1000, as
`tagging demo-catalogue` renders them); every row goes into the queue (audit share 1) of a
SQLite store; the app runs as `python -m uvicorn --factory tagging.review.server:app_from_env`
on loopback. Requests go one at a time over a kept-alive connection and are timed at the
client (so the figures include HTTP and the loopback):

* page: GET / (the reviewer's claim renewed, progress counted, the page rendered);
* photo: GET /photos/... of the photo on that page;
* answer: POST /api/verifications then GET / (the next photo claimed and rendered);
* the same answer cycle by 4 reviewers at once (threads): answers/s and latencies.

Prints a table and writes WORKDIR/review.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAY = "2026-06-01"


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"n": len(ordered), "p50_ms": round(1000 * statistics.median(ordered), 2),
            "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 2),
            "max_ms": round(1000 * ordered[-1], 2)}


class Client:
    """One reviewer's kept-alive connection to the app."""

    def __init__(self, port: int, user: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"X-Forwarded-User": user, "Accept": "text/html"}

    def get(self, path: str) -> tuple[float, int, bytes]:
        start = time.perf_counter()
        self.conn.request("GET", path, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        return time.perf_counter() - start, response.status, body

    def post_json(self, path: str, payload: dict) -> tuple[float, int, bytes]:
        start = time.perf_counter()
        self.conn.request("POST", path, body=json.dumps(payload),
                          headers={**self.headers, "Content-Type": "application/json"})
        response = self.conn.getresponse()
        body = response.read()
        return time.perf_counter() - start, response.status, body


def shown(page: bytes) -> str | None:
    found = re.search(rb'name="product_id" value="([^"]*)"', page)
    return found and found.group(1).decode()


def answer_cycle(client: Client, samples: list[float], stop_after: int) -> int:
    """Answer what the page shows, then load the next page, `stop_after` times."""
    done = 0
    _, _, page = client.get("/")
    while done < stop_after and (product := shown(page)) is not None:
        start = time.perf_counter()
        _, status, _ = client.post_json("/api/verifications", {
            "partition": DAY, "product_id": product, "category": "bag"})
        assert status == 201, status
        _, _, page = client.get("/")
        samples.append(time.perf_counter() - start)
        done += 1
    return done


def prepare(workdir: Path, rows: int, data_dir: str | None) -> tuple[Path, Path]:
    from model_registry import GatePolicy
    from tagging.catalogue.demo import generate_demo_catalogue
    from tagging.model.config import TrainConfig
    from tagging.pipeline.learn import train_and_promote
    from tagging.pipeline.tag import tag_partition
    from tagging.review.queue import fill
    from tagging.review.store import ReviewStore
    from tagging.settings import ReviewSettings

    catalogue, registry = workdir / "catalogue", workdir / "registry"
    if not (registry / "aliases" / "champion.json").exists():
        train_and_promote(TrainConfig.from_dict({"train_subset": 3000, "epochs": 1,
                                                 "hidden_units": [64]}),
                          registry_root=registry, data_dir=data_dir, created_by="bench",
                          policy=GatePolicy(min_accuracy=0.5, min_class_recall=0.0))
    generate_demo_catalogue(catalogue, [DAY], rows_per_day=rows, data_dir=data_dir)
    tag_partition(catalogue, DAY, registry_root=registry)
    db = workdir / "review.db"
    for stale in workdir.glob("review.db*"):
        stale.unlink()
    store = ReviewStore(str(db))
    fill(store, catalogue, settings=ReviewSettings(audit_share=1.0))
    store.close()
    return catalogue, db


def start_app(catalogue: Path, db: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "TAGGING_CATALOGUE": str(catalogue), "TAGGING_REVIEW_DB": str(db)}
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory",
                                 "tagging.review.server:app_from_env", "--host", "127.0.0.1",
                                 "--port", str(port), "--log-level", "warning"],
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the app did not start, see {log}") from None
            time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300, help="photos in the day (queue)")
    parser.add_argument("--requests", type=int, default=200, help="requests per measure")
    parser.add_argument("--reviewers", type=int, default=4, help="concurrent reviewers")
    parser.add_argument("--workdir", type=Path, default=REPO / "var" / "bench-review")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    catalogue, db = prepare(args.workdir, args.rows, os.environ.get("TAGGING_FASHION_MNIST_DIR"))

    from tagging.ops.airflow import free_port

    port = free_port()
    proc = start_app(catalogue, db, port, args.workdir / "app.log")
    results: dict[str, dict] = {}
    try:
        client = Client(port, "bench")
        _, _, page = client.get("/")
        photo = "/photos/" + DAY + "/" + urllib.parse.quote(shown(page), safe="")
        for name, path in (("page (GET /)", "/"), ("photo (GET /photos/...)", photo)):
            samples = []
            for _ in range(args.requests):
                seconds, status, _ = client.get(path)
                assert status == 200, (path, status)
                samples.append(seconds)
            results[name] = percentiles(samples)
        size = len(client.get(photo)[2])
        samples = []
        answer_cycle(client, samples, min(args.requests, args.rows // 2))
        results["answer + next page, 1 reviewer"] = percentiles(samples)

        samples, counts = [], []
        start = time.perf_counter()

        def reviewer(i: int) -> None:
            counts.append(answer_cycle(Client(port, f"bench-{i}"), samples, args.rows))

        threads = [threading.Thread(target=reviewer, args=(i,)) for i in range(args.reviewers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        results[f"answer + next page, {args.reviewers} reviewers at once"] = {
            **percentiles(samples), "answers_per_s": round(sum(counts) / elapsed, 1)}
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(30)
    width = max(map(len, results))
    print(f"{'':{width}}  {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for name, figures in results.items():
        extra = f"  {figures['answers_per_s']} answers/s" if "answers_per_s" in figures else ""
        print(f"{name:{width}}  {figures['n']:>5} {figures['p50_ms']:>8} {figures['p95_ms']:>8} "
              f"{figures['max_ms']:>8}{extra}")
    print(f"photo size {size} bytes; load average {os.getloadavg()[0]:.1f}")
    (args.workdir / "review.json").write_text(json.dumps(
        {"results": results, "photo_bytes": size, "rows": args.rows,
         "load_average": os.getloadavg()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
