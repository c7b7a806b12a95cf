"""The read seam for published output: every reader of tagged rows or manifests uses this.

Today a published day is `tagged/dt=D`, a symlink to an immutable folder of part files and
its `_MANIFEST.json` (tagging.catalogue.layout, written by tagging.catalogue.publish); a
change of storage replaces the internals here, not the callers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tagging.catalogue.layout import MANIFEST, PARTITION_KEY, published_dir, tagged_root
from tagging.errors import PartitionNotFound


def published_days(catalogue_root: Path | str) -> list[str]:
    """The days with a published partition, oldest first."""
    prefix = f"{PARTITION_KEY}="
    return sorted(link.name.removeprefix(prefix)
                  for link in tagged_root(catalogue_root).glob(f"{prefix}*")
                  if (link / MANIFEST).exists())


def read_manifest(catalogue_root: Path | str, date: str) -> dict[str, Any] | None:
    """The published partition's manifest, or None when the day is not published."""
    path = published_dir(catalogue_root, date) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def read_published(catalogue_root: Path | str, date: str,
                   columns: list[str] | None = None) -> pa.Table:
    """The published rows of a day (every column, or `columns`), in published order.

    PartitionNotFound when the day is not published.
    """
    parts = _parts(catalogue_root, date)
    if not parts:
        return pa.schema([]).empty_table()
    # partitioning=None: the dt=... folder name is not a column of the files
    return pq.read_table(parts, columns=columns, partitioning=None)


def published_schema(catalogue_root: Path | str, date: str) -> pa.Schema | None:
    """The columns of a day's published rows (None: published without rows).

    PartitionNotFound when the day is not published.
    """
    parts = _parts(catalogue_root, date)
    return pq.read_schema(parts[0]) if parts else None


def _parts(catalogue_root: Path | str, date: str) -> list[Path]:
    folder = published_dir(catalogue_root, date)
    if not (folder / MANIFEST).exists():
        raise PartitionNotFound(f"{folder}: not published")
    return sorted(folder.glob("part-*.parquet"))
