"""pyarrow over any root: a filesystem and path for native streaming reads, a random-access
file, and a Parquet file held in memory."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tagging.storage.config import (
    CONNECT_TIMEOUT_S,
    MAX_RETRIES,
    REQUEST_TIMEOUT_S,
    S3Config,
    s3_config,
)
from tagging.storage.errors import storage_errors
from tagging.storage.roots import Root, as_root

if TYPE_CHECKING:  # pyarrow is imported where used: the DAG file imports settings -> Root
    import pyarrow as pa
    import pyarrow.fs as pafs


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
