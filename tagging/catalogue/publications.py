"""The publication record: what search saw, day by day.

Every commit of a day to the tagged table (the first publication, each re-publication, a
restore) is recorded as its own create-only object `<catalogue>/quality/publications/
<table version>.json` with the day, the model version, when, the counts and the live
quality of its manifest. It sits beside the table, so it outlives the table log's clean-up.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from tagging import storage
from tagging.errors import StorageError
from tagging.storage import Root, as_root

log = logging.getLogger(__name__)

PUBLICATIONS = "quality/publications"  # under the catalogue root: one object each


def record_publication(catalogue_root: Root | str, manifest: dict[str, Any],
                       table_version: int) -> dict[str, Any]:
    """Record one commit of a day. A failure to record is logged, not raised: the
    publication itself has happened."""
    record = {"partition": manifest.get("partition"),
              "model_version": manifest.get("model_version"),
              "published_at": manifest.get("restored_at") or manifest.get("published_at"),
              "tagged_at": manifest.get("tagged_at"),
              "table_version": table_version, "counts": manifest.get("counts"),
              "quality": manifest.get("quality"),
              "restored_from": manifest.get("restored_from")}
    target = as_root(catalogue_root) / PUBLICATIONS / f"{table_version:010d}.json"
    try:
        storage.write_bytes(target, json.dumps(record, sort_keys=True).encode(),
                            create_only=True)
    except StorageError as e:
        log.warning("publication of %s (table version %d) not recorded: %s",
                    record["partition"], table_version, e)
    return record


def publication_history(catalogue_root: Root | str) -> list[dict[str, Any]]:
    """Every publication in commit order, each with `publication` (1: the day's first)."""
    prefix = as_root(catalogue_root) / PUBLICATIONS
    records = sorted((json.loads(storage.read_bytes(obj.root))
                      for obj in storage.list_objects(prefix) if obj.root.name.endswith(".json")),
                     key=lambda r: r["table_version"])
    seen: dict[str, int] = {}
    for record in records:
        seen[record["partition"]] = seen.get(record["partition"], 0) + 1
        record["publication"] = seen[record["partition"]]
    return records
