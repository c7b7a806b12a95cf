"""Every path of a catalogue, in one place (readers of published output: catalogue.published).

Layout under a catalogue root:
    incoming/dt=YYYY-MM-DD/*.parquet           input, never modified
    _staging/dt=YYYY-MM-DD/<run_id>/shard-N    one file per shard, written atomically
    _staging/dt=YYYY-MM-DD/<run_id>/.lock      flock'ed (shared) while a shard is written
    tagged/.versions/dt=YYYY-MM-DD/<id>/       an immutable published copy + _MANIFEST.json
    tagged/dt=YYYY-MM-DD -> .versions/...      symlink, swapped atomically on publish
    tagged/.dt=YYYY-MM-DD.lock                 flock'ed (exclusive) by the day's publisher
    images/                                    image_uri root (default; TAGGING_IMAGE_ROOT)
    labels/                                    the label store (tagging.loop.labelstore)
    reviews/dt=YYYY-MM-DD/answers.parquet      the day's review answers (tagging.review.export)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path

from model_registry.files import flocked
from tagging.errors import PartitionNotFound
from tagging.settings import path_or_url_of

MANIFEST = "_MANIFEST.json"
ANSWERS = "answers.parquet"
LOCK = ".lock"
PARTITION_KEY = "dt"  # readers take the hive key from the path: an input column must not


def incoming_root(catalogue_root: Path | str) -> Path:
    """incoming/: the input partitions."""
    return Path(catalogue_root) / "incoming"


def input_dir(catalogue_root: Path | str, date: str) -> Path:
    return incoming_root(catalogue_root) / f"{PARTITION_KEY}={date}"


def input_files(catalogue_root: Path | str, date: str) -> list[Path]:
    """The partition's input Parquet files, sorted; PartitionNotFound when there are none.

    Listed as Parquet readers list a dataset: names starting with "." or "_" (a writer's
    temporary file, _SUCCESS, _metadata) are not part of it.
    """
    files = sorted(p for p in input_dir(catalogue_root, date).glob("*.parquet")
                   if not p.name.startswith((".", "_")))
    if not files:
        raise PartitionNotFound(f"no input files in {input_dir(catalogue_root, date)}")
    return files


def tagged_root(catalogue_root: Path | str) -> Path:
    """tagged/: the published partitions (read them through tagging.catalogue.published)."""
    return Path(catalogue_root) / "tagged"


def published_dir(catalogue_root: Path | str, date: str) -> Path:
    """tagged/dt=DATE: the symlink readers follow to the current published copy."""
    return tagged_root(catalogue_root) / f"{PARTITION_KEY}={date}"


def images_dir(catalogue_root: Path | str) -> Path:
    """images/: where `image_uri` values resolve unless TAGGING_IMAGE_ROOT says otherwise."""
    return Path(catalogue_root) / "images"


def label_store_dir(catalogue_root: Path | str) -> Path | str:
    """labels/: the label store (tagging.loop.labelstore); under a URL root, a URL."""
    root = path_or_url_of(catalogue_root)
    return f"{root.rstrip('/')}/labels" if isinstance(root, str) else root / "labels"


def versions_dir(catalogue_root: Path | str, date: str) -> Path:
    """tagged/.versions/dt=DATE: every published copy of the partition (newest two kept)."""
    return tagged_root(catalogue_root) / ".versions" / f"{PARTITION_KEY}={date}"


def staging_root(catalogue_root: Path | str) -> Path:
    """_staging/: shards written by runs not yet published."""
    return Path(catalogue_root) / "_staging"


def staging_day(catalogue_root: Path | str, date: str) -> Path:
    """_staging/dt=DATE: one folder per run tagging the day."""
    return staging_root(catalogue_root) / f"{PARTITION_KEY}={date}"


def staging_dir(catalogue_root: Path | str, date: str, run_id: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    return staging_day(catalogue_root, date) / safe


def shard_path(catalogue_root: Path | str, date: str, run_id: str, index: int) -> Path:
    """Where shard `index` of a run is staged."""
    return staging_dir(catalogue_root, date, run_id) / f"shard-{index:05d}.parquet"


def reviews_root(catalogue_root: Path | str) -> Path:
    return Path(catalogue_root) / "reviews"


def answers_path(catalogue_root: Path | str, date: str) -> Path:
    """reviews/dt=DATE/answers.parquet: the day's winning review answers."""
    return reviews_root(catalogue_root) / f"{PARTITION_KEY}={date}" / ANSWERS


def file_identity(stat: os.stat_result) -> list[int]:
    """What changes when a file is replaced (rename: inode) or rewritten (size, mtime)."""
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns]


def publish_lock_path(catalogue_root: Path | str, date: str) -> Path:
    return tagged_root(catalogue_root) / f".{PARTITION_KEY}={date}.lock"


def staging_lock(run_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Mark a run's staging folder live while a shard is written into it (shared: the
    shards of one run may be written at once); staging clean-up never removes it then."""
    return flocked(run_dir / LOCK, shared=True)


def remove_unless_live(run_dir: Path) -> bool:
    """Remove a run's staging folder unless a process holds its lock; True if removed.

    The exclusive lock is held while removing, so a shard that starts meanwhile waits and
    then writes into a fresh folder.
    """
    try:
        with open(run_dir / LOCK, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(run_dir, ignore_errors=True)
    except (FileNotFoundError, BlockingIOError):  # removed meanwhile, or live
        return False
    return True
