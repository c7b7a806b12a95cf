"""A day's review answers as the catalogue holds them, and what they do to published rows.

`<catalogue>/reviews/dt=D/answers.parquet` (tagging.catalogue.layout.answers_path), written
by tagging.review.export, holds one row per product a person answered (the latest answer
in force), sorted by product id. It is data: publishing applies it (below), and the label
store takes it as one more source of labels (tagging.loop.labelstore).

Publishing, for each row (a person's answer wins over the model's tag in what search reads):
* answered with a category, or `verified_category` in the input: `category`, `category_id`
  from the person, `category_confidence` 1.0, `needs_review` false, `category_source`
  "verified";
* answered "unusable" (no single product in the photo) and not verified: the model's tag
  stays, `needs_review` true (nobody vouches for it), `category_source` "model";
* otherwise the model's tag: `category_source` "model", or null when untagged.

`category_top3` stays the model's guess, so the model's own top class is always readable.
A publication reads the file once (`DayAnswers`), applies it to every batch of the day's
rows and records its SHA-256 in the manifest, so a day whose answers changed since its last
publication is known (tagging.pipeline.review.days_with_new_answers).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from tagging import storage
from tagging.catalogue.layout import ANSWERS, PARTITION_KEY, answers_path, reviews_root
from tagging.labels import CATEGORY_SLUGS, parse_label
from tagging.storage import Root

UNUSABLE = "unusable"  # the answer for a photo that shows no single product
SCHEMA = pa.schema([
    pa.field("product_id", pa.string(), nullable=False),
    pa.field("answer", pa.string(), nullable=False),  # a category slug or "unusable"
    pa.field("category_id", pa.int8()),  # null for "unusable"
    pa.field("reviewer", pa.string(), nullable=False),
    pa.field("answered_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("reason", pa.string()),  # why it was asked: needs_review | audit | null (API)
    pa.field("model_version", pa.string()),  # the tag the reviewer saw
    pa.field("model_category", pa.string()),  # the model's top guess they saw
    pa.field("reviewers", pa.int16(), nullable=False),  # people who answered the product
    pa.field("disagreement", pa.bool_(), nullable=False),  # they did not all agree
])
SOURCE = "category_source"
VERIFIED, MODEL = "verified", "model"

# ---------------------------------------------------------------- the answers files


def read_answers_file(path: Root | str) -> pa.Table:
    return storage.read_parquet_bytes(storage.read_bytes(path), SCHEMA)


def read_answers(catalogue_root: Root | str, day: str) -> pa.Table | None:
    """The day's exported answers (None: nobody answered about that day)."""
    path = answers_path(catalogue_root, day)
    return read_answers_file(path) if storage.exists(path) else None


def exported_days(catalogue_root: Root | str) -> list[str]:
    """The days with an answers file, oldest first."""
    folder = reviews_root(catalogue_root)
    prefix = f"{PARTITION_KEY}="
    return sorted(o.root.parent.name.removeprefix(prefix)
                  for o in storage.list_objects(folder)
                  if o.root.name == ANSWERS and o.root.parent.parent == folder
                  and o.root.parent.name.startswith(prefix))


def answers_fingerprint(catalogue_root: Root | str, day: str) -> str | None:
    """The SHA-256 of the day's answers file (None: none): a publication records the one it
    applied, so a day whose answers changed since is published again."""
    path = answers_path(catalogue_root, day)
    return storage.sha256(path)[0] if storage.exists(path) else None


# ---------------------------------------------------------------- applied at publication


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


@dataclass(frozen=True)
class DayAnswers:
    """The answers of one day, read once, so what is applied and what the manifest records
    are the same bytes."""

    table: pa.Table | None  # SCHEMA; None: nobody answered
    sha256: str | None

    COLUMNS = ("product_id", "verified_category", "category", "category_id",
               "category_confidence", "needs_review")  # what apply reads

    @classmethod
    def load(cls, catalogue_root: Root | str, date: str) -> DayAnswers:
        path = answers_path(catalogue_root, date)
        if not storage.exists(path):
            return cls(None, None)
        data = storage.read_bytes(path)
        return cls(storage.read_parquet_bytes(data, SCHEMA), hashlib.sha256(data).hexdigest())

    def apply(self, table: pa.Table) -> pa.Table:
        return apply_answers(table, self.table)

    @staticmethod
    def schema(staged: pa.Schema) -> pa.Schema:
        """The published schema of rows staged with `staged` (category_source added)."""
        return apply_answers(staged.empty_table(), None).schema

    def audited(self) -> dict[str, str]:
        """product_id -> category of the answers to audit questions (unbiased truth: the
        rows were asked at random, not because the model flagged them)."""
        if self.table is None:
            return {}
        return {p: a for p, a, r in zip(self.table["product_id"].to_pylist(),
                                        self.table["answer"].to_pylist(),
                                        self.table["reason"].to_pylist(), strict=True)
                if r == "audit" and a != UNUSABLE}

    def manifest(self) -> dict[str, Any]:
        """What the publication applied: the answers file's SHA-256 and counts."""
        answers = self.table["answer"].to_pylist() if self.table is not None else []
        return {"sha256": self.sha256, "answers": len(answers),
                "unusable": sum(a == UNUSABLE for a in answers)}
