"""Model registry on a local folder or an S3 prefix: immutable versions, a champion alias,
an event log. Writers share no lock: every decision is one conditional write.

Layout under the root (a folder, or s3://bucket/prefix)::

    versions/v0001/               .claim, the artifact files, then metadata.json (the commit
                                  point): see model_registry.versions
    aliases/champion.json         {"version", "previous", "generation", …}, replaced only by
                                  a compare-and-swap on its ETag
    events/<time>-<random>.json   one create-only object per event (model_registry.events)
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model_registry.artifacts import cached_copy, default_cache_dir, verify_folder
from model_registry.errors import CorruptMetadataError, RegistryError, VersionNotFound
from model_registry.events import EventLog
from model_registry.gate import GateDecision, GatePolicy, evaluate_gate
from model_registry.metadata import (
    METADATA_FILE,
    MODEL_FILE,
    STORED_KEYS,
    VERSION_RE,
    artifact_files,
    caller_metadata,
    metadata_digest,
    metadata_problems,
)
from model_registry.store import (
    AlreadyExists,
    Conflict,
    LocalObjects,
    ObjectInfo,
    Store,
    open_store,
)
from model_registry.versions import (
    VERSIONS,
    abandon_dead_registers,
    claim_version,
    committed_ids,
    is_committed,
    version_folders,
)

logger = logging.getLogger(__name__)

CHAMPION = "champion"
ALIAS = f"aliases/{CHAMPION}.json"
MAX_SWAPS = 100  # alias compare-and-swap attempts per promote


@dataclass
class VersionInfo:
    """One registered version: its id, where it is stored, its metadata.json contents, and a
    local folder holding its verified files (None when they were not fetched)."""

    version: str
    location: str
    metadata: dict[str, Any]
    path: Path | None = None

    @property
    def model_path(self) -> Path:
        if self.path is None:
            raise RegistryError(f"{self.location}: its files were not fetched (get the "
                                "version with verify_checksums=True)")
        return self.path / MODEL_FILE


class Registry:
    """A model registry rooted at a folder or an s3:// URL (created on the first write)."""

    def __init__(self, root: str | Path, *, class_names: Sequence[str] = (),
                 lock_timeout: float = 120.0, abandon_after: float = 3600.0,
                 cache_dir: Path | None = None) -> None:
        """class_names: what the models predict, in label order; when given, every version's
        per-class recall must have one entry per class, and gate reasons name them.
        lock_timeout: local folders only, the longest wait for the alias's swap lock.
        abandon_after: seconds after which a register that never committed is cleaned up.
        cache_dir: where remote versions' files are downloaded (default ~/.cache)."""
        self.store = open_store(root, lock_timeout=lock_timeout)
        self.root = Path(root) if isinstance(self.store, LocalObjects) else self.store.url
        self.url = self.store.url
        self.event_log = EventLog(self.store)
        self.class_names = tuple(class_names)
        self.abandon_after = abandon_after
        self.cache_dir = cache_dir or default_cache_dir()

    # ----------------------------------------------------------------- reading

    def version_ids(self) -> list[str]:
        """Ids of committed versions, oldest first (no validation)."""
        return committed_ids(version_folders(self.store))

    def list_versions(self) -> list[VersionInfo]:
        """Every version, oldest first; metadata is validated, checksums are not (see get)."""
        folders = version_folders(self.store)
        return [self._load(v, folders[v], verify_checksums=False)
                for v in committed_ids(folders)]

    def resolve(self, ref: str) -> str:
        """Version id for `ref` (a version id or "champion")."""
        return self._find(ref)[0]

    def get(self, ref: str, *, verify_checksums: bool = True) -> VersionInfo:
        """The version `ref` names, after checking its metadata (and artifact checksums: for
        a remote registry this fetches its files into the local cache)."""
        version, objects = self._find(ref)
        return self._load(version, objects, verify_checksums=verify_checksums)

    def champion(self) -> str | None:
        """Version id the champion alias points at, or None before the first promotion."""
        state, _ = self._read_alias()
        return None if state is None else state["version"]

    def events(self) -> list[dict[str, Any]]:
        """All events, oldest first (a legacy events.jsonl, then one object per event)."""
        return self.event_log.read()

    def check_gate(self, candidate: str, policy: GatePolicy,
                   holdout: dict[str, Any] | None = None) -> GateDecision:
        """Would `candidate` pass the gate against the current champion? No side effects.

        holdout: paired scores of both on held-out data the caller measured (see
        evaluate_gate)."""
        info = self._gateable(candidate)
        return self._gate(info, self.champion(), policy, holdout)

    def load_keras_model(self, ref: str) -> Any:
        """Load the version's model with Keras safe mode (no arbitrary code from the file)."""
        info = self.get(ref)
        import keras

        return keras.saving.load_model(info.model_path, safe_mode=True)

    # ----------------------------------------------------------------- writing

    def register(self, artifact_dir: str | Path, metadata: dict[str, Any], *,
                 created_by: str) -> str:
        """Copy `artifact_dir` into a new immutable version; return its id."""
        artifact_dir = Path(artifact_dir)
        record = caller_metadata(metadata, artifact_dir, created_by, len(self.class_names))
        contents = {name: (artifact_dir / name).read_bytes()
                    for name in artifact_files(artifact_dir)}
        folders = version_folders(self.store)
        version, claimed_at = claim_version(self.store, folders, created_by)
        abandon_dead_registers(self.store, folders, claimed_at, self.abandon_after,
                               actor=created_by, events=self.event_log)
        parent = self.champion()
        prefix = f"{VERSIONS}{version}/"
        for name, data in contents.items():
            self.store.put(prefix + name, data)
        record |= {
            "version": version,
            "created_at": _now(),
            "created_by": created_by,
            "parent_champion": parent,
            "sha256": {name: _sha256(data) for name, data in contents.items()},
        }
        record["sha256"][METADATA_FILE] = metadata_digest(record)
        try:
            self.store.put(prefix + METADATA_FILE, _json_bytes(record), mode="create")
        except AlreadyExists:
            raise RegistryError(
                f"{self.store.location(prefix + METADATA_FILE)}: this register took longer "
                f"than {self.abandon_after:g} s and another registrant abandoned it; nothing "
                "was registered: register again") from None
        self.store.seal(prefix)
        self.event_log.append({"event": "register", "actor": created_by, "version": version,
                               "parent_champion": parent, "reasons": []})
        logger.info("registered %s from %s (by %s)", version, artifact_dir, created_by)
        return version

    def promote(self, candidate: str, *, policy: GatePolicy, actor: str,
                force: bool = False, holdout: dict[str, Any] | None = None) -> GateDecision:
        """Run the gate; on a pass (or with force) make `candidate` the champion.

        The alias moves by a compare-and-swap: when another writer moved it since it was
        read, that is logged as a "conflict" event and the gate runs again against the
        new champion (holdout scores measured against the old one then fail it)."""
        info = self._gateable(candidate)
        for _ in range(MAX_SWAPS):
            state, etag = self._read_alias()
            decision = self._gate(info, None if state is None else state["version"], policy,
                                  holdout)
            moves = decision.candidate != decision.champion and (decision.passed or force)
            decision.forced = moves and not decision.passed
            event = {
                "event": "promoted" if decision.passed or moves else "refused",
                "actor": actor,
                "version": decision.candidate,
                "previous": decision.champion,
                "forced": decision.forced,
                "reasons": decision.reasons,
                "candidate_accuracy": decision.candidate_accuracy,
                "champion_accuracy": decision.champion_accuracy,
                **({"holdout": holdout} if holdout is not None else {}),
            }
            if moves:
                try:
                    event["generation"] = self._swap_alias(state, etag, decision.candidate,
                                                           actor)
                except (AlreadyExists, Conflict):
                    self._log_conflict(actor, decision.candidate, decision.champion,
                                       "deciding again")
                    continue
            self.event_log.append(event)
            _log_decision(decision, moves, actor)
            return decision
        raise RegistryError(f"{self.store.location(ALIAS)}: the champion kept moving; "
                            f"{candidate} was not promoted after {MAX_SWAPS} attempts")

    def rollback(self, *, actor: str) -> str:
        """Point the champion back at the previous one; return that version id.

        Refused (and logged) when another writer moved the champion meanwhile."""
        state, etag = self._read_alias()
        if state is None or not state["previous"]:
            current = None if state is None else state["version"]
            raise RegistryError(
                f"{self.store.location(ALIAS)}: nothing to roll back to "
                f"(champion is {current}, no earlier champion)")
        *older, target = state["previous"]
        self.get(target)
        try:
            generation = self._write_alias(target, older, state, etag, actor)
        except Conflict:
            now = self._log_conflict(actor, target, state["version"], "nothing rolled back")
            raise RegistryError(
                f"{self.store.location(ALIAS)}: the champion moved from {state['version']} to "
                f"{now} during the rollback; nothing was rolled back (see the events, then "
                "run it again)") from None
        self.event_log.append({"event": "rollback", "actor": actor, "version": target,
                               "previous": state["version"], "generation": generation,
                               "reasons": [f"rolled back from {state['version']} to {target}"]})
        logger.info("champion %s -> %s by %s (rollback)", state["version"], target, actor)
        return target

    # ----------------------------------------------------------------- versions

    def _find(self, ref: str) -> tuple[str, dict[str, ObjectInfo]]:
        """(version id, its objects) for a committed version or "champion"."""
        if ref == CHAMPION:
            champion = self.champion()
            if champion is None:
                raise VersionNotFound(f"{self.url}: there is no champion yet")
            ref = champion
        if VERSION_RE.fullmatch(str(ref)):
            objects = version_folders(self.store, ref).get(ref, {})
            if is_committed(objects):
                return ref, objects
        raise VersionNotFound(f"{self.url}: no version {ref!r}")

    def _load(self, version: str, objects: dict[str, ObjectInfo], *,
              verify_checksums: bool) -> VersionInfo:
        prefix = f"{VERSIONS}{version}/"
        location = self.store.location(prefix.rstrip("/"))
        meta = _read_json(self.store, prefix + METADATA_FILE)
        problems = metadata_problems(meta, STORED_KEYS, len(self.class_names))
        if not problems and meta["version"] != version:
            problems.append(f"'version' is {meta['version']!r} but the directory is {version!r}")
        if problems:
            raise CorruptMetadataError(f"{location}/{METADATA_FILE}: {'; '.join(problems)}")
        path = None
        if isinstance(self.store, LocalObjects):
            path = self.store.root / prefix
            if verify_checksums:
                verify_folder(path, location, meta)
        elif verify_checksums:
            path = cached_copy(self.store, prefix, meta, list(objects.values()), self.cache_dir)
        return VersionInfo(version, location, meta, path)

    def _gateable(self, ref: str) -> VersionInfo:
        info = self.get(ref)
        if METADATA_FILE not in info.metadata["sha256"]:
            raise CorruptMetadataError(
                f"{info.location}/{METADATA_FILE}: has no checksum of its own content "
                "(registered before metadata was checksummed, or the entry was removed): its "
                "metrics cannot be trusted, so the gate refuses it; register it again")
        return info

    def _gate(self, info: VersionInfo, champion: str | None, policy: GatePolicy,
              holdout: dict[str, Any] | None) -> GateDecision:
        champion_meta = None if champion is None else self.get(champion).metadata
        return evaluate_gate(info.version, info.metadata, champion, champion_meta, policy,
                             class_names=self.class_names, holdout=holdout)

    # ----------------------------------------------------------------- alias, events

    def _read_alias(self) -> tuple[dict[str, Any] | None, str | None]:
        """(alias state, its ETag), or (None, None) before the first promotion."""
        where = self.store.location(ALIAS)
        blob = self.store.get(ALIAS)
        if blob is None:
            return None, None
        try:
            state = json.loads(blob[0])
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptMetadataError(
                f"{where}: cannot be read as JSON ({exc}); fix or remove it") from None
        valid = (isinstance(state, dict) and isinstance(state.get("previous"), list)
                 and all(isinstance(v, str) and VERSION_RE.fullmatch(v)
                         for v in [state.get("version"), *state["previous"]]))
        if not valid:
            raise CorruptMetadataError(
                f"{where}: expected {{'version': 'vNNNN', 'previous': [...]}}; fix or remove it")
        try:
            self._find(state["version"])
        except VersionNotFound:
            raise CorruptMetadataError(
                f"{where}: points to {state['version']!r}, which does not exist in "
                f"{self.store.location(VERSIONS.rstrip('/'))}; fix or remove it") from None
        return state, blob[1]

    def _swap_alias(self, state: dict[str, Any] | None, etag: str | None, version: str,
                    actor: str) -> int:
        previous = [] if state is None else [*state["previous"], state["version"]]
        return self._write_alias(version, previous, state, etag, actor)

    def _write_alias(self, version: str, previous: list[str], state: dict[str, Any] | None,
                     etag: str | None, actor: str) -> int:
        """Replace the alias read as (state, etag); AlreadyExists/Conflict when it moved.
        Returns the new generation (one more per move: the content, hence the ETag, never
        repeats)."""
        generation = (0 if state is None else int(state.get("generation", 0))) + 1
        self.store.put(ALIAS, _json_bytes({
            "alias": CHAMPION, "version": version, "previous": previous,
            "generation": generation, "updated_at": _now(), "updated_by": actor,
        }), mode="create" if etag is None else etag)
        return generation

    def _log_conflict(self, actor: str, version: str, expected: str | None,
                      outcome: str) -> str | None:
        now = self.champion()
        reason = f"the champion moved from {expected} to {now} meanwhile: {outcome}"
        self.event_log.append({"event": "conflict", "actor": actor, "version": version,
                               "previous": expected, "champion": now, "reasons": [reason]})
        logger.warning("%s: champion moved from %s to %s while %s acted on %s: %s",
                       self.url, expected, now, actor, version, outcome)
        return now


def _read_json(store: Store, key: str) -> Any:
    where = store.location(key)
    blob = store.get(key)
    if blob is None:
        raise CorruptMetadataError(f"{where}: missing")
    try:
        return json.loads(blob[0])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptMetadataError(f"{where}: cannot be read as JSON ({exc})") from None


def _log_decision(decision: GateDecision, moved: bool, actor: str) -> None:
    if moved:
        logger.info("champion %s -> %s by %s%s: %s", decision.champion, decision.candidate,
                    actor, " (FORCED past the gate)" if decision.forced else "",
                    "; ".join(decision.reasons))
    elif decision.passed:
        logger.info("%s", decision.reasons[0])
    else:
        logger.warning("gate refused %s (champion stays %s): %s", decision.candidate,
                       decision.champion, "; ".join(decision.reasons))


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat()
