"""The registry's event log: one create-only object per event, named by time + random suffix."""

from __future__ import annotations

import json
import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from model_registry.errors import CorruptMetadataError, RegistryError
from model_registry.store import AlreadyExists, Store

logger = logging.getLogger(__name__)

EVENTS = "events/"
LEGACY_EVENTS = "events.jsonl"  # a registry written before events were objects: read only


class EventLog:
    """Events under `events/` of a store; names sort by the writer's clock (then randomly)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def append(self, event: dict[str, Any]) -> None:
        """Write one event (a name already taken, however unlikely: another suffix)."""
        moment = datetime.now(UTC)
        data = (json.dumps({"ts": moment.isoformat(), **event}, indent=2) + "\n").encode()
        for _ in range(10):
            key = f"{EVENTS}{moment:%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(4)}.json"
            try:
                self.store.put(key, data, mode="create")
                return
            except AlreadyExists:
                continue
        raise RegistryError(f"{self.store.location(EVENTS)}: no free event name")

    def read(self) -> list[dict[str, Any]]:
        """All events, oldest first: the legacy events.jsonl, then the event objects."""
        events = self._legacy()
        keys = [o.key for o in self.store.list(EVENTS) if o.key.endswith(".json")]
        for key, blob in zip(keys, self.store.get_many(keys), strict=True):
            if blob is None:
                continue
            try:
                event = json.loads(blob[0])
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise CorruptMetadataError(
                    f"{self.store.location(key)}: not valid JSON ({exc})") from None
            if not isinstance(event, dict):
                raise CorruptMetadataError(f"{self.store.location(key)}: not a JSON object")
            events.append(event)
        return events

    def _legacy(self) -> list[dict[str, Any]]:
        """events.jsonl, one event per line; a torn last line (interrupted write) is skipped."""
        blob = self.store.get(LEGACY_EVENTS)
        if blob is None:
            return []
        where = self.store.location(LEGACY_EVENTS)
        *lines, tail = blob[0].decode("utf-8", errors="replace").split("\n")
        if tail:
            logger.warning("%s: ignoring an incomplete last line (interrupted write)", where)
        events = []
        for number, line in enumerate(lines, 1):
            try:
                event = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorruptMetadataError(f"{where}:{number}: not valid JSON ({exc})") from None
            if not isinstance(event, dict):
                raise CorruptMetadataError(f"{where}:{number}: not a JSON object")
            events.append(event)
        return events
