"""The review store on SQLite (a WAL file) and on a real PostgreSQL (Debian's server, a
throwaway cluster on loopback; skipped when its binaries are missing): leases, order,
skips, append-only answers and retractions, disagreements, concurrent claims."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tagging.review.store import Item, ReviewStore, UnknownAnswer

OLD, NEW = "2026-06-01", "2026-06-02"
LEASE = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL cluster of its own (its own database, `review`), stopped by PID."""
    from tagging.errors import StackError
    from tagging.ops.services import REVIEW_DB_NAME, Postgres, as_user

    try:
        from tagging.ops.services import postgres_bindir

        postgres_bindir()
    except StackError as e:
        pytest.skip(f"PostgreSQL not installed: {e}")
    folder = Path(tempfile.mkdtemp(prefix="review-pg-"))
    folder.chmod(0o755)  # the server runs as the unprivileged postgres user when we are root
    server = Postgres(folder / "pg", free_port(), "review-test-secret", folder)
    proc = None
    try:
        password = server.prepare()
        with open(folder / "postgres.log", "ab") as log:
            proc = subprocess.Popen(server.argv(), env=server.env(), stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    **as_user(server.user))
        server.wait_ready(lambda: proc.poll() is None, timeout=60)  # creates `review` too
        yield f"postgresql://airflow:{password}@127.0.0.1:{server.port}/{REVIEW_DB_NAME}"
    finally:
        if proc is not None:
            os.kill(proc.pid, signal.SIGINT)  # fast shutdown
            proc.wait(30)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Iterator[ReviewStore]:
    if request.param == "sqlite":
        opened = ReviewStore(str(tmp_path / "review.db"))
    else:
        url = request.getfixturevalue("postgres_url")
        opened = ReviewStore(url)
        with opened.db.transaction(write=True) as cur:  # a fresh store per test
            cur.execute("DROP TABLE items, photos, claims, skips, answers")
        opened = ReviewStore(url)
    yield opened
    opened.close()


def items(day: str, margins: list[float]) -> list[tuple[Item, bytes]]:
    return [(Item(day, f"{day}/p{i}", "needs_review", m, "v0001",
                  [{"category": "bag", "confidence": 0.5 + m / 2},
                   {"category": "coat", "confidence": 0.5 - m / 2}]), b"photo")
            for i, m in enumerate(margins)]


def claimed(store: ReviewStore, who: str, n: int = 1, now: float = 1000.0) -> list[str]:
    return [i.product_id for i in store.claim(who, n, lease_s=LEASE, now=now)]


def test_order_leases_and_idempotent_fill(store):
    assert store.add_items(items(OLD, [0.1, 0.05])) == 2
    assert store.add_items(items(NEW, [0.3, 0.2, 0.9])) == 3
    assert store.add_items(items(NEW, [0.3, 0.2, 0.9])) == 0  # known items stay as they are
    # newest day first, lowest margin first; a claim is nobody else's
    assert claimed(store, "alice", 2) == [f"{NEW}/p1", f"{NEW}/p0"]
    assert claimed(store, "bob", 2) == [f"{NEW}/p2", f"{OLD}/p1"]
    # a reviewer's own claims come first (renewed), whatever the order says
    assert claimed(store, "alice", 1) == [f"{NEW}/p1"]
    assert claimed(store, "carol", 5) == [f"{OLD}/p0"]
    # an expired claim returns the photo to the queue (carol's own expired one comes first:
    # nobody took it meanwhile)
    assert claimed(store, "carol", 5, now=1000.0 + LEASE + 1) == [
        f"{OLD}/p0", f"{NEW}/p1", f"{NEW}/p0", f"{NEW}/p2", f"{OLD}/p1"]
    assert claimed(store, "alice", 5, now=1000.0 + LEASE + 1) == []  # all carol's now
    assert store.photo(NEW, f"{NEW}/p0") == b"photo"


def test_answers_are_append_only_and_undo_appends_a_retraction(store):
    store.add_items(items(NEW, [0.1, 0.2]))
    first = claimed(store, "alice")[0]
    store.answer("alice", NEW, first, "coat", model_version="v0001", top3=[])
    assert claimed(store, "alice") == [f"{NEW}/p1"]  # the answered photo left the queue
    with pytest.raises(UnknownAnswer):
        store.answer("alice", NEW, first, "hat", model_version="v0001", top3=[])
    assert store.progress("alice", since=0) == {"left": 1, "mine": 1, "everyone": 1}

    retracted = store.undo("alice", lease_s=LEASE)
    assert retracted["product_id"] == first and retracted["answer"] == "coat"
    assert store.progress("alice", since=0) == {"left": 2, "mine": 0, "everyone": 0}
    assert set(claimed(store, "alice", 2)) == {first, f"{NEW}/p1"}  # it came back to her
    assert claimed(store, "bob", 2) == []  # and to nobody else
    assert store.undo("alice", lease_s=LEASE) is None  # nothing left to undo
    with store.db.transaction() as cur:
        rows = cur.execute("SELECT answer, retracts FROM answers ORDER BY id").all()
    assert rows == [{"answer": "coat", "retracts": None},
                    {"answer": None, "retracts": retracted["id"]}]
    for statement in ("UPDATE answers SET answer = 'bag'", "DELETE FROM answers"):
        with pytest.raises(Exception, match="append-only"), \
                store.db.transaction(write=True) as cur:
            cur.execute(statement)


def test_vitals_count_the_queue_its_age_and_recent_answers(store):
    assert store.vitals(now=5000.0) == {"queue": 0, "claimed": 0, "oldest_open_s": None,
                                        "answers_last_hour": 0, "answers_total": 0}
    store.add_items(items(OLD, [0.1]), now=1000.0)
    store.add_items(items(NEW, [0.2, 0.3]), now=4000.0)
    claimed(store, "alice", now=4000.0)
    store.answer("alice", NEW, f"{NEW}/p0", "coat", model_version="v0001", top3=[], now=4100.0)
    store.answer("bob", NEW, f"{NEW}/p1", "bag", model_version="v0001", top3=[], now=4200.0)
    store.undo("bob", lease_s=LEASE, now=4300.0)  # taken back: waiting (his again), not in force
    assert store.vitals(now=4330.0) == {"queue": 2, "claimed": 1, "oldest_open_s": 3330.0,
                                        "answers_last_hour": 1, "answers_total": 2}
    assert store.vitals(now=4100.0 + 3601)["answers_last_hour"] == 0  # an hour later


def test_skip_and_disagreements(store):
    store.add_items(items(NEW, [0.1, 0.2, 0.3]))
    assert claimed(store, "alice") == [f"{NEW}/p0"]
    store.skip("alice", NEW, f"{NEW}/p0")
    assert claimed(store, "bob") == [f"{NEW}/p0"]  # released for the others
    assert claimed(store, "alice", 2) == [f"{NEW}/p1", f"{NEW}/p2"]  # skipped: last for her
    store.answer("alice", NEW, f"{NEW}/p1", "coat", model_version="v0001", top3=[])
    store.answer("bob", NEW, f"{NEW}/p1", "pullover", model_version="v0001", top3=[])
    store.answer("alice", NEW, f"{NEW}/p2", "bag", model_version="v0001", top3=[])
    store.answer("bob", NEW, f"{NEW}/p2", "bag", model_version="v0001", top3=[])
    status = store.status(since=0)
    assert status["disagreements"] == [{"partition": NEW, "product_id": f"{NEW}/p1",
                                        "answers": {"alice": "coat", "bob": "pullover"},
                                        "wins": "pullover"}]
    assert [a["answer"] for a in store.latest_answers(NEW)] == ["pullover", "bag"]
    assert status["per_reviewer"] == {"alice": 2, "bob": 2}
    assert status["open"] == {"needs_review": 1, "audit": 0}


def test_concurrent_reviewers_never_share_a_photo(store):
    store.add_items(items(NEW, [i / 100 for i in range(60)]))
    seen: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def review(name: str) -> None:
        mine = seen.setdefault(name, [])
        start.wait()
        try:
            while batch := store.claim(name, 2, lease_s=LEASE):
                for item in batch:
                    mine.append(item.product_id)
                    time.sleep(0.01)  # a look at the photo
                    store.answer(name, item.partition, item.product_id, "bag",
                                 model_version=item.model_version, top3=item.top3)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=review, args=(f"r{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    shown = Counter(p for products in seen.values() for p in products)
    assert len(shown) == 60 and set(shown.values()) == {1}  # each photo to one reviewer
    answered = Counter(a["product_id"] for a in store.answers(NEW))
    assert len(answered) == 60 and set(answered.values()) == {1}
    assert sum(1 for products in seen.values() if products) > 1  # really concurrent
