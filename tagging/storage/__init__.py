"""The one package that decides local vs remote: a root is a local path or s3://bucket/prefix.

It gives, for any root: objects (read, create-only or replacing writes, list, exists,
delete) through obstore; an atomic streaming writer (a Parquet file appears whole or not at
all); a pyarrow filesystem and path for streaming Parquet reads; `delta_options` for
deltalake. Every failure of the storage itself (endpoint unreachable, credentials refused,
bucket missing) is a StorageError whose message says which, without a traceback's worth of
client internals. Callers use this package's names (`from tagging import storage`):

roots    Root and as_root: a path or a URL, joined like a path
config   the AWS_* variables (the only configuration) and deltalake's storage options
errors   a client's failure as one StorageError line
objects  objects through obstore, and the atomic writer
arrow    pyarrow filesystems, random-access files, Parquet bytes
"""

from tagging.storage.arrow import arrow_fs, open_input, read_parquet_bytes
from tagging.storage.config import delta_options, s3_config
from tagging.storage.errors import describe, storage_errors
from tagging.storage.objects import (
    ObjectInfo,
    atomic_writer,
    check_reachable,
    delete,
    delete_prefix,
    exists,
    identity,
    list_objects,
    read_bytes,
    sha256,
    upload_file,
    write_bytes,
)
from tagging.storage.roots import Root, as_root

__all__ = [
    "ObjectInfo", "Root", "arrow_fs", "as_root", "atomic_writer", "check_reachable", "delete",
    "delete_prefix", "delta_options", "describe", "exists", "identity", "list_objects",
    "open_input", "read_bytes", "read_parquet_bytes", "s3_config", "sha256", "storage_errors",
    "upload_file", "write_bytes",
]
