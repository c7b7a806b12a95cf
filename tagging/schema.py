"""The output contract (DESIGN.md): the tag columns every published row gets, in order.

Shared by the tagger (writes them), planning (an input column must not carry one of these
names), validation (checks them) and publish (reads the staged shards' input metadata).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from tagging.labels import CATEGORY_SLUGS

TOP3_TYPE = pa.list_(pa.struct([("category", pa.string()), ("confidence", pa.float32())]))
TAGGED_AT_TYPE = pa.timestamp("us", tz="UTC")
OUTPUT_FIELDS = [
    pa.field("category", pa.string()),
    pa.field("category_id", pa.int8()),
    pa.field("category_confidence", pa.float32()),
    pa.field("category_top3", TOP3_TYPE),
    pa.field("needs_review", pa.bool_()),
    pa.field("model_version", pa.string()),
    pa.field("tagged_at", TAGGED_AT_TYPE),
    pa.field("tag_error", pa.string()),
    # "model": the tag is the prediction; "verified": a person's answer (applied at publish:
    # tagging.catalogue.answers); null: untagged
    pa.field("category_source", pa.string()),
]
OUTPUT_NAMES = [f.name for f in OUTPUT_FIELDS]
INPUT_KEY = b"tagging.input"  # staged file metadata: the input file, its SHA-256 and rows
SLUGS = pa.array(CATEGORY_SLUGS, pa.string())  # category_id -> category


def parse_time(value: str | datetime) -> datetime:
    """A tagged_at value (ISO string or datetime) as an aware datetime (naive: UTC)."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
