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
Publishing uses `DayOverlay`: the day's answers file read once, applied to every shard,
and recorded in the manifest (its SHA-256), so a day whose answers changed since its last
publication is known (tagging.pipeline.review.days_with_new_answers).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tagging.catalogue.layout import answers_path
from tagging.catalogue.tagger import READ_BATCH_ROWS, writer_options
from tagging.labels import CATEGORY_SLUGS, parse_label
from tagging.loop.quality import live_quality
from tagging.review.export import SCHEMA as ANSWERS_SCHEMA
from tagging.review.store import UNUSABLE

SOURCE = "category_source"
VERIFIED, MODEL = "verified", "model"


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


def touches(table: pa.Table, answers: pa.Table | None) -> bool:
    """Would apply_answers change anything in rows with these product ids / verified values?"""
    if "verified_category" in table.column_names and table["verified_category"].null_count \
            < table.num_rows:
        return True
    if answers is None or not answers.num_rows:
        return False
    return bool(pc.any(pc.is_in(table["product_id"], answers["product_id"])).as_py())


def overlay_shard(src: Path, dest: Path, answers: pa.Table | None) -> None:
    """Write staged shard `src` as published file `dest` with the answers applied, batch
    by batch (memory stays flat); a shard nothing applies to is linked as it is."""
    schema = pq.read_schema(src)
    probe = pq.read_table(src, columns=[c for c in ("product_id", "verified_category")
                                        if c in schema.names])
    if not touches(probe, answers) and SOURCE in schema.names:
        try:
            os.link(src, dest)
        except OSError:
            shutil.copy2(src, dest)
        return
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
    out_schema = apply_answers(schema.empty_table(), None).schema.with_metadata(schema.metadata)
    try:
        with pq.ParquetWriter(tmp, out_schema, **writer_options(out_schema)) as writer:
            for batch in pq.ParquetFile(src).iter_batches(batch_size=READ_BATCH_ROWS):
                writer.write_table(apply_answers(pa.Table.from_batches([batch]), answers)
                                   .cast(out_schema))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def staged_quality(staged: list[Path], answers: pa.Table | None) -> dict:
    """Live quality of the model's own tags (the staged shards, before the overlay), on the
    day's unbiased truth: `verified_category` from the input, else the answer to an audit
    question. Answers to rows the model flagged are left out: those are the hard photos."""
    names = pq.read_schema(staged[0]).names if staged else []
    columns = [c for c in ("product_id", "category", "needs_review", "verified_category")
               if c in names]
    if not staged or "category" not in columns:
        return live_quality(pa.table({"category": pa.array([], pa.string()),
                                      "needs_review": pa.array([], pa.bool_())}))
    table = pq.read_table(staged, columns=columns, partitioning=None)
    audit = {} if answers is None else {
        p: a for p, a, r in zip(answers["product_id"].to_pylist(),
                                answers["answer"].to_pylist(),
                                answers["reason"].to_pylist(), strict=True)
        if r == "audit" and a != UNUSABLE}
    given = (table["verified_category"].to_pylist() if "verified_category" in columns
             else [None] * table.num_rows)
    truth = [str(g) if g is not None else audit.get(p)
             for g, p in zip(given, table["product_id"].to_pylist(), strict=True)]
    return live_quality(table.select(["category", "needs_review"]).append_column(
        "verified_category", pa.array(truth, pa.string())))


@dataclass(frozen=True)
class DayOverlay:
    """The answers of one day as publish applies them (read once, so what is applied and
    what the manifest records are the same bytes)."""

    answers: pa.Table | None  # tagging.review.export.SCHEMA; None: nobody answered
    sha256: str | None

    @classmethod
    def load(cls, catalogue_root: Path | str, date: str) -> DayOverlay:
        path = answers_path(catalogue_root, date)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return cls(None, None)
        return cls(pq.read_table(io.BytesIO(data), schema=ANSWERS_SCHEMA),
                   hashlib.sha256(data).hexdigest())

    def apply(self, table: pa.Table) -> pa.Table:
        return apply_answers(table, self.answers)

    def publish_shard(self, src: Path, dest: Path) -> None:
        overlay_shard(src, dest, self.answers)

    def quality(self, staged: list[Path]) -> dict:
        return staged_quality(staged, self.answers)

    def manifest(self) -> dict[str, Any]:
        """What the publication applied: the answers file's SHA-256 and counts."""
        answers = self.answers["answer"].to_pylist() if self.answers is not None else []
        return {"sha256": self.sha256, "answers": len(answers),
                "unusable": sum(a == UNUSABLE for a in answers)}
