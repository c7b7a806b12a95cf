"""The review store: the queue (items), leases (claims), skips, and every answer ever given.

`answers` is append-only (triggers refuse UPDATE and DELETE): an undo appends a retraction
record naming the answer it takes back. A product's answer is its latest answer not
retracted; two reviewers who answered one product differently are a disagreement
(`status()`). `items.answered` is derived from `answers` in the same transaction, so the
queue query stays simple. A claim is a lease: a photo claimed by one reviewer is handed
to no one else until the claim expires or is answered, skipped or released.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tagging.catalogue.answers import UNUSABLE
from tagging.errors import TaggingError
from tagging.labels import CATEGORY_SLUGS
from tagging.review.db import Database

ANSWERS = (*CATEGORY_SLUGS, UNUSABLE)
REASONS = ("needs_review", "audit")

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS items (
        partition TEXT NOT NULL, product_id TEXT NOT NULL,
        reason TEXT NOT NULL CHECK (reason IN ('needs_review', 'audit')),
        margin {float}, model_version TEXT, top3 TEXT NOT NULL, image_uri TEXT,
        tag_error TEXT, added_at {float} NOT NULL, answered INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (partition, product_id))""",
    "CREATE INDEX IF NOT EXISTS items_open ON items (answered, partition, margin)",
    """CREATE TABLE IF NOT EXISTS photos (
        partition TEXT NOT NULL, product_id TEXT NOT NULL, bytes {blob} NOT NULL,
        PRIMARY KEY (partition, product_id))""",
    """CREATE TABLE IF NOT EXISTS claims (
        partition TEXT NOT NULL, product_id TEXT NOT NULL, reviewer TEXT NOT NULL,
        expires_at {float} NOT NULL, PRIMARY KEY (partition, product_id))""",
    """CREATE TABLE IF NOT EXISTS skips (
        reviewer TEXT NOT NULL, partition TEXT NOT NULL, product_id TEXT NOT NULL,
        skipped_at {float} NOT NULL, PRIMARY KEY (reviewer, partition, product_id))""",
    """CREATE TABLE IF NOT EXISTS answers (
        id {id}, reviewer TEXT NOT NULL, answered_at {float} NOT NULL,
        partition TEXT NOT NULL, product_id TEXT NOT NULL,
        answer TEXT, retracts BIGINT UNIQUE, model_version TEXT, top3 TEXT,
        CHECK ((answer IS NULL) <> (retracts IS NULL)))""",
    "CREATE INDEX IF NOT EXISTS answers_product ON answers (partition, product_id)",
    "CREATE INDEX IF NOT EXISTS answers_reviewer ON answers (reviewer, answered_at)",
]
APPEND_ONLY = {
    "sqlite": [f"""CREATE TRIGGER IF NOT EXISTS answers_no_{op.lower()} BEFORE {op} ON answers
                   BEGIN SELECT RAISE(ABORT, 'answers are append-only'); END"""
               for op in ("UPDATE", "DELETE")],
    "postgresql": [
        """CREATE OR REPLACE FUNCTION answers_append_only() RETURNS trigger AS $$
           BEGIN RAISE EXCEPTION 'answers are append-only'; END $$ LANGUAGE plpgsql""",
        """CREATE OR REPLACE TRIGGER answers_append_only BEFORE UPDATE OR DELETE ON answers
           FOR EACH ROW EXECUTE FUNCTION answers_append_only()"""],
}
CANDIDATES = """
    SELECT i.*,
           CASE WHEN c.reviewer = ? THEN 0 ELSE 1 END AS not_mine,
           CASE WHEN s.reviewer IS NULL THEN 0 ELSE 1 END AS skipped
    FROM items i
    LEFT JOIN claims c ON c.partition = i.partition AND c.product_id = i.product_id
    LEFT JOIN skips s ON s.reviewer = ? AND s.partition = i.partition
                     AND s.product_id = i.product_id
    WHERE i.answered = 0 AND (c.reviewer IS NULL OR c.expires_at < ? OR c.reviewer = ?)
    ORDER BY not_mine, skipped, i.partition DESC, i.margin ASC NULLS LAST, i.product_id
    LIMIT ?"""
CLAIM = """
    INSERT INTO claims (partition, product_id, reviewer, expires_at) VALUES (?, ?, ?, ?)
    ON CONFLICT (partition, product_id) DO UPDATE
    SET reviewer = excluded.reviewer, expires_at = excluded.expires_at
    WHERE claims.reviewer = excluded.reviewer OR claims.expires_at < ?"""
TAKE_BACK = """
    INSERT INTO claims (partition, product_id, reviewer, expires_at) VALUES (?, ?, ?, ?)
    ON CONFLICT (partition, product_id) DO UPDATE
    SET reviewer = excluded.reviewer, expires_at = excluded.expires_at"""
NOT_RETRACTED = "NOT EXISTS (SELECT 1 FROM answers r WHERE r.retracts = a.id)"


class ReviewError(TaggingError):
    """A review request that cannot be carried out (the message says why)."""


class UnknownAnswer(ReviewError, ValueError):
    """Not a category slug nor 'unusable'."""


@dataclass(frozen=True)
class Item:
    """One photo to ask about: a published row of a day, with the model's top-3."""

    partition: str
    product_id: str
    reason: str  # needs_review | audit
    margin: float | None  # top-1 minus top-2 confidence; None when untagged
    model_version: str | None
    top3: list[dict[str, Any]]  # [{"category": slug, "confidence": p}, ...]
    image_uri: str | None = None  # None: the photo's bytes are in the store
    tag_error: str | None = None

    @classmethod
    def of(cls, row: dict[str, Any]) -> Item:
        return cls(row["partition"], row["product_id"], row["reason"], row["margin"],
                   row["model_version"], json.loads(row["top3"]), row["image_uri"],
                   row["tag_error"])


class ReviewStore:
    """The queue and the answers, in one database (see tagging.review.db)."""

    def __init__(self, url: str):
        self.db = Database(url)
        with self.db.transaction(write=True) as cur:
            if self.db.engine == "postgresql":  # two app instances may start at once
                cur.execute("SELECT pg_advisory_xact_lock(1717)")
            for statement in [*SCHEMA, *APPEND_ONLY[self.db.engine]]:
                cur.execute(self.db.sql(statement) if "{" in statement else statement)

        self._open_item = "SELECT answered FROM items WHERE partition = ? AND product_id = ?" + (
            " FOR UPDATE" if self.db.engine == "postgresql" else "")

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------ filling

    def add_items(self, items: Iterable[tuple[Item, bytes | None]], *,
                  now: float | None = None) -> int:
        """Add items (with their photo bytes when the row has them); known ones are kept
        as they are. Returns how many were new."""
        now = time.time() if now is None else now
        added = 0
        with self.db.transaction(write=True) as cur:
            for item, photo in items:
                cur.execute(
                    "INSERT INTO items (partition, product_id, reason, margin, model_version,"
                    " top3, image_uri, tag_error, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (partition, product_id) DO NOTHING",
                    (item.partition, item.product_id, item.reason, item.margin,
                     item.model_version, json.dumps(item.top3), item.image_uri,
                     item.tag_error, now))
                if cur.rowcount == 1:
                    added += 1
                    if photo is not None:
                        cur.execute("INSERT INTO photos (partition, product_id, bytes) "
                                    "VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                                    (item.partition, item.product_id, photo))
        return added

    def known_products(self, partition: str) -> set[str]:
        with self.db.transaction() as cur:
            rows = cur.execute("SELECT product_id FROM items WHERE partition = ?",
                               (partition,)).all()
        return {r["product_id"] for r in rows}

    # ------------------------------------------------------------ the queue

    def claim(self, reviewer: str, limit: int = 1, *, lease_s: float,
              now: float | None = None) -> list[Item]:
        """Up to `limit` open items for `reviewer`: theirs first (lease renewed, even when
        it expired and nobody took the photo meanwhile), then the queue's order (newest
        day, lowest margin); items they skipped come last."""
        now = time.time() if now is None else now
        claimed: list[Item] = []
        tried: set[tuple[str, str]] = set()
        with self.db.transaction(write=True) as cur:
            while len(claimed) < limit:
                rows = [r for r in cur.execute(
                    CANDIDATES, (reviewer, reviewer, now, reviewer, limit + len(tried))).all()
                        if (r["partition"], r["product_id"]) not in tried]
                if not rows:
                    break
                for row in rows:
                    key = (row["partition"], row["product_id"])
                    tried.add(key)
                    # still open? (PostgreSQL: wait for a concurrent answer to commit and
                    # read its result; SQLite: BEGIN IMMEDIATE already serialises writers)
                    if cur.execute(self._open_item, key).scalar() != 0:
                        continue
                    cur.execute(CLAIM, (*key, reviewer, now + lease_s, now))
                    if cur.rowcount == 1:
                        claimed.append(Item.of(row))
                        if len(claimed) == limit:
                            break
        return claimed

    def item(self, partition: str, product_id: str) -> Item | None:
        with self.db.transaction() as cur:
            row = cur.execute("SELECT * FROM items WHERE partition = ? AND product_id = ?",
                              (partition, product_id)).one()
        return Item.of(row) if row else None

    def photo(self, partition: str, product_id: str) -> bytes | None:
        with self.db.transaction() as cur:
            return cur.execute("SELECT bytes FROM photos WHERE partition = ? AND product_id = ?",
                               (partition, product_id)).scalar()

    def skip(self, reviewer: str, partition: str, product_id: str, *,
             now: float | None = None) -> None:
        """Put the item at the back of this reviewer's queue and release their claim."""
        now = time.time() if now is None else now
        with self.db.transaction(write=True) as cur:
            cur.execute("INSERT INTO skips (reviewer, partition, product_id, skipped_at) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT (reviewer, partition, product_id) "
                        "DO UPDATE SET skipped_at = excluded.skipped_at",
                        (reviewer, partition, product_id, now))
            cur.execute("DELETE FROM claims WHERE partition = ? AND product_id = ? "
                        "AND reviewer = ?", (partition, product_id, reviewer))

    # ------------------------------------------------------------ answers

    def answer(self, reviewer: str, partition: str, product_id: str, answer: str, *,
               model_version: str | None, top3: list[dict[str, Any]],
               now: float | None = None) -> dict[str, Any]:
        """Append an answer (a slug or 'unusable'); the item leaves the queue."""
        if answer not in ANSWERS:
            raise UnknownAnswer(f"unknown category {answer!r}: one of "
                                f"{', '.join(ANSWERS)}")
        now = time.time() if now is None else now
        with self.db.transaction(write=True) as cur:
            record = cur.execute(
                "INSERT INTO answers (reviewer, answered_at, partition, product_id, answer, "
                "model_version, top3) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *",
                (reviewer, now, partition, product_id, answer, model_version,
                 json.dumps(top3))).one()
            cur.execute("UPDATE items SET answered = 1 WHERE partition = ? AND product_id = ?",
                        (partition, product_id))
            cur.execute("DELETE FROM claims WHERE partition = ? AND product_id = ?",
                        (partition, product_id))
        return record

    def undo(self, reviewer: str, *, lease_s: float,
             now: float | None = None) -> dict[str, Any] | None:
        """Retract the reviewer's latest answer still in force (a new record: nothing is
        deleted) and hand its item back to them. None when there is nothing to undo."""
        now = time.time() if now is None else now
        with self.db.transaction(write=True) as cur:
            last = cur.execute(
                f"SELECT a.* FROM answers a WHERE a.reviewer = ? AND a.answer IS NOT NULL "
                f"AND {NOT_RETRACTED} ORDER BY a.id DESC LIMIT 1", (reviewer,)).one()
            if last is None:
                return None
            key = (last["partition"], last["product_id"])
            cur.execute("INSERT INTO answers (reviewer, answered_at, partition, product_id, "
                        "retracts, model_version, top3) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (reviewer, now, *key, last["id"], last["model_version"], last["top3"]))
            still = cur.execute(f"SELECT count(*) FROM answers a WHERE a.partition = ? AND "
                                f"a.product_id = ? AND a.answer IS NOT NULL AND {NOT_RETRACTED}",
                                key).scalar()
            cur.execute("UPDATE items SET answered = ? WHERE partition = ? AND product_id = ?",
                        (1 if still else 0, *key))
            if not still:
                cur.execute(TAKE_BACK, (*key, reviewer, now + lease_s))
        return last

    def last_answer(self, reviewer: str) -> dict[str, Any] | None:
        """The reviewer's latest answer still in force (what undo would take back)."""
        with self.db.transaction() as cur:
            return cur.execute(
                f"SELECT a.* FROM answers a WHERE a.reviewer = ? AND a.answer IS NOT NULL "
                f"AND {NOT_RETRACTED} ORDER BY a.id DESC LIMIT 1", (reviewer,)).one()

    def answers(self, partition: str | None = None) -> list[dict[str, Any]]:
        """Every answer in force (not retracted), oldest first."""
        where = "AND a.partition = ?" if partition else ""
        with self.db.transaction() as cur:
            return cur.execute(
                f"SELECT a.* FROM answers a WHERE a.answer IS NOT NULL AND {NOT_RETRACTED} "
                f"{where} ORDER BY a.id", (partition,) if partition else ()).all()

    def latest_answers(self, partition: str) -> list[dict[str, Any]]:
        """The answer that wins per product of a day: its latest one in force."""
        latest: dict[str, dict[str, Any]] = {}
        for record in self.answers(partition):
            latest[record["product_id"]] = record
        return [latest[p] for p in sorted(latest)]

    def reasons(self, partition: str) -> dict[str, str]:
        """Why each queued product of a day was asked (needs_review or audit)."""
        with self.db.transaction() as cur:
            rows = cur.execute("SELECT product_id, reason FROM items WHERE partition = ?",
                               (partition,)).all()
        return {r["product_id"]: r["reason"] for r in rows}

    def answered_partitions(self) -> list[str]:
        """Days with any answer record (retractions included: their export may shrink)."""
        with self.db.transaction() as cur:
            rows = cur.execute("SELECT DISTINCT partition FROM answers ORDER BY partition").all()
        return [r["partition"] for r in rows]

    # ------------------------------------------------------------ progress and status

    def progress(self, reviewer: str, since: float) -> dict[str, int]:
        """Left in the queue, and answers in force since `since` by the reviewer and by all."""
        with self.db.transaction() as cur:
            left = cur.execute("SELECT count(*) FROM items WHERE answered = 0").scalar()
            rows = cur.execute(
                f"SELECT a.reviewer, count(*) AS n FROM answers a WHERE a.answer IS NOT NULL "
                f"AND a.answered_at >= ? AND {NOT_RETRACTED} GROUP BY a.reviewer",
                (since,)).all()
        done = {r["reviewer"]: int(r["n"]) for r in rows}
        return {"left": int(left), "mine": done.get(reviewer, 0),
                "everyone": sum(done.values())}

    def status(self, since: float, *, now: float | None = None) -> dict[str, Any]:
        """The queue (open items by reason, claimed now), answers since `since` per
        reviewer, answers in force, unusable photos, and disagreements."""
        now = time.time() if now is None else now
        with self.db.transaction() as cur:
            queue = cur.execute("SELECT reason, answered, count(*) AS n FROM items "
                                "GROUP BY reason, answered").all()
            claimed = cur.execute("SELECT count(*) FROM claims WHERE expires_at >= ?",
                                  (now,)).scalar()
            recent = cur.execute(
                f"SELECT a.reviewer, count(*) AS n FROM answers a WHERE a.answer IS NOT NULL "
                f"AND a.answered_at >= ? AND {NOT_RETRACTED} GROUP BY a.reviewer "
                f"ORDER BY a.reviewer", (since,)).all()
        in_force = self.answers()
        return {
            "queue": sum(int(r["n"]) for r in queue if not r["answered"]),
            "open": {reason: sum(int(r["n"]) for r in queue
                                 if r["reason"] == reason and not r["answered"])
                     for reason in REASONS},
            "answered_items": sum(int(r["n"]) for r in queue if r["answered"]),
            "claimed": int(claimed),
            "answers_today": sum(int(r["n"]) for r in recent),
            "per_reviewer": {r["reviewer"]: int(r["n"]) for r in recent},
            "answers": len(in_force),
            "products": len({(a["partition"], a["product_id"]) for a in in_force}),
            "unusable": sum(a["answer"] == UNUSABLE for a in in_force),
            "disagreements": disagreements(in_force),
        }


    def vitals(self, *, now: float | None = None) -> dict[str, Any]:
        """What a dashboard graphs (counts and ages only): photos waiting, claimed now, the
        age of the oldest waiting one (s, None when none waits), answers in force given in
        the last hour, and answers ever given (retractions do not lower it)."""
        now = time.time() if now is None else now
        with self.db.transaction() as cur:
            waiting = cur.execute("SELECT count(*) AS n, min(added_at) AS oldest FROM items "
                                  "WHERE answered = 0").one()
            claimed = cur.execute("SELECT count(*) FROM claims WHERE expires_at >= ?",
                                  (now,)).scalar()
            last_hour = cur.execute(
                f"SELECT count(*) FROM answers a WHERE a.answer IS NOT NULL AND "
                f"a.answered_at >= ? AND {NOT_RETRACTED}", (now - 3600,)).scalar()
            total = cur.execute("SELECT count(*) FROM answers WHERE answer IS NOT NULL").scalar()
        oldest = waiting["oldest"]
        return {"queue": int(waiting["n"]), "claimed": int(claimed),
                "oldest_open_s": None if oldest is None else max(0.0, now - float(oldest)),
                "answers_last_hour": int(last_hour), "answers_total": int(total)}


def disagreements(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Products that reviewers answered differently: each reviewer's latest answer, and
    the one that wins (the latest)."""
    by_product: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for record in answers:  # oldest first: a reviewer's latest answer stays
        by_product[(record["partition"], record["product_id"])][record["reviewer"]] = record
    out = []
    for (partition, product_id), per_reviewer in sorted(by_product.items()):
        if len({r["answer"] for r in per_reviewer.values()}) > 1:
            latest = max(per_reviewer.values(), key=lambda r: r["id"])
            out.append({"partition": partition, "product_id": product_id,
                        "answers": {name: r["answer"] for name, r in sorted(per_reviewer.items())},
                        "wins": latest["answer"]})
    return out
