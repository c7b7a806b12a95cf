"""The read seam for published output: every reader of tagged rows or manifests uses this.

A published day is the `dt=D` partition of the tagged Delta table (tagging.catalogue.table,
written by tagging.catalogue.publish), on local disk or S3 alike; its manifest is the one
the day's current commit points at.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from tagging.catalogue import table
from tagging.storage import Root


def published_days(catalogue_root: Root | str) -> list[str]:
    """The days with a published partition, oldest first."""
    return table.published_days(catalogue_root)


def read_manifest(catalogue_root: Root | str, date: str) -> dict[str, Any] | None:
    """The published partition's manifest, or None when the day is not published."""
    return table.read_manifest(catalogue_root, date)


def read_published(catalogue_root: Root | str, date: str,
                   columns: list[str] | None = None) -> pa.Table:
    """The published rows of a day (its own columns, or `columns`). A Delta table keeps no
    row order: product_id is the key.

    PartitionNotFound when the day is not published.
    """
    return table.read_day(catalogue_root, date, columns)


def published_schema(catalogue_root: Root | str, date: str) -> pa.Schema | None:
    """The columns of a day's published rows, as published (None: published without rows).

    PartitionNotFound when the day is not published.
    """
    dataset = table.day_dataset(catalogue_root, date)
    names = (read_manifest(catalogue_root, date) or {}).get("columns") or []
    return pa.schema([dataset.schema.field(n) for n in names]) if names else None
