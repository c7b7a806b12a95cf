"""A root: a local path or an `s3://bucket/prefix` URL, joined like a path."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from tagging.errors import StorageError

SCHEME = "s3://"


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
