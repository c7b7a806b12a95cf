"""The one module that decides local vs remote: a root is a local path or s3://bucket/prefix.

Endpoint and credentials come only from the standard AWS_* environment variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION,
AWS_ALLOW_HTTP), read when a client is made; they are never logged, never put in an error
message and never returned by anything but the client factories here.

It gives, for any root: objects (read, create-only or replacing writes, list, exists,
delete) through obstore; an atomic streaming writer (a Parquet file appears whole or not at
all); a pyarrow filesystem and path for streaming Parquet reads; `delta_options` for
deltalake. Every failure of the storage itself (endpoint unreachable, credentials refused,
bucket missing) is a StorageError whose message says which, without a traceback's worth of
client internals.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tagging.errors import ObjectExists, StorageError

if TYPE_CHECKING:  # pyarrow is imported where used: the DAG file imports settings -> Root
    import pyarrow as pa
    import pyarrow.fs as pafs

SCHEME = "s3://"
# The standard variables a client reads; nothing else configures object storage.
ENDPOINT, KEY_ID, SECRET = "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"
TOKEN, REGION, ALLOW_HTTP = "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ALLOW_HTTP"
DEFAULT_REGION = "us-east-1"
# A request is retried MAX_RETRIES times with backoff from 100 ms doubling up to 2 s (a
# server restarting answers 500 or refuses for a few seconds): about 6 s, then an error.
CONNECT_TIMEOUT_S, REQUEST_TIMEOUT_S, MAX_RETRIES, MAX_BACKOFF_S = 5, 60, 6, 2


class Root:
    """A local path or an `s3://bucket/prefix` URL; `/` joins like a path.

    os.fspath() works for local roots only, so code that still treats a remote root as a
    path fails loudly instead of writing to a folder named "s3:".
    """

    __slots__ = ("url",)

    def __init__(self, value: str | os.PathLike[str] | Root):
        if isinstance(value, Root):
            url = value.url
        else:
            url = os.fspath(value)
            if url.startswith(SCHEME):
                bucket, _, key = url[len(SCHEME):].partition("/")
                if not bucket:
                    raise StorageError(f"{url}: no bucket in the URL (s3://bucket/prefix)")
                url = SCHEME + "/".join([bucket, *[p for p in key.split("/") if p]])
            elif "://" in url:
                raise StorageError(f"{url}: only local paths and s3:// URLs are supported")
        self.url = url

    @property
    def is_remote(self) -> bool:
        return self.url.startswith(SCHEME)

    @property
    def bucket(self) -> str:
        return self.url[len(SCHEME):].partition("/")[0]

    @property
    def key(self) -> str:
        """The object key (remote) or the absolute path without its leading / (local)."""
        if self.is_remote:
            return self.url[len(SCHEME):].partition("/")[2]
        return str(Path(self.url).absolute()).lstrip("/")

    @property
    def path(self) -> Path:
        if self.is_remote:
            raise StorageError(f"{self.url} is object storage, not a local path")
        return Path(self.url)

    @property
    def name(self) -> str:
        return PurePosixPath(self.url).name

    @property
    def parent(self) -> Root:
        if self.is_remote and "/" not in self.url[len(SCHEME):]:
            return self
        return Root(str(PurePosixPath(self.url).parent).replace("s3:/", SCHEME, 1)
                    if self.is_remote else Path(self.url).parent)

    def __truediv__(self, part: str) -> Root:
        if self.is_remote:
            return Root(f"{self.url}/{part}")
        return Root(Path(self.url) / part)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"Root({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Root) and self.url == other.url

    def __hash__(self) -> int:
        return hash(self.url)


def as_root(value: str | os.PathLike[str] | Root) -> Root:
    return value if isinstance(value, Root) else Root(value)


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class S3Config:
    """What the AWS_* variables say; `repr` hides the secrets."""

    endpoint: str | None
    key_id: str | None
    secret: str | None
    token: str | None
    region: str
    allow_http: bool

    def __repr__(self) -> str:
        return f"S3Config(endpoint={self.endpoint!r}, region={self.region!r})"

    @property
    def where(self) -> str:
        return self.endpoint or f"AWS S3 ({self.region})"


def s3_config(env: dict[str, str] | None = None) -> S3Config:
    env = os.environ if env is None else env
    return S3Config(endpoint=env.get(ENDPOINT) or None, key_id=env.get(KEY_ID) or None,
                    secret=env.get(SECRET) or None, token=env.get(TOKEN) or None,
                    region=env.get(REGION) or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
                    allow_http=(env.get(ALLOW_HTTP) or "").lower() in ("1", "true", "yes"))


def delta_options(root: Root | str) -> dict[str, str]:
    """deltalake `storage_options` for a root (empty for a local one)."""
    if not as_root(root).is_remote:
        return {}
    config = s3_config()
    options = {"AWS_REGION": config.region, "AWS_ALLOW_HTTP": str(config.allow_http).lower(),
               "timeout": f"{REQUEST_TIMEOUT_S}s", "connect_timeout": f"{CONNECT_TIMEOUT_S}s",
               "max_retries": str(MAX_RETRIES), "retry_timeout": f"{REQUEST_TIMEOUT_S}s",
               "backoff_config.init_backoff": "100ms",
               "backoff_config.max_backoff": f"{MAX_BACKOFF_S}s", "backoff_config.base": "2"}
    for key, value in ((ENDPOINT, config.endpoint), (KEY_ID, config.key_id),
                       (SECRET, config.secret), (TOKEN, config.token)):
        if value:
            options[key] = value
    return options


# ---------------------------------------------------------------- objects (obstore)


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


def describe(error: BaseException, what: Root | str) -> StorageError:
    """A StorageError that says what went wrong with `what`, in one line, no secrets."""
    import obstore.exceptions as oe

    root = as_root(what)
    where = s3_config().where if root.is_remote else "local disk"
    text = str(error)
    lowered = text.lower()
    if isinstance(error, StorageError):
        return error
    if isinstance(error, (oe.PermissionDeniedError, oe.UnauthenticatedError)) or any(
            s in lowered for s in ("accessdenied", "access denied", "privileges", "forbidden",
                                   "signaturedoesnotmatch", "invalidaccesskeyid", "403")):
        return StorageError(f"{root}: access denied by {where}: check AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY")
    if "nosuchbucket" in lowered.replace(" ", "") or "bucket does not exist" in lowered:
        return StorageError(f"{root}: bucket {root.bucket!r} does not exist at {where}")
    if isinstance(error, FileNotFoundError | oe.NotFoundError):
        return StorageError(f"{root}: not found")
    if any(s in lowered for s in ("connection refused", "error sending request", "connect",
                                  "timed out", "network", "dns", "unreachable")):
        return StorageError(f"{root}: cannot reach {where} (endpoint unreachable or not "
                            "answering): check AWS_ENDPOINT_URL and that the server runs")
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return StorageError(f"{root}: {where}: {first[:300]}")


@contextlib.contextmanager
def storage_errors(what: Root | str) -> Iterator[None]:
    """Turn a client's error about `what` into a StorageError (others pass through)."""
    import obstore.exceptions as oe
    import pyarrow as pa

    try:
        yield
    except (StorageError, ObjectExists):
        raise
    except (oe.BaseError, OSError, pa.ArrowException) as e:
        raise describe(e, what) from e


def read_bytes(obj: Root | str) -> bytes:
    import obstore

    store, key = object_store(obj)
    with storage_errors(obj):
        return bytes(obstore.get(store, key).bytes())


def read_parquet_bytes(data: bytes, schema: pa.Schema | None = None) -> pa.Table:
    """A Parquet file held in memory, as a table (schema metadata included).

    The bytes are copied into memory Arrow owns first: read through io.BytesIO or Python
    bytes, Arrow's reader threads hold buffers of Python objects, which take the GIL when
    released, and one released while the interpreter exits aborts the process ("terminate
    called without an active exception", apache/arrow#34314; it hit `tagging labels harvest`
    after its harvest had committed).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    sink.write(data)
    owned = sink.getvalue()
    metadata = pq.read_schema(pa.BufferReader(owned)).metadata
    table = pq.read_table(pa.BufferReader(owned), schema=schema)
    return table.replace_schema_metadata(metadata) if metadata else table


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


# ---------------------------------------------------------------- pyarrow filesystem


@functools.lru_cache(maxsize=4)
def _s3_filesystem(config: S3Config) -> pafs.S3FileSystem:
    import pyarrow.fs as pafs

    kwargs: dict[str, Any] = {"region": config.region, "connect_timeout": CONNECT_TIMEOUT_S,
                              "request_timeout": REQUEST_TIMEOUT_S, "allow_bucket_creation": False,
                              "allow_bucket_deletion": False,
                              "retry_strategy": pafs.AwsStandardS3RetryStrategy(MAX_RETRIES)}
    if config.endpoint:
        parts = urlsplit(config.endpoint)
        kwargs |= {"endpoint_override": parts.netloc or parts.path,
                   "scheme": parts.scheme or ("http" if config.allow_http else "https")}
    if config.key_id:
        kwargs |= {"access_key": config.key_id, "secret_key": config.secret or "",
                   "session_token": config.token}
    return pafs.S3FileSystem(**kwargs)


def arrow_fs(root: Root | str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path of `root` in it (native readers, no Python I/O)."""
    import pyarrow.fs as pafs

    root = as_root(root)
    if root.is_remote:
        return _s3_filesystem(s3_config()), f"{root.bucket}/{root.key}".rstrip("/")
    return pafs.LocalFileSystem(), str(root.path.absolute())


def open_input(obj: Root | str) -> pa.NativeFile:
    """A random-access file for pq.ParquetFile (ranged reads on S3)."""
    fs, path = arrow_fs(obj)
    with storage_errors(obj):
        return fs.open_input_file(path)


def check_reachable(root: Root | str) -> None:
    """StorageError unless the root's storage answers (bucket there, credentials good)."""
    import obstore

    root = as_root(root)
    if not root.is_remote:
        return
    store, key = object_store(root)
    with storage_errors(root):
        next(iter(obstore.list(store, key + "/", chunk_size=1)), None)
