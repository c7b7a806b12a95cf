"""Durable file writes and content hashes, shared by the registry and the catalogue.

A write is durable once the file and its directory entry are fsynced; "atomic" means
write a temporary file beside the target, fsync it, rename it over the target, fsync the
directory, so a reader sees the old content or the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def fsync_path(path: Path | str) -> None:
    """fsync a file or a directory (a directory: its entries, e.g. after a rename)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_exclusive(path: Path, obj: Any) -> None:
    """Create `path` (it must not exist) with `obj` as indented JSON, fsynced."""
    with open(path, "x", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=2, default=to_json)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_json(path: Path, obj: Any) -> None:
    """Replace `path` with `obj` as JSON atomically and durably."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=to_json) + "\n").encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    try:
        with open(temp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    fsync_path(path.parent)


def to_json(value: Any) -> Any:
    """json.dumps fallback: numpy scalars/arrays and paths."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
