"""Where the registry's objects live: a local directory or an S3 prefix, behind one interface.

Keys are relative POSIX paths ("versions/v0001/model.keras"). Every write replaces a whole
object atomically (a reader sees the old object or the new one) in one of three modes:

- "overwrite": create or replace;
- "create": create-only; the loser of a race gets AlreadyExists;
- an ETag: compare-and-swap; written only if the object still has that ETag, else Conflict.

S3 (obstore): "create" is `If-None-Match: *` and the ETag mode `If-Match`; the server
decides who wins. Endpoint and credentials come from the standard AWS_* variables only
(obstore reads them; they are never logged or stored).

A local directory: plain POSIX, as durable as before: a temporary file in `<root>/.staging`,
fsynced, then `os.link` (create-only: fails if the name exists) or `os.replace` into place,
then the directory fsynced (so no temporary name ever shows in a version's folder).
obstore's LocalStore is not used: it does not fsync and has no conditional update. The
compare-and-swap holds an flock on a lock file beside the object for the compare-then-
replace (every writer of that object takes it); nothing else locks.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Literal

from model_registry.errors import RegistryError
from model_registry.files import TMP_PREFIX, flocked, fsync_path

Mode = Literal["overwrite", "create"] | str  # or the ETag a compare-and-swap expects
LOCK_SUFFIX = ".lock"
STAGING = ".staging"  # a local root's temporary files (never listed)
CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
_READERS = 16  # parallel GETs when many small objects are read (events)


class AlreadyExists(Exception):
    """A create-only write found the object there already (another writer won)."""


class Conflict(Exception):
    """A compare-and-swap found another ETag (the object changed since it was read)."""


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: key relative to the root, size, ETag, last modified (store clock)."""

    key: str
    size: int
    etag: str
    modified: datetime


class Store:
    """A root (directory or S3 prefix) of whole objects; see the module docstring."""

    url: str

    def location(self, key: str) -> str:
        """The object's full name for messages: a path or an s3:// URL."""
        return f"{self.url.rstrip('/')}/{key}"

    def get(self, key: str) -> tuple[bytes, str] | None:
        """(content, ETag), or None when there is no such object."""
        raise NotImplementedError

    def get_many(self, keys: Iterable[str]) -> list[tuple[bytes, str] | None]:
        """get() of each key, in order (in parallel where that helps)."""
        return [self.get(key) for key in keys]

    def download(self, key: str, handle: BinaryIO) -> str:
        """Stream the object into `handle`; return its SHA-256 (FileNotFoundError: missing)."""
        raise NotImplementedError

    def head(self, key: str) -> ObjectInfo | None:
        """The object's size, ETag and time, or None when there is no such object."""
        raise NotImplementedError

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object under the folder `prefix` ("" or ending with "/"), sorted by key."""
        raise NotImplementedError

    def put(self, key: str, data: bytes, mode: Mode = "overwrite") -> str:
        """Write `data` as `key` in `mode`; return the new ETag."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove the object (no error when it is already gone)."""
        raise NotImplementedError

    def seal(self, prefix: str) -> None:
        """Make the objects under a committed prefix read-only where the store can."""


def open_store(root: str | Path, *, lock_timeout: float = 120.0) -> Store:
    """The store at `root`: "s3://bucket/prefix", or a local directory (a path)."""
    text = str(root)
    if text.startswith("s3://"):
        return S3Objects(text)
    if "://" in text:
        raise RegistryError(f"{text}: unsupported registry URL (use s3://bucket/prefix or a "
                            "local path)")
    return LocalObjects(Path(root), lock_timeout=lock_timeout)


# ---------------------------------------------------------------- local directory


class LocalObjects(Store):
    """Objects as files under a directory (created on the first write)."""

    def __init__(self, root: Path, *, lock_timeout: float = 120.0) -> None:
        self.root = root
        self.url = str(root)
        self.lock_timeout = lock_timeout

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise RegistryError(f"{self.root}: invalid object key {key!r}")
        return self.root.joinpath(*parts)

    def get(self, key: str) -> tuple[bytes, str] | None:
        try:
            with open(self._path(key), "rb") as handle:
                return handle.read(), _file_etag(os.fstat(handle.fileno()))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def download(self, key: str, handle: BinaryIO) -> str:
        with open(self._path(key), "rb") as source:
            digest = hashlib.file_digest(source, "sha256")
            source.seek(0)
            shutil.copyfileobj(source, handle)
        return digest.hexdigest()

    def head(self, key: str) -> ObjectInfo | None:
        try:
            stat = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return ObjectInfo(key, stat.st_size, _file_etag(stat),
                          datetime.fromtimestamp(stat.st_mtime, UTC))

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        out = []
        for folder, dirs, names in os.walk(self.root / prefix):
            if Path(folder) == self.root and STAGING in dirs:
                dirs.remove(STAGING)
            for name in names:
                if name.endswith(LOCK_SUFFIX):
                    continue
                path = Path(folder, name)
                try:
                    stat = path.stat()
                except FileNotFoundError:  # deleted while we listed
                    continue
                out.append(ObjectInfo(path.relative_to(self.root).as_posix(), stat.st_size,
                                      _file_etag(stat), datetime.fromtimestamp(stat.st_mtime, UTC)))
        return sorted(out, key=lambda o: o.key)

    def put(self, key: str, data: bytes, mode: Mode = "overwrite") -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.root / STAGING
        staging.mkdir(exist_ok=True)
        temp = staging / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            with open(temp, "xb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if mode == "create":
                try:
                    os.link(temp, path)
                except FileExistsError:
                    raise AlreadyExists(self.location(key)) from None
                except PermissionError:  # a sealed (read-only) folder: taken if it is there
                    if path.exists():
                        raise AlreadyExists(self.location(key)) from None
                    raise
            elif mode == "overwrite":
                os.replace(temp, path)
            else:
                self._swap(temp, path, expected=mode)
        finally:
            temp.unlink(missing_ok=True)
        fsync_path(path.parent)
        return _file_etag(path.stat())

    def _swap(self, temp: Path, path: Path, *, expected: str) -> None:
        """Replace `path` by `temp` if its ETag is still `expected` (under the object's lock)."""
        lock = path.with_name(f".{path.name}{LOCK_SUFFIX}")
        with flocked(lock, timeout=self.lock_timeout, on_timeout=lambda: RegistryError(
                f"{lock}: another process has held this lock for more than "
                f"{self.lock_timeout:g} s")):
            try:
                current = _file_etag(path.stat())
            except FileNotFoundError:
                current = None
            if current != expected:
                raise Conflict(self.location(str(path.relative_to(self.root))))
            os.replace(temp, path)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def seal(self, prefix: str) -> None:
        """fsync, then chmod read-only every file and folder under the prefix (deepest first)."""
        top = self._path(prefix.rstrip("/"))
        for item in sorted([top, *top.rglob("*")], key=lambda p: len(p.parts), reverse=True):
            fsync_path(item)
            item.chmod(0o555 if item.is_dir() else 0o444)


def _file_etag(stat: os.stat_result) -> str:
    """inode, mtime and size: a replace (a new inode) always changes it."""
    return f'"{stat.st_ino:x}-{stat.st_mtime_ns:x}-{stat.st_size:x}"'


# ---------------------------------------------------------------- S3


class S3Objects(Store):
    """Objects under s3://bucket/prefix, through obstore (conditional writes on the server)."""

    def __init__(self, url: str) -> None:
        from obstore.store import S3Store

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise RegistryError(f"{url}: no bucket in the URL (s3://bucket/prefix)")
        missing = [name for name in CREDENTIAL_VARS if not os.environ.get(name)]
        if missing:
            raise RegistryError(f"{url}: set {' and '.join(missing)} (and AWS_ENDPOINT_URL for "
                                "a server other than AWS) to use an S3 registry")
        self.url = url.rstrip("/")
        self.bucket = bucket
        allow_http = os.environ.get("AWS_ALLOW_HTTP", "").lower() in ("1", "true", "yes")
        self._store = S3Store(bucket, prefix=prefix.strip("/") or None,
                              client_options={"allow_http": allow_http, "connect_timeout": "5s",
                                              "timeout": "120s"},
                              retry_config={"max_retries": 3,
                                            "retry_timeout": timedelta(seconds=30)})

    def get(self, key: str) -> tuple[bytes, str] | None:
        import obstore

        try:
            result = obstore.get(self._store, key)
            return bytes(result.bytes()), result.meta["e_tag"] or ""
        except FileNotFoundError as e:
            self._raise_if_no_bucket(e)
            return None
        except Exception as e:
            raise self._error("read", key, e) from None

    def get_many(self, keys: Iterable[str]) -> list[tuple[bytes, str] | None]:
        with ThreadPoolExecutor(_READERS) as pool:
            return list(pool.map(self.get, keys))

    def download(self, key: str, handle: BinaryIO) -> str:
        import obstore

        digest = hashlib.sha256()
        try:
            for chunk in obstore.get(self._store, key):
                digest.update(chunk)
                handle.write(chunk)
        except FileNotFoundError as e:
            self._raise_if_no_bucket(e)
            raise
        except Exception as e:
            raise self._error("read", key, e) from None
        return digest.hexdigest()

    def head(self, key: str) -> ObjectInfo | None:
        import obstore

        try:
            meta = obstore.head(self._store, key)
        except FileNotFoundError as e:
            self._raise_if_no_bucket(e)
            return None
        except Exception as e:
            raise self._error("read", key, e) from None
        return ObjectInfo(key, meta["size"], meta["e_tag"] or "", meta["last_modified"])

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        import obstore

        try:
            found = [ObjectInfo(meta["path"], meta["size"], meta["e_tag"] or "",
                                meta["last_modified"])
                     for batch in obstore.list(self._store, prefix.rstrip("/") or None)
                     for meta in batch]
        except Exception as e:
            raise self._error("list", prefix, e) from None
        return sorted(found, key=lambda o: o.key)

    def put(self, key: str, data: bytes, mode: Mode = "overwrite") -> str:
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        put_mode = mode if mode in ("overwrite", "create") else {"e_tag": mode}
        try:
            result = obstore.put(self._store, key, data, mode=put_mode)
        except AlreadyExistsError:
            raise AlreadyExists(self.location(key)) from None
        except PreconditionError:
            raise Conflict(self.location(key)) from None
        except Exception as e:
            raise self._error("write", key, e) from None
        return result["e_tag"] or ""

    def delete(self, key: str) -> None:
        import obstore

        try:
            obstore.delete(self._store, key)
        except FileNotFoundError:
            pass
        except Exception as e:
            raise self._error("delete", key, e) from None

    def _raise_if_no_bucket(self, error: Exception) -> None:
        if "NoSuchBucket" in str(error):
            raise RegistryError(f"{self.url}: bucket {self.bucket!r} does not exist") from None

    def _error(self, action: str, key: str, error: Exception) -> RegistryError:
        """One clear line for a failed request (never the credentials: obstore's message
        names the endpoint and the path, not the keys)."""
        from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

        text = str(error)
        if "NoSuchBucket" in text:
            return RegistryError(f"{self.url}: bucket {self.bucket!r} does not exist")
        denied = ("403 Forbidden", "SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied")
        if isinstance(error, PermissionDeniedError | UnauthenticatedError) or any(
                marker in text for marker in denied):
            return RegistryError(f"{self.location(key)}: access denied ({action}): check "
                                 "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        first = text.split("\n\nDebug source", 1)[0].strip().splitlines()
        return RegistryError(f"{self.location(key)}: cannot {action} "
                             f"({type(error).__name__}: {first[0] if first else ''})")
