"""Every path of a catalogue, in one place.

Layout under a catalogue root:
    incoming/dt=YYYY-MM-DD/*.parquet           input, never modified
    _staging/dt=YYYY-MM-DD/<run_id>/shard-N    one file per shard, written atomically
    tagged/.versions/dt=YYYY-MM-DD/<id>/       an immutable published copy + _MANIFEST.json
    tagged/dt=YYYY-MM-DD -> .versions/...      symlink, swapped atomically on publish
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tagging.errors import PartitionNotFound

MANIFEST = "_MANIFEST.json"


def input_dir(catalogue_root: Path | str, date: str) -> Path:
    return Path(catalogue_root) / "incoming" / f"dt={date}"


def input_files(catalogue_root: Path | str, date: str) -> list[Path]:
    """The partition's input Parquet files, sorted; PartitionNotFound when there are none."""
    files = sorted(input_dir(catalogue_root, date).glob("*.parquet"))
    if not files:
        raise PartitionNotFound(f"no input files in {input_dir(catalogue_root, date)}")
    return files


def published_dir(catalogue_root: Path | str, date: str) -> Path:
    """tagged/dt=DATE: the symlink readers follow to the current published copy."""
    return Path(catalogue_root) / "tagged" / f"dt={date}"


def versions_dir(catalogue_root: Path | str, date: str) -> Path:
    """tagged/.versions/dt=DATE: every published copy of the partition (newest two kept)."""
    return Path(catalogue_root) / "tagged" / ".versions" / f"dt={date}"


def staging_dir(catalogue_root: Path | str, date: str, run_id: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    return Path(catalogue_root) / "_staging" / f"dt={date}" / safe


def shard_path(catalogue_root: Path | str, date: str, run_id: str, index: int) -> Path:
    """Where shard `index` of a run is staged."""
    return staging_dir(catalogue_root, date, run_id) / f"shard-{index:05d}.parquet"


def read_published_manifest(catalogue_root: Path | str, date: str) -> dict[str, Any] | None:
    """The _MANIFEST.json of the published partition, or None when it is not published."""
    path = published_dir(catalogue_root, date) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None
