"""A storage client's failure as one StorageError line that says which: endpoint
unreachable, credentials refused, bucket missing (no secrets, no client internals)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tagging.errors import ObjectExists, StorageError
from tagging.storage.config import s3_config
from tagging.storage.roots import Root, as_root


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
