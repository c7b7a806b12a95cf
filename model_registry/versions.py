"""Version ids and their folders: claiming an id, telling committed versions from the
rest, abandoning registers that died before their commit point.

A version folder holds `.claim` (the id, taken create-only, kept for good so an id is never
handed out twice), the artifact files, and `metadata.json` (written last, create-only: the
commit point). Without metadata.json a version is invisible. A register that never
committed is abandoned by a later one once its claim is `abandon_after` seconds old (on the
store's clock): `.abandoned`, then a create-only tombstone metadata.json (a registrant that
was merely slow then fails its own commit and says so), then its files are deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta

from model_registry.errors import RegistryError
from model_registry.events import EventLog
from model_registry.metadata import (
    ABANDONED_FILE,
    CLAIM_FILE,
    METADATA_FILE,
    REGISTRY_FILES,
    VERSION_RE,
)
from model_registry.store import AlreadyExists, ObjectInfo, Store

logger = logging.getLogger(__name__)

VERSIONS = "versions/"
MAX_CLAIMS = 100
Folders = dict[str, dict[str, ObjectInfo]]  # version id -> name in its folder -> object


def version_folders(store: Store, version: str | None = None) -> Folders:
    """Every version folder's objects (or one version's), committed or not."""
    grouped: Folders = {}
    for info in store.list(VERSIONS if version is None else f"{VERSIONS}{version}/"):
        vid, _, name = info.key.removeprefix(VERSIONS).partition("/")
        if VERSION_RE.fullmatch(vid) and name:
            grouped.setdefault(vid, {})[name] = info
    return grouped


def is_committed(objects: dict[str, ObjectInfo]) -> bool:
    """metadata.json is there (the commit point) and the version was not abandoned."""
    return METADATA_FILE in objects and ABANDONED_FILE not in objects


def committed_ids(folders: Folders) -> list[str]:
    """Ids of the committed versions, oldest first."""
    return sorted((v for v, objects in folders.items() if is_committed(objects)),
                  key=lambda v: int(v[1:]))


def claim_version(store: Store, folders: Folders, created_by: str) -> tuple[str, datetime]:
    """Take the next free id with a create-only write; (id, claim time on the store's clock).
    An id another registrant took meanwhile: the next one."""
    number = max((int(v[1:]) for v in folders), default=0) + 1
    claim = json.dumps({"created_by": created_by, "claimed_at": datetime.now(UTC).isoformat(),
                        "token": uuid.uuid4().hex}).encode()
    for _ in range(MAX_CLAIMS):
        version = f"v{number:04d}"
        key = f"{VERSIONS}{version}/{CLAIM_FILE}"
        try:
            store.put(key, claim, mode="create")
        except AlreadyExists:
            number += 1
            logger.info("version id %s was taken by another registrant: trying v%04d",
                        version, number)
            continue
        info = store.head(key)
        return version, info.modified if info else datetime.now(UTC)
    raise RegistryError(f"{store.url}: no free version id after {MAX_CLAIMS} attempts")


def abandon_dead_registers(store: Store, folders: Folders, now: datetime,
                           abandon_after: float, *, actor: str, events: EventLog) -> None:
    """Abandon every uncommitted version whose claim is older than `abandon_after` s."""
    for version, objects in folders.items():
        leftovers = [name for name in objects if name not in REGISTRY_FILES]
        done = ABANDONED_FILE in objects and METADATA_FILE in objects and not leftovers
        started = (objects[CLAIM_FILE] if CLAIM_FILE in objects
                   else min(objects.values(), key=lambda o: o.modified)).modified
        if is_committed(objects) or done or now - started < timedelta(seconds=abandon_after):
            continue
        prefix = f"{VERSIONS}{version}/"
        reason = f"no {METADATA_FILE} {abandon_after:g} s after its claim"
        mark = json.dumps({"abandoned_by": actor, "abandoned_at": datetime.now(UTC).isoformat(),
                           "reason": reason}).encode()
        if ABANDONED_FILE not in objects:
            with contextlib.suppress(AlreadyExists):  # another registrant abandons it too
                store.put(prefix + ABANDONED_FILE, mark, mode="create")
        try:
            store.put(prefix + METADATA_FILE, b'{"abandoned": ' + mark + b"}", mode="create")
        except AlreadyExists:
            blob = store.get(prefix + METADATA_FILE)
            if blob is not None and not _is_tombstone(blob[0]):
                store.delete(prefix + ABANDONED_FILE)  # it committed after all: keep it
                continue
        for name in leftovers:
            store.delete(prefix + name)
        logger.warning("abandoned %s: its register never committed; removed %d files",
                       store.location(prefix.rstrip("/")), len(leftovers))
        events.append({"event": "abandoned", "actor": actor, "version": version,
                       "reasons": [reason]})


def _is_tombstone(data: bytes) -> bool:
    """A metadata.json written by abandon_dead_registers (only that key), not a commit."""
    try:
        return list(json.loads(data)) == ["abandoned"]
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError):
        return False
