"""Fill the review queue from published days: the rows that need a person, and an audit slice.

Asked: rows published with `needs_review` (the store orders them newest day first, lowest
top-1/top-2 margin first), plus an audit slice of rows published *without* review, chosen
by a salted hash of the product id (a fixed share, the same rows on every fill), so that
live quality is measured on an unbiased sample and not only on the hard photos. Never
asked: rows carrying `verified_category` in the input, rows already verified
(`category_source = verified`), rows without a photo. Filling is idempotent: a row already
in the queue is left as it is (answered or not), so re-running adds nothing.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from tagging.catalogue.published import published_days, published_schema, read_published
from tagging.review.store import Item, ReviewStore
from tagging.settings import ReviewSettings

log = logging.getLogger(__name__)

WANTED = ["product_id", "needs_review", "category_top3", "model_version", "tag_error",
          "image_uri", "verified_category", "category_source"]


@dataclass
class DayFill:
    """What one fill did with one published day."""

    partition: str
    rows: int = 0
    needs_review: int = 0
    audit: int = 0
    already_verified: int = 0  # verified_category in the input, or a verified answer
    no_photo: int = 0
    photo_too_large: int = 0
    added: int = 0


def in_audit(product_id: str, share: float, seed: str) -> bool:
    """True for a fixed `share` of product ids: a salted SHA-256, nothing else."""
    digest = hashlib.sha256(f"{seed}:{product_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < share * 2**64


def margin_of(top3: list[dict[str, Any]] | None) -> float | None:
    """Top-1 minus top-2 confidence: how sure the model was between its two best guesses."""
    if not top3:
        return None
    second = top3[1]["confidence"] if len(top3) > 1 else 0.0
    return round(float(top3[0]["confidence"]) - float(second), 6)


def fill(store: ReviewStore, catalogue_root: Path | str, *,
         settings: ReviewSettings | None = None, days: list[str] | None = None
         ) -> list[DayFill]:
    """Add the published days' rows to ask about (newest `fill_days` days by default)."""
    settings = settings or ReviewSettings.from_env()
    days = days or published_days(catalogue_root)[-settings.fill_days:]
    return [fill_day(store, catalogue_root, day, settings) for day in sorted(days, reverse=True)]


def fill_day(store: ReviewStore, catalogue_root: Path | str, day: str,
             settings: ReviewSettings) -> DayFill:
    report = DayFill(day)
    schema = published_schema(catalogue_root, day)
    if schema is None:
        return report
    table = read_published(catalogue_root, day, [c for c in WANTED if c in schema.names])
    report.rows = table.num_rows
    known = store.known_products(day)
    chosen: list[tuple[int, Item]] = []
    for index, row in enumerate(table.to_pylist()):
        product_id = row["product_id"]
        if product_id is None:
            continue
        if row.get("verified_category") is not None or row.get("category_source") == "verified":
            report.already_verified += 1
            continue
        if row["needs_review"]:
            reason = "needs_review"
        elif row["tag_error"] is None and in_audit(product_id, settings.audit_share,
                                                    settings.audit_seed):
            reason = "audit"
        else:
            continue
        setattr(report, reason, getattr(report, reason) + 1)
        if product_id not in known:
            chosen.append((index, Item(day, product_id, reason, margin_of(row["category_top3"]),
                                       row["model_version"], row["category_top3"] or [],
                                       row.get("image_uri") or None, row["tag_error"])))
    photos = _photos(catalogue_root, day, schema, [i for i, _ in chosen])
    new = []
    for (_, item), photo in zip(chosen, photos, strict=True):
        if photo:  # the tagger reads the bytes when a row has both
            if len(photo) > settings.max_photo_bytes:
                report.photo_too_large += 1
                continue
            new.append((replace(item, image_uri=None), photo))
        elif item.image_uri:
            new.append((item, None))
        else:
            report.no_photo += 1
    report.added = store.add_items(new)
    log.info("review queue, %s: %s", day, asdict(report))
    return report


def _photos(catalogue_root: Path | str, day: str, schema: pa.Schema,
            indices: list[int]) -> list[bytes | None]:
    """The `image` bytes of the chosen rows (None where the row has none)."""
    if not indices or "image" not in schema.names:
        return [None] * len(indices)
    images = read_published(catalogue_root, day, ["image"])["image"]
    return images.take(pa.array(indices, pa.int64())).to_pylist()
