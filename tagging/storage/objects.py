"""Objects under any root, through obstore: read, create-only or replacing writes, list,
exists, delete, identity and SHA-256, and an atomic streaming writer (a Parquet file
appears whole or not at all)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tagging.errors import ObjectExists, StorageError
from tagging.storage.config import (
    CONNECT_TIMEOUT_S,
    MAX_BACKOFF_S,
    MAX_RETRIES,
    REQUEST_TIMEOUT_S,
    S3Config,
    s3_config,
)
from tagging.storage.errors import storage_errors
from tagging.storage.roots import Root, as_root

if TYPE_CHECKING:
    import pyarrow as pa


@functools.lru_cache(maxsize=8)
def _s3_store(bucket: str, config: S3Config):
    from obstore.store import S3Store

    kwargs: dict[str, Any] = {"region": config.region}
    if config.endpoint:
        kwargs["endpoint"] = config.endpoint
    if config.key_id:
        kwargs |= {"access_key_id": config.key_id, "secret_access_key": config.secret or ""}
    if config.token:
        kwargs["session_token"] = config.token
    return S3Store(bucket, **kwargs, client_options={
        "allow_http": config.allow_http, "connect_timeout": f"{CONNECT_TIMEOUT_S}s",
        "timeout": f"{REQUEST_TIMEOUT_S}s"},
        retry_config={"max_retries": MAX_RETRIES,
                      "retry_timeout": timedelta(seconds=REQUEST_TIMEOUT_S),
                      "backoff": {"init_backoff": timedelta(milliseconds=100),
                                  "max_backoff": timedelta(seconds=MAX_BACKOFF_S),
                                  "base": 2}})


@functools.lru_cache(maxsize=1)
def _local_store():
    from obstore.store import LocalStore

    return LocalStore(mkdir=True)


def object_store(obj: Root | str) -> tuple[Any, str]:
    """The obstore store holding `obj`, and the object's key in it."""
    obj = as_root(obj)
    if obj.is_remote:
        return _s3_store(obj.bucket, s3_config()), obj.key
    return _local_store(), obj.key


def read_bytes(obj: Root | str) -> bytes:
    import obstore

    store, key = object_store(obj)
    with storage_errors(obj):
        return bytes(obstore.get(store, key).bytes())


def write_bytes(obj: Root | str, data: bytes, *, create_only: bool = False) -> None:
    """Write an object whole (readers see the old one or the new one); `create_only`:
    ObjectExists when it is already there (one writer of many wins)."""
    import obstore
    from obstore.exceptions import AlreadyExistsError

    store, key = object_store(obj)
    try:
        with storage_errors(obj):
            obstore.put(store, key, data, mode="create" if create_only else "overwrite")
    except StorageError as e:
        if isinstance(e.__cause__, AlreadyExistsError | FileExistsError):
            raise ObjectExists(f"{obj}: already exists") from None
        raise


def upload_file(path: Path, obj: Root | str) -> None:
    """Copy a local file to `obj` whole (streamed; a multipart upload on S3)."""
    import obstore

    store, key = object_store(obj)
    with storage_errors(obj), open(path, "rb") as handle:
        obstore.put(store, key, handle)


def exists(obj: Root | str) -> bool:
    import obstore
    from obstore.exceptions import NotFoundError

    store, key = object_store(obj)
    try:
        with storage_errors(obj):
            obstore.head(store, key)
    except StorageError as e:
        if isinstance(e.__cause__, NotFoundError | FileNotFoundError):
            return False
        raise
    return True


def delete(obj: Root | str) -> None:
    """Delete one object (no error when it is already gone)."""
    import obstore

    if not exists(obj):
        return
    store, key = object_store(obj)
    with storage_errors(obj):
        obstore.delete(store, key)


def delete_prefix(prefix: Root | str) -> None:
    """Delete every object under `prefix` (a local folder: the folder itself)."""
    import shutil

    prefix = as_root(prefix)
    if not prefix.is_remote:
        shutil.rmtree(prefix.path, ignore_errors=True)
        return
    for obj in list_objects(prefix):
        delete(obj.root)


@dataclass(frozen=True)
class ObjectInfo:
    root: Root
    size: int
    mtime: float  # seconds since the epoch
    etag: str | None


def list_objects(prefix: Root | str) -> list[ObjectInfo]:
    """Every object under `prefix` (recursively), sorted by name; [] when there is none."""
    import obstore

    prefix = as_root(prefix)
    if not prefix.is_remote and not prefix.path.is_dir():
        return []
    store, key = object_store(prefix)
    found = []
    with storage_errors(prefix):
        for batch in obstore.list(store, key + "/"):
            for meta in batch:
                relative = meta["path"][len(key):].strip("/")
                found.append(ObjectInfo(prefix / relative, meta["size"],
                                        meta["last_modified"].timestamp(), meta.get("e_tag")))
    return sorted(found, key=lambda o: o.root.url)


def identity(obj: Root | str) -> list:
    """What changes when an object is replaced: (inode, size, mtime) of a local file,
    (ETag, size) of a remote object."""
    import obstore

    obj = as_root(obj)
    if not obj.is_remote:
        stat = os.stat(obj.path)
        return [stat.st_ino, stat.st_size, stat.st_mtime_ns]
    store, key = object_store(obj)
    with storage_errors(obj):
        meta = obstore.head(store, key)
    return [meta.get("e_tag"), meta["size"]]


def sha256(obj: Root | str) -> tuple[str, list]:
    """SHA-256 of an object's bytes and the identity of exactly those bytes (a remote read is
    conditional on the ETag seen first, so a replacement mid-read is an error)."""
    import obstore

    obj = as_root(obj)
    digest = hashlib.sha256()
    if not obj.is_remote:
        with open(obj.path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            digest = hashlib.file_digest(handle, "sha256")
        return digest.hexdigest(), [stat.st_ino, stat.st_size, stat.st_mtime_ns]
    store, key = object_store(obj)
    with storage_errors(obj):
        meta = obstore.head(store, key)
        for chunk in obstore.get(store, key, options={"if_match": meta["e_tag"]}):
            digest.update(chunk)
    return digest.hexdigest(), [meta.get("e_tag"), meta["size"]]


class _Sink(io.RawIOBase):
    """A write-only file object over an obstore writer (pyarrow needs `closed` and `tell`)."""

    def __init__(self, writer):
        self._writer, self._pos = writer, 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        written = self._writer.write(data)
        self._pos += written
        return written

    def tell(self) -> int:
        return self._pos


@contextlib.contextmanager
def atomic_writer(obj: Root | str) -> Iterator[pa.NativeFile]:
    """A binary output stream that becomes `obj` only when the block ends without error
    (local: a temporary file renamed into place; S3: a multipart upload completed, or
    aborted on error). Pass it to pq.ParquetWriter."""
    import obstore
    import pyarrow as pa

    store, key = object_store(obj)
    with storage_errors(obj), obstore.open_writer(store, key) as writer:
        yield pa.PythonFile(_Sink(writer), mode="w")


def check_reachable(root: Root | str) -> None:
    """StorageError unless the root's storage answers (bucket there, credentials good)."""
    import obstore

    root = as_root(root)
    if not root.is_remote:
        return
    store, key = object_store(root)
    with storage_errors(root):
        next(iter(obstore.list(store, key + "/", chunk_size=1)), None)
