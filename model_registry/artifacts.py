"""A version's artifact files as a local folder, checked against their registered checksums.

A local registry's version folder is used in place. A remote version is downloaded once into
a cache folder named after its objects' ETags and sizes (so an object replaced on the server
is downloaded again, and then fails the check) and re-hashed on every use, like a local one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from model_registry.errors import CorruptMetadataError
from model_registry.files import TMP_PREFIX
from model_registry.metadata import (
    METADATA_FILE,
    REGISTRY_FILES,
    artifact_files,
    checksum_problems,
    hash_files,
)
from model_registry.store import ObjectInfo, Store


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/model-registry, else ~/.cache/model-registry."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "model-registry"


def verify_folder(folder: Path, location: str, meta: dict[str, Any]) -> None:
    """Every artifact file under `folder`, and metadata.json's own content, as registered."""
    problems = checksum_problems(location, meta, hash_files(folder, artifact_files(folder)))
    if problems:
        raise CorruptMetadataError(f"{location}/{METADATA_FILE}: artifacts do not match their "
                                   "checksums: " + "; ".join(problems))


def cached_copy(store: Store, prefix: str, meta: dict[str, Any], objects: list[ObjectInfo],
                cache_dir: Path) -> Path:
    """A verified local copy of the remote version under `prefix` (objects: its listing)."""
    location = store.location(prefix.rstrip("/"))
    remote = {o.key.removeprefix(prefix): o for o in objects}
    remote = {name: o for name, o in remote.items() if name not in REGISTRY_FILES}
    state = json.dumps([meta["sha256"], sorted((n, o.etag, o.size) for n, o in remote.items())])
    folder = (cache_dir / hashlib.sha256(store.url.encode()).hexdigest()[:16]
              / f"{meta['version']}-{hashlib.sha256(state.encode()).hexdigest()[:16]}")
    if folder.is_dir():
        if not checksum_problems(location, meta, hash_files(folder, artifact_files(folder))):
            return folder
        shutil.rmtree(folder)  # the cached copy was changed: fetch it again
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = folder.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}")
    try:
        actual = {}
        for name in remote:
            target = temp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as handle:
                try:
                    actual[name] = store.download(prefix + name, handle)
                except FileNotFoundError:  # deleted since the listing: reported as missing
                    continue
        problems = checksum_problems(location, meta, actual)
        if problems:
            raise CorruptMetadataError(f"{location}/{METADATA_FILE}: artifacts do not match "
                                       "their checksums: " + "; ".join(problems))
        try:
            os.rename(temp, folder)
        except OSError:  # another process cached it meanwhile (same objects, same content)
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return folder
