"""What the page and the API do, identity already known: claim, answer, skip, undo, status.

An answer may name any product of a published day: one in the queue (the answer records
the model version and top-3 the queue showed), or another published row (a PIM correcting
a tag nobody flagged; the answer records that row's tag). Anything else is UnknownProduct.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow.compute as pc

from tagging.catalogue.answers import UNUSABLE
from tagging.catalogue.published import read_published
from tagging.errors import PartitionNotFound
from tagging.labels import CATEGORY_NAMES, CATEGORY_SLUGS
from tagging.review.store import Item, ReviewError, ReviewStore
from tagging.settings import ReviewSettings

DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# One key per category, the same whichever guesses the model made (muscle memory); 1-3
# pick the model's guesses, s skips, u marks a photo unusable, z or Backspace undoes.
CATEGORY_KEYS = dict(zip(CATEGORY_SLUGS, "trpdcahnbk", strict=True))
NAMES = dict(zip(CATEGORY_SLUGS, CATEGORY_NAMES, strict=True)) | {UNUSABLE: "Unusable photo"}


class UnknownProduct(ReviewError, LookupError):
    """No published row of that day has that product id."""


def photo_url(partition: str, product_id: str) -> str:
    return f"/photos/{partition}/{quote(product_id, safe='')}"


def start_of_today() -> float:
    """Local midnight, as a Unix time: "today" in the progress line and the status."""
    return datetime.now().astimezone().replace(hour=0, minute=0, second=0,
                                               microsecond=0).timestamp()


@dataclass
class ReviewService:
    store: ReviewStore
    catalogue_root: Path
    image_root: Path
    settings: ReviewSettings

    def next_item(self, reviewer: str) -> Item | None:
        """The reviewer's current photo (their claim, renewed), else the next one claimed."""
        claimed = self.store.claim(reviewer, 1, lease_s=self.settings.lease_s)
        return claimed[0] if claimed else None

    def claim(self, reviewer: str, limit: int) -> list[Item]:
        return self.store.claim(reviewer, limit, lease_s=self.settings.lease_s)

    def answer(self, reviewer: str, partition: str, product_id: str,
               answer: str) -> dict[str, Any]:
        """Record an answer (UnknownAnswer, UnknownProduct)."""
        model_version, top3 = self.shown(partition, product_id)
        return self.store.answer(reviewer, partition, product_id, answer,
                                 model_version=model_version, top3=top3)

    def shown(self, partition: str, product_id: str) -> tuple[str | None, list[dict]]:
        """The model version and top-3 a reviewer answering this product saw."""
        item = self.store.item(partition, product_id)
        if item is not None:
            return item.model_version, item.top3
        row = self.published_row(partition, product_id)
        return row["model_version"], row["category_top3"] or []

    def published_row(self, partition: str, product_id: str) -> dict[str, Any]:
        if not DATE.match(partition):
            raise UnknownProduct(f"no published day {partition!r}")
        try:
            table = read_published(self.catalogue_root, partition,
                                   ["product_id", "model_version", "category_top3"])
        except PartitionNotFound:
            raise UnknownProduct(f"day {partition} is not published") from None
        rows = table.filter(pc.equal(table["product_id"], product_id)).to_pylist()
        if not rows:
            raise UnknownProduct(f"no product {product_id!r} published on {partition}")
        return rows[0]

    def skip(self, reviewer: str, partition: str, product_id: str) -> None:
        self.store.skip(reviewer, partition, product_id)

    def undo(self, reviewer: str) -> dict[str, Any] | None:
        return self.store.undo(reviewer, lease_s=self.settings.lease_s)

    def progress(self, reviewer: str) -> dict[str, int]:
        return self.store.progress(reviewer, start_of_today())

    def status(self) -> dict[str, Any]:
        return self.store.status(start_of_today())


def item_json(item: Item, base: str = "") -> dict[str, Any]:
    """An item as the API returns it (`base`: the path the app is mounted at)."""
    return {"partition": item.partition, "product_id": item.product_id,
            "reason": item.reason, "model_version": item.model_version,
            "top3": item.top3, "margin": item.margin, "tag_error": item.tag_error,
            "image_url": base + photo_url(item.partition, item.product_id)}
