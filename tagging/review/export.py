"""Each day's winning answers written as a Parquet file beside the catalogue, for the label
store and the publication of that day.

`<catalogue>/reviews/dt=D/answers.parquet` (its format and reading:
tagging.catalogue.answers) holds one row per product a person answered (the latest answer
in force: later answers win, retracted ones are gone), sorted by product id. It is replaced
atomically, and only when its content changes, so exporting again changes nothing (same
bytes, same mtime).
"""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tagging import storage
from tagging.catalogue.answers import SCHEMA, UNUSABLE, read_answers_file
from tagging.catalogue.layout import answers_path
from tagging.labels import CATEGORY_SLUGS
from tagging.review.store import ReviewStore
from tagging.storage import Root

log = logging.getLogger(__name__)


def answers_table(store: ReviewStore, day: str) -> pa.Table:
    """The day's answers that win, one row per product, sorted by product id."""
    in_force = store.answers(day)
    reasons = store.reasons(day)
    per_product: dict[str, list[dict[str, Any]]] = {}
    for record in in_force:
        per_product.setdefault(record["product_id"], []).append(record)
    rows = []
    for product_id in sorted(per_product):
        records = per_product[product_id]
        latest = records[-1]
        top3 = json.loads(latest["top3"]) if latest["top3"] else []
        answer = latest["answer"]
        rows.append({
            "product_id": product_id, "answer": answer,
            "category_id": None if answer == UNUSABLE else CATEGORY_SLUGS.index(answer),
            "reviewer": latest["reviewer"],
            "answered_at": datetime.fromtimestamp(latest["answered_at"], UTC),
            "reason": reasons.get(product_id), "model_version": latest["model_version"],
            "model_category": top3[0]["category"] if top3 else None,
            "reviewers": len({r["reviewer"] for r in records}),
            "disagreement": len({r["answer"] for r in records}) > 1,
        })
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def export_day(store: ReviewStore, catalogue_root: Root | str, day: str) -> dict[str, Any]:
    """Write the day's answers file if its content changed; what was done."""
    table = answers_table(store, day)
    path = answers_path(catalogue_root, day)
    unchanged = storage.exists(path) and read_answers_file(path).equals(table)
    if not unchanged:
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        storage.write_bytes(path, buffer.getvalue())
        log.info("exported %d answers of %s to %s", table.num_rows, day, path)
    return {"partition": day, "answers": table.num_rows, "path": str(path),
            "written": not unchanged,
            "unusable": sum(a == UNUSABLE for a in table["answer"].to_pylist())}


def export_answers(store: ReviewStore, catalogue_root: Root | str,
                   days: list[str] | None = None) -> list[dict[str, Any]]:
    """Export every day that has answers (or `days`); idempotent."""
    return [export_day(store, catalogue_root, day)
            for day in (days if days is not None else store.answered_partitions())]
