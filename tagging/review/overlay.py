"""Publishing: a person's answer wins over the model's tag in what search reads.

For each published row:
* answered with a category (tagging.review.export), or `verified_category` in the input:
  `category`, `category_id` from the person, `category_confidence` 1.0,
  `needs_review` false, `category_source` "verified";
* answered "unusable" (no single product in the photo) and not verified: the model's tag
  stays, `needs_review` true (nobody vouches for it), `category_source` "model";
* otherwise the model's tag: `category_source` "model", or null when untagged.

`category_top3` stays the model's guess, so the model's own top class is always readable.
Live quality is measured on the model's output before the overlay (`staged_quality`).
Publishing uses `DayOverlay`: the day's answers file read once, applied to every batch
of the day's rows before the Delta commit, and recorded in the manifest (its SHA-256), so
a day whose answers changed since its last publication is known
(tagging.pipeline.review.days_with_new_answers).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tagging import storage
from tagging.catalogue.layout import answers_path
from tagging.catalogue.quality import live_quality
from tagging.labels import CATEGORY_SLUGS, parse_label
from tagging.review.export import SCHEMA as ANSWERS_SCHEMA
from tagging.review.store import UNUSABLE
from tagging.storage import Root

SOURCE = "category_source"
VERIFIED, MODEL = "verified", "model"


def _parquet(obj: Root) -> pq.ParquetFile:
    return pq.ParquetFile(storage.open_input(obj), pre_buffer=False)


def _answers_by_product(answers: pa.Table | None) -> dict[str, str]:
    if answers is None:
        return {}
    return dict(zip(answers["product_id"].to_pylist(), answers["answer"].to_pylist(),
                    strict=True))


def apply_answers(table: pa.Table, answers: pa.Table | None) -> pa.Table:
    """The published rows with the answers (and input verified_category) applied."""
    by_product = _answers_by_product(answers)
    n = table.num_rows
    ids = table["product_id"].to_pylist()
    verified = (table["verified_category"].to_pylist()
                if "verified_category" in table.column_names else [None] * n)
    category = table["category"].to_pylist()
    category_id = table["category_id"].to_pylist()
    confidence = table["category_confidence"].to_pylist()
    review = table["needs_review"].to_pylist()
    source: list[str | None] = []
    for i in range(n):
        answer = by_product.get(ids[i]) if ids[i] is not None else None
        label = (CATEGORY_SLUGS.index(answer) if answer not in (None, UNUSABLE)
                 else parse_label(verified[i]))
        if label is not None:
            category[i], category_id[i], confidence[i] = CATEGORY_SLUGS[label], label, 1.0
            review[i] = False
            source.append(VERIFIED)
        else:
            review[i] = True if answer == UNUSABLE else review[i]
            source.append(MODEL if category[i] is not None else None)
    columns = {"category": pa.array(category, pa.string()),
               "category_id": pa.array(category_id, pa.int8()),
               "category_confidence": pa.array(confidence, pa.float32()),
               "needs_review": pa.array(review, pa.bool_()),
               SOURCE: pa.array(source, pa.string())}
    for name, values in columns.items():
        if name in table.column_names:
            index = table.column_names.index(name)
            table = table.set_column(index, table.schema.field(name), values)
        else:
            table = table.append_column(pa.field(name, values.type), values)
    return table


def staged_quality(staged: list[Root], answers: pa.Table | None,
                   trained_on: Collection[str] | None = None) -> dict:
    """Live quality of the model's own tags (the staged shards, before the overlay), on the
    day's unbiased truth: `verified_category` from the input, else the answer to an audit
    question. Answers to rows the model flagged are left out: those are the hard photos.
    Only products the version did not train on are graded (`trained_on`: its train side;
    None: the holdout side only; tagging.catalogue.quality.live_quality)."""
    names = _parquet(staged[0]).schema_arrow.names if staged else []
    columns = [c for c in ("product_id", "category", "needs_review", "verified_category")
               if c in names]
    if not staged or "category" not in columns:
        return live_quality(pa.table({"category": pa.array([], pa.string()),
                                      "needs_review": pa.array([], pa.bool_())}))
    table = pa.concat_tables(_parquet(s).read(columns=columns) for s in staged)
    audit = {} if answers is None else {
        p: a for p, a, r in zip(answers["product_id"].to_pylist(),
                                answers["answer"].to_pylist(),
                                answers["reason"].to_pylist(), strict=True)
        if r == "audit" and a != UNUSABLE}
    given = (table["verified_category"].to_pylist() if "verified_category" in columns
             else [None] * table.num_rows)
    truth = [str(g) if g is not None else audit.get(p)
             for g, p in zip(given, table["product_id"].to_pylist(), strict=True)]
    return live_quality(table.select(["product_id", "category", "needs_review"]).append_column(
        "verified_category", pa.array(truth, pa.string())), trained_on)


@dataclass(frozen=True)
class DayOverlay:
    """The answers of one day as publish applies them (read once, so what is applied and
    what the manifest records are the same bytes)."""

    answers: pa.Table | None  # tagging.review.export.SCHEMA; None: nobody answered
    sha256: str | None

    COLUMNS = ("product_id", "verified_category", "category", "category_id",
               "category_confidence", "needs_review")  # what apply reads

    @classmethod
    def load(cls, catalogue_root: Root | str, date: str) -> DayOverlay:
        path = answers_path(catalogue_root, date)
        if not storage.exists(path):
            return cls(None, None)
        data = storage.read_bytes(path)
        return cls(storage.read_parquet_bytes(data, ANSWERS_SCHEMA),
                   hashlib.sha256(data).hexdigest())

    def apply(self, table: pa.Table) -> pa.Table:
        return apply_answers(table, self.answers)

    @staticmethod
    def schema(staged: pa.Schema) -> pa.Schema:
        """The published schema of rows staged with `staged` (category_source added)."""
        return apply_answers(staged.empty_table(), None).schema

    def quality(self, staged: list[Root], trained_on: Collection[str] | None = None) -> dict:
        return staged_quality(staged, self.answers, trained_on)

    def manifest(self) -> dict[str, Any]:
        """What the publication applied: the answers file's SHA-256 and counts."""
        answers = self.answers["answer"].to_pylist() if self.answers is not None else []
        return {"sha256": self.sha256, "answers": len(answers),
                "unusable": sum(a == UNUSABLE for a in answers)}
