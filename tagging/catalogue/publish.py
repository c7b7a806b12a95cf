"""Publish a partition: staged shards become tagged/dt=D in one atomic symlink swap.

A published copy is an immutable folder under tagged/.versions/dt=D/ holding the part files
and a _MANIFEST.json (model version, input files with SHA-256 and row counts, output files,
counts); readers follow the tagged/dt=D symlink, so they see the old copy or the new one.
The day's review answers are applied on the way (tagging.review.overlay: a person's answer
wins over the model's tag in what search reads).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict

import pyarrow.compute as pc
import pyarrow.parquet as pq

from model_registry.files import flocked, fsync_path, sha256_file
from tagging.catalogue.layout import (
    MANIFEST,
    PARTITION_KEY,
    input_files,
    publish_lock_path,
    published_dir,
    remove_unless_live,
    staging_day,
    tagged_root,
    versions_dir,
)
from tagging.catalogue.published import read_manifest
from tagging.catalogue.schema import INPUT_KEY, parse_time
from tagging.errors import PartitionInvalid
from tagging.review.overlay import DayOverlay
from tagging.settings import TaggingLimits

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
    manifest = read_manifest(catalogue_root, date)
    return bool(manifest and manifest["model_version"] == model_version
                and manifest["inputs"] == input_checksums(catalogue_root, date))


def publish_partition(catalogue_root: Path | str, date: str, *, staged: list[str],
                      model_version: str, tagged_at: str) -> Path:
    """Publish staged shards as tagged/dt=DATE in one atomic symlink swap.

    Under the day's publish lock, so two runs never interleave a swap and a clean-up.
    """
    root = Path(catalogue_root)
    staged_paths = sorted(Path(s) for s in staged)
    inputs = staged_inputs(date, staged_paths)
    with publish_lock(root, date):
        overlay = DayOverlay.load(root, date)
        version_dir = versions_dir(root, date) / (
            datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:8])
        tmp_dir = version_dir.with_name(version_dir.name + ".tmp")
        tmp_dir.mkdir(parents=True)
        outputs = []
        counts = Counts(rows=0, tagged=0, errors=0, needs_review=0)
        for i, src in enumerate(staged_paths):
            dest = tmp_dir / f"part-{i:05d}.parquet"
            overlay.publish_shard(src, dest)
            table = pq.read_table(dest, columns=["tag_error", "needs_review"])
            errors = table.num_rows - table["tag_error"].null_count
            counts["rows"] += table.num_rows
            counts["errors"] += errors
            counts["tagged"] += table.num_rows - errors
            counts["needs_review"] += pc.sum(table["needs_review"]).as_py() or 0
            outputs.append({"file": dest.name, "rows": table.num_rows,
                            "sha256": sha256_file(dest)})
        manifest = {
            "partition": date, "model_version": model_version,
            "tagged_at": parse_time(tagged_at).isoformat(),
            "published_at": datetime.now(UTC).isoformat(),
            "inputs": inputs, "outputs": outputs, "counts": counts,
            "quality": overlay.quality(staged_paths),  # of the model's tags
            "reviews": overlay.manifest(),
        }
        (tmp_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
        for path in [*tmp_dir.iterdir(), tmp_dir]:
            fsync_path(path)
        link = published_dir(root, date)
        previous = link.resolve() if link.exists() else None
        os.rename(tmp_dir, version_dir)
        swap_symlink(link, version_dir)
        log.info("published %s: %s", link, counts)
        cleanup(root, date, keep={version_dir, previous},
                staged_dirs={p.parent for p in staged_paths})
    return link


@contextlib.contextmanager
def publish_lock(catalogue_root: Path | str, date: str, *,
                 timeout: float = TaggingLimits.publish_lock_timeout_s) -> Iterator[None]:
    """Hold the day's exclusive publish lock (released by the kernel if we die)."""
    path = publish_lock_path(catalogue_root, date)
    with flocked(path, timeout=timeout, on_timeout=lambda: PartitionInvalid(
            f"{path}: another run has been publishing {date} for more than {timeout:g} s")):
        yield


def staged_inputs(date: str, staged: list[Path]) -> list[InputFile]:
    """The input files the staged shards were tagged from, as their metadata records them
    (the SHA-256 of the bytes read, not of whatever the input folder holds now); every row
    of each file staged exactly once."""
    files: dict[str, InputFile] = {}
    staged_rows: dict[str, int] = {}
    seen: set[tuple[str, tuple[int, ...]]] = set()
    for path in staged:
        metadata = pq.read_schema(path).metadata or {}
        if INPUT_KEY not in metadata:
            raise PartitionInvalid(f"{path}: not a staged shard (no {INPUT_KEY.decode()} "
                                   "metadata)")
        origin = json.loads(metadata[INPUT_KEY])
        name, groups = origin["file"], tuple(origin["row_groups"])
        if (name, groups) in seen:
            raise PartitionInvalid(f"{path}: row groups {list(groups)} of {name} staged twice")
        seen.add((name, groups))
        entry = files.setdefault(name, InputFile(file=name, sha256=origin["sha256"],
                                                 rows=origin["rows"]))
        if entry["sha256"] != origin["sha256"]:
            raise PartitionInvalid(f"{date}: shards of {name} were tagged from different "
                                   "contents of it (replaced during the run)")
        staged_rows[name] = staged_rows.get(name, 0) + pq.ParquetFile(path).metadata.num_rows
    for name, entry in files.items():
        if staged_rows[name] != entry["rows"]:
            raise PartitionInvalid(f"{date}: staged shards hold {staged_rows[name]} rows of "
                                   f"{name}, it has {entry['rows']}")
    return [files[name] for name in sorted(files)]


def swap_symlink(link: Path, target: Path) -> None:
    """Point `link` at `target` atomically (rename a fresh symlink over the old one)."""
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex}.link")
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)
    fsync_path(link.parent)


def cleanup(root: Path, date: str, *, keep: set[Path | None], staged_dirs: set[Path]) -> None:
    """Under the publish lock: drop the published staging dirs, killed runs' staging dirs,
    debris of crashed publishes, and every version but `keep` (the one just linked and the
    one readers may still be on)."""
    for d in staged_dirs:
        shutil.rmtree(d, ignore_errors=True)
    collect_staging(root, date)
    for old in versions_dir(root, date).iterdir():
        if old not in keep:  # a .tmp folder now is a crashed publish's: we hold the lock
            shutil.rmtree(old, ignore_errors=True)
    for link in tagged_root(root).glob(f".{PARTITION_KEY}={date}.*.link"):
        link.unlink(missing_ok=True)


def collect_staging(root: Path, date: str,
                    max_age_s: float = TaggingLimits.staging_max_age_s) -> list[Path]:
    """Remove the day's staging folders of runs that died: untouched for `max_age_s` and
    not locked by a live run (a DAG run between its shard tasks holds no lock, hence the
    age). Returns what was removed."""
    day = staging_day(root, date)
    removed = []
    for run_dir in sorted(day.iterdir()) if day.is_dir() else []:
        try:
            touched = max(p.stat().st_mtime for p in [run_dir, *run_dir.iterdir()])
        except FileNotFoundError:  # another run's clean-up, or its own publish
            continue
        if time.time() - touched > max_age_s and remove_unless_live(run_dir):
            log.warning("removed %s: staging left by a run that died", run_dir)
            removed.append(run_dir)
    return removed
