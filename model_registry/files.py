"""Durable file writes and content hashes, shared by the registry and the catalogue.

A write is durable once the file and its directory entry are fsynced; "atomic" means
write a temporary file beside the target, fsync it, rename it over the target, fsync the
directory, so a reader sees the old content or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def flocked(path: Path, *, shared: bool = False, timeout: float | None = None,
            on_timeout: Callable[[], Exception] = TimeoutError) -> Iterator[None]:
    """Hold an flock on `path` (created if need be); the kernel releases it if we die.

    timeout: seconds to wait for it (None: as long as it takes); then `on_timeout()` is
    raised, an error whose message says who holds what.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    with open(path, "a") as handle:
        if timeout is None:
            fcntl.flock(handle, mode)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(handle, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise on_timeout() from None
                    time.sleep(0.02)
        yield


def to_json(value: Any) -> Any:
    """json.dumps fallback: numpy scalars/arrays and paths."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
