"""Publish a partition: staged shards become tagged/dt=D in one atomic symlink swap.

A published copy is an immutable folder under tagged/.versions/dt=D/ holding the part files
and a _MANIFEST.json (model version, input files with SHA-256 and row counts, output files,
counts); readers follow the tagged/dt=D symlink, so they see the old copy or the new one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict

import pyarrow.compute as pc
import pyarrow.parquet as pq

from model_registry.files import fsync_path, sha256_file
from tagging.catalogue.layout import (
    MANIFEST,
    input_files,
    published_dir,
    read_published_manifest,
    versions_dir,
)
from tagging.catalogue.tagger import parse_time
from tagging.errors import PartitionInvalid

log = logging.getLogger(__name__)


class InputFile(TypedDict):
    file: str
    sha256: str
    rows: int


class Counts(TypedDict):
    rows: int
    tagged: int
    errors: int
    needs_review: int


def input_checksums(catalogue_root: Path | str, date: str) -> list[InputFile]:
    return [{"file": p.name, "sha256": sha256_file(p),
             "rows": pq.ParquetFile(p).metadata.num_rows}
            for p in input_files(catalogue_root, date)]


def is_published(catalogue_root: Path | str, date: str, model_version: str) -> bool:
    """True when the partition is published by this model version from the same input files."""
    manifest = read_published_manifest(catalogue_root, date)
    return bool(manifest and manifest["model_version"] == model_version
                and manifest["inputs"] == input_checksums(catalogue_root, date))


def publish_partition(catalogue_root: Path | str, date: str, *, staged: list[str],
                      model_version: str, tagged_at: str) -> Path:
    """Publish staged shards as tagged/dt=DATE in one atomic symlink swap."""
    root = Path(catalogue_root)
    inputs = input_checksums(root, date)
    staged_paths = sorted(Path(s) for s in staged)
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in staged_paths)
    expected = sum(i["rows"] for i in inputs)
    if rows != expected:
        raise PartitionInvalid(f"{date}: staged shards hold {rows} rows, input has {expected}")
    version_dir = versions_dir(root, date) / (
        datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:8])
    tmp_dir = version_dir.with_name(version_dir.name + ".tmp")
    tmp_dir.mkdir(parents=True)
    outputs = []
    counts = Counts(rows=0, tagged=0, errors=0, needs_review=0)
    for i, src in enumerate(staged_paths):
        dest = tmp_dir / f"part-{i:05d}.parquet"
        try:
            os.link(src, dest)
        except OSError:
            shutil.copy2(src, dest)
        table = pq.read_table(dest, columns=["tag_error", "needs_review"])
        errors = table.num_rows - table["tag_error"].null_count
        counts["rows"] += table.num_rows
        counts["errors"] += errors
        counts["tagged"] += table.num_rows - errors
        counts["needs_review"] += pc.sum(table["needs_review"]).as_py() or 0
        outputs.append({"file": dest.name, "rows": table.num_rows, "sha256": sha256_file(dest)})
    manifest = {
        "partition": date, "model_version": model_version,
        "tagged_at": parse_time(tagged_at).isoformat(),
        "published_at": datetime.now(UTC).isoformat(),
        "inputs": inputs, "outputs": outputs, "counts": counts,
    }
    (tmp_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    for path in [*tmp_dir.iterdir(), tmp_dir]:
        fsync_path(path)
    os.rename(tmp_dir, version_dir)
    swap_symlink(published_dir(root, date), version_dir)
    log.info("published %s: %s", published_dir(root, date), counts)
    cleanup(root, date, keep=version_dir, staged_dirs={p.parent for p in staged_paths})
    return published_dir(root, date)


def swap_symlink(link: Path, target: Path) -> None:
    """Point `link` at `target` atomically (rename a fresh symlink over the old one)."""
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex}.link")
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)
    fsync_path(link.parent)


def cleanup(root: Path, date: str, *, keep: Path, staged_dirs: set[Path]) -> None:
    """Drop published staging dirs, debris of crashed publishes, and all but two versions."""
    for d in staged_dirs:
        shutil.rmtree(d, ignore_errors=True)
    entries = sorted(keep.parent.iterdir(), key=lambda p: p.name)
    versions = [p for p in entries if not p.name.endswith(".tmp")]
    for old in [p for p in entries if p.name.endswith(".tmp")] + versions[:-2]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
    for link in root.joinpath("tagged").glob(f".dt={date}.*.link"):
        link.unlink(missing_ok=True)
