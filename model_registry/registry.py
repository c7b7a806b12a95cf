"""File-based model registry: immutable versions, a champion alias, an append-only event log.

Layout under the root::

    .lock                      fcntl.flock'ed by every writer
    versions/v0001/            model.keras, weights.npz, report/, metadata.json (read-only)
    versions/.tmp-*/           a register in progress, or one that crashed (ignored, cleaned)
    aliases/champion.json      {"version", "previous": [older champions], "updated_at", ...}
    events.jsonl               one JSON object per line

Readers take no lock: versions appear by an atomic rename and the alias is replaced
atomically, so a reader sees the state before or after a write, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model_registry.errors import CorruptMetadataError, RegistryError, VersionNotFound
from model_registry.files import (
    TMP_PREFIX,
    atomic_write_json,
    flocked,
    fsync_path,
    sha256_file,
    to_json,
    write_json_exclusive,
)
from model_registry.gate import GateDecision, GatePolicy, evaluate_gate

logger = logging.getLogger(__name__)

CHAMPION = "champion"
MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
_VERSION_RE = re.compile(r"v\d{4,}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")

_CALLER_KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "metrics": (dict, "an object"),
    "eval_data_fingerprint": (str, "a string"),
    "training_data_fingerprint": (str, "a string"),
    "hyperparameters": (dict, "an object"),
    "library_versions": (dict, "an object"),
}
_REGISTRY_KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "version": (str, "a string"),
    "created_at": (str, "a string"),
    "created_by": (str, "a string"),
    "parent_champion": ((str, type(None)), "a string or null"),
    "sha256": (dict, "an object"),
}


@dataclass
class VersionInfo:
    """One registered version: its id, directory and metadata.json contents."""

    version: str
    path: Path
    metadata: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE


class Registry:
    """A model registry rooted at a directory (created on the first write)."""

    def __init__(self, root: str | Path, *, class_names: Sequence[str] = (),
                 lock_timeout: float = 120.0) -> None:
        """class_names: what the models predict, in label order; when given, every version's
        per-class recall must have one entry per class, and gate reasons name them."""
        self.root = Path(root)
        self.class_names = tuple(class_names)
        self.lock_timeout = lock_timeout
        self.versions_dir = self.root / "versions"
        self.alias_path = self.root / "aliases" / f"{CHAMPION}.json"
        self.events_path = self.root / "events.jsonl"

    # ----------------------------------------------------------------- reading

    def version_ids(self) -> list[str]:
        """Ids of committed versions, oldest first (no validation)."""
        if not self.versions_dir.is_dir():
            return []
        ids = [p.name for p in self.versions_dir.iterdir() if _VERSION_RE.fullmatch(p.name)]
        return sorted(ids, key=lambda v: int(v[1:]))

    def list_versions(self) -> list[VersionInfo]:
        """Every version, oldest first; metadata is validated, checksums are not (see get)."""
        return [self._load(v, verify_checksums=False) for v in self.version_ids()]

    def resolve(self, ref: str) -> str:
        """Version id for `ref` (a version id or "champion")."""
        if ref == CHAMPION:
            champion = self.champion()
            if champion is None:
                raise VersionNotFound(f"{self.root}: there is no champion yet")
            return champion
        if not _VERSION_RE.fullmatch(str(ref)) or not (self.versions_dir / ref).is_dir():
            raise VersionNotFound(f"{self.root}: no version {ref!r}")
        return ref

    def get(self, ref: str, *, verify_checksums: bool = True) -> VersionInfo:
        """The version `ref` names, after checking its metadata (and artifact checksums)."""
        return self._load(self.resolve(ref), verify_checksums=verify_checksums)

    def champion(self) -> str | None:
        """Version id the champion alias points at, or None before the first promotion."""
        state = self._read_alias()
        return None if state is None else state["version"]

    def events(self) -> list[dict[str, Any]]:
        """All events, oldest first. An unterminated last line (interrupted write) is skipped."""
        try:
            text = self.events_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        *lines, tail = text.split("\n")
        if tail:
            logger.warning("%s: ignoring an incomplete last line (interrupted write)",
                           self.events_path)
        events = []
        for number, line in enumerate(lines, 1):
            try:
                event = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorruptMetadataError(
                    f"{self.events_path}:{number}: not valid JSON ({exc})") from None
            if not isinstance(event, dict):
                raise CorruptMetadataError(f"{self.events_path}:{number}: not a JSON object")
            events.append(event)
        return events

    def check_gate(self, candidate: str, policy: GatePolicy,
                   holdout: dict[str, Any] | None = None) -> GateDecision:
        """Would `candidate` pass the gate against the current champion? No side effects.

        holdout: paired scores of both on held-out data the caller measured (see
        evaluate_gate)."""
        info = self.get(candidate)
        if METADATA_FILE not in info.metadata["sha256"]:
            raise CorruptMetadataError(
                f"{info.path / METADATA_FILE}: has no checksum of its own content (registered "
                "before metadata was checksummed, or the entry was removed): its metrics "
                "cannot be trusted, so the gate refuses it; register it again")
        champion = self.champion()
        champion_meta = None if champion is None else self.get(champion).metadata
        return evaluate_gate(info.version, info.metadata, champion, champion_meta, policy,
                             class_names=self.class_names, holdout=holdout)

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
        record = _caller_metadata(metadata, artifact_dir, created_by, len(self.class_names))
        with self._locked():
            self._remove_stray_temps()
            staging = self.versions_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
            shutil.copytree(artifact_dir, staging)
            version = self._next_version_id()
            parent = self.champion()
            record |= {
                "version": version,
                "created_at": _now(),
                "created_by": created_by,
                "parent_champion": parent,
                "sha256": _hash_tree(staging),
            }
            record["sha256"][METADATA_FILE] = _metadata_digest(record)
            write_json_exclusive(staging / METADATA_FILE, record)
            _seal(staging)
            os.rename(staging, self.versions_dir / version)
            fsync_path(self.versions_dir)
            self._append_event({"event": "register", "actor": created_by, "version": version,
                                "parent_champion": parent, "reasons": []})
        logger.info("registered %s from %s (by %s)", version, artifact_dir, created_by)
        return version

    def promote(self, candidate: str, *, policy: GatePolicy, actor: str,
                force: bool = False, holdout: dict[str, Any] | None = None) -> GateDecision:
        """Run the gate; on a pass (or with force) make `candidate` the champion."""
        with self._locked():
            decision = self.check_gate(candidate, policy, holdout)
            moves = decision.candidate != decision.champion and (decision.passed or force)
            decision.forced = moves and not decision.passed
            if moves:
                state = self._read_alias()
                previous = [] if state is None else [*state["previous"], state["version"]]
                self._write_alias(decision.candidate, previous, actor)
            self._append_event({
                "event": "promoted" if decision.passed or moves else "refused",
                "actor": actor,
                "version": decision.candidate,
                "previous": decision.champion,
                "forced": decision.forced,
                "reasons": decision.reasons,
                "candidate_accuracy": decision.candidate_accuracy,
                "champion_accuracy": decision.champion_accuracy,
                **({"holdout": holdout} if holdout is not None else {}),
            })
        if moves:
            logger.info("champion %s -> %s by %s%s: %s", decision.champion, decision.candidate,
                        actor, " (FORCED past the gate)" if decision.forced else "",
                        "; ".join(decision.reasons))
        elif decision.passed:
            logger.info("%s", decision.reasons[0])
        else:
            logger.warning("gate refused %s (champion stays %s): %s", decision.candidate,
                           decision.champion, "; ".join(decision.reasons))
        return decision

    def rollback(self, *, actor: str) -> str:
        """Point the champion back at the previous one; return that version id."""
        with self._locked():
            state = self._read_alias()
            if state is None or not state["previous"]:
                current = None if state is None else state["version"]
                raise RegistryError(
                    f"{self.alias_path}: nothing to roll back to "
                    f"(champion is {current}, no earlier champion)")
            *older, target = state["previous"]
            self.get(target)
            self._write_alias(target, older, actor)
            self._append_event({"event": "rollback", "actor": actor, "version": target,
                                "previous": state["version"],
                                "reasons": [f"rolled back from {state['version']} to {target}"]})
        logger.info("champion %s -> %s by %s (rollback)", state["version"], target, actor)
        return target

    # ----------------------------------------------------------------- internals

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the registry's exclusive write lock (released by the kernel if we die)."""
        lock_path = self.root / ".lock"
        with flocked(lock_path, timeout=self.lock_timeout, on_timeout=lambda: RegistryError(
                f"{lock_path}: another process has held the registry lock for more than "
                f"{self.lock_timeout:g} s")):
            yield

    def _load(self, version: str, *, verify_checksums: bool) -> VersionInfo:
        path = self.versions_dir / version
        meta_path = path / METADATA_FILE
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CorruptMetadataError(f"{meta_path}: missing") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptMetadataError(f"{meta_path}: cannot be read as JSON ({exc})") from None
        problems = _metadata_problems(meta, {**_CALLER_KEYS, **_REGISTRY_KEYS},
                                      len(self.class_names))
        if not problems and meta["version"] != version:
            problems.append(f"'version' is {meta['version']!r} but the directory is {version!r}")
        if problems:
            raise CorruptMetadataError(f"{meta_path}: {'; '.join(problems)}")
        if verify_checksums:
            _verify_checksums(path, meta)
        return VersionInfo(version, path, meta)

    def _read_alias(self) -> dict[str, Any] | None:
        try:
            state = json.loads(self.alias_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptMetadataError(
                f"{self.alias_path}: cannot be read as JSON ({exc}); fix or remove it") from None
        valid = (isinstance(state, dict) and isinstance(state.get("previous"), list)
                 and all(isinstance(v, str) and _VERSION_RE.fullmatch(v)
                         for v in [state.get("version"), *state["previous"]]))
        if not valid:
            raise CorruptMetadataError(
                f"{self.alias_path}: expected {{'version': 'vNNNN', 'previous': [...]}}; "
                "fix or remove it")
        if not (self.versions_dir / state["version"]).is_dir():
            raise CorruptMetadataError(
                f"{self.alias_path}: points to {state['version']!r}, which does not exist in "
                f"{self.versions_dir}; fix or remove it")
        return state

    def _write_alias(self, version: str, previous: list[str], actor: str) -> None:
        for stray in self.alias_path.parent.glob(f"{TMP_PREFIX}*"):
            stray.unlink()
        atomic_write_json(self.alias_path, {
            "alias": CHAMPION, "version": version, "previous": previous,
            "updated_at": _now(), "updated_by": actor,
        })

    def _append_event(self, event: dict[str, Any]) -> None:
        """Append one line (under the lock), first cutting off a torn last line if any."""
        data = (json.dumps({"ts": _now(), **event}) + "\n").encode()
        fd = os.open(self.events_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                keep = os.pread(fd, size, 0).rfind(b"\n") + 1
                logger.warning("%s: dropping an incomplete last line (interrupted write)",
                               self.events_path)
                os.ftruncate(fd, keep)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _next_version_id(self) -> str:
        ids = self.version_ids()
        return f"v{int(ids[-1][1:]) + 1 if ids else 1:04d}"

    def _remove_stray_temps(self) -> None:
        """Delete staging dirs left by a register that died (we hold the lock: none is live)."""
        if not self.versions_dir.is_dir():
            return
        for stray in self.versions_dir.glob(f"{TMP_PREFIX}*"):
            logger.warning("removing %s left by an interrupted register", stray)
            for path in [stray, *stray.rglob("*")]:
                if path.is_dir():
                    path.chmod(0o755)
            shutil.rmtree(stray)


def _caller_metadata(metadata: dict[str, Any], artifact_dir: Path, created_by: str,
                     classes: int) -> dict[str, Any]:
    """Validated JSON copy of the caller's metadata (numpy values become plain numbers)."""
    if not (artifact_dir / MODEL_FILE).is_file():
        raise RegistryError(f"{artifact_dir}: no {MODEL_FILE} to register")
    if (artifact_dir / METADATA_FILE).exists():
        raise RegistryError(f"{artifact_dir}: contains {METADATA_FILE}, which the registry "
                            "writes itself; pass the metadata as the dict argument")
    if not isinstance(created_by, str) or not created_by:
        raise RegistryError("created_by must be a non-empty string")
    try:
        record = json.loads(json.dumps(metadata, default=to_json, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"metadata for {artifact_dir} is not valid JSON: {exc}") from None
    problems = _metadata_problems(record, _CALLER_KEYS, classes)
    reserved = sorted(set(_REGISTRY_KEYS) & set(record)) if isinstance(record, dict) else []
    if reserved:
        problems.append(f"keys {reserved} are set by the registry, not the caller")
    if problems:
        raise RegistryError(f"metadata for {artifact_dir}: {'; '.join(problems)}")
    return record


def _metadata_problems(meta: Any, schema: dict[str, tuple[Any, str]],
                       classes: int) -> list[str]:
    """Human-readable list of what is wrong with `meta` (empty when it is fine).

    classes: how many per-class recalls a version must have (0: any number)."""
    if not isinstance(meta, dict):
        return [f"expected a JSON object, got {type(meta).__name__}"]
    problems = []
    for key, (kind, description) in schema.items():
        if key not in meta:
            problems.append(f"missing key {key!r}")
        elif not isinstance(meta[key], kind):
            problems.append(f"{key!r} must be {description}, got {type(meta[key]).__name__}")
        elif key.endswith("fingerprint") and not meta[key]:
            problems.append(f"{key!r} is empty")
    if isinstance(meta.get("metrics"), dict):
        problems += _metrics_problems(meta["metrics"], classes)
    if isinstance(meta.get("sha256"), dict):
        problems += _sha256_problems(meta["sha256"])
    if isinstance(meta.get("created_at"), str):
        try:
            datetime.fromisoformat(meta["created_at"])
        except ValueError:
            problems.append(f"'created_at' is not an ISO timestamp: {meta['created_at']!r}")
    return problems


def _metrics_problems(metrics: dict[str, Any], classes: int) -> list[str]:
    problems = []
    if not _is_number(metrics.get("accuracy"), 0, 1):
        problems.append(f"'metrics.accuracy' must be a number in [0, 1], "
                        f"got {metrics.get('accuracy')!r}")
    if not _is_number(metrics.get("loss"), 0, math.inf):
        problems.append(f"'metrics.loss' must be a number >= 0, got {metrics.get('loss')!r}")
    recall = metrics.get("per_class_recall")
    if not (isinstance(recall, list) and recall and len(recall) == (classes or len(recall))
            and all(_is_number(r, 0, 1) for r in recall)):
        problems.append(f"'metrics.per_class_recall' must be a list of {classes or 'the'} "
                        f"numbers in [0, 1], got {recall!r}")
    return problems


def _sha256_problems(sha256: dict[str, Any]) -> list[str]:
    problems = []
    if MODEL_FILE not in sha256:
        problems.append(f"'sha256' has no entry for {MODEL_FILE}")
    bad = [name for name, digest in sha256.items()
           if not (isinstance(digest, str) and _SHA256_RE.fullmatch(digest))]
    if bad:
        problems.append(f"'sha256' entries are not hex digests: {bad}")
    return problems


def _is_number(value: Any, low: float, high: float) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and low <= value <= high)


def _verify_checksums(path: Path, meta: dict[str, Any]) -> None:
    """Every artifact file, and metadata.json's own content, as registered."""
    expected = {k: v for k, v in meta["sha256"].items() if k != METADATA_FILE}
    actual = _hash_tree(path)
    problems = []
    if METADATA_FILE in meta["sha256"]:
        digest = _metadata_digest(meta)
        if digest != meta["sha256"][METADATA_FILE]:
            problems.append(f"{path / METADATA_FILE} content has sha256 {digest[:12]}…, "
                            f"registered {meta['sha256'][METADATA_FILE][:12]}… (edited after "
                            "registration)")
    for name in sorted(expected.keys() | actual.keys()):
        if name not in actual:
            problems.append(f"{path / name} is missing")
        elif name not in expected:
            problems.append(f"{path / name} was not part of the registered artifacts")
        elif actual[name] != expected[name]:
            problems.append(f"{path / name} has sha256 {actual[name][:12]}…, registered "
                            f"{expected[name][:12]}… (modified after registration)")
    if problems:
        raise CorruptMetadataError(
            f"{path / METADATA_FILE}: artifacts do not match their checksums: "
            + "; ".join(problems))


def _metadata_digest(meta: dict[str, Any]) -> str:
    """sha256 of the metadata's canonical JSON, without its own entry in 'sha256' (a file
    cannot hold its own hash): editing any value, a metric say, changes it."""
    others = {k: v for k, v in meta["sha256"].items() if k != METADATA_FILE}
    canonical = json.dumps({**meta, "sha256": others}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _hash_tree(path: Path) -> dict[str, str]:
    """sha256 of every file under `path` except metadata.json, keyed by relative POSIX path."""
    digests = {}
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        name = file.relative_to(path).as_posix()
        if name != METADATA_FILE:
            digests[name] = sha256_file(file)
    return digests


def _seal(path: Path) -> None:
    """fsync and make read-only every file and directory under `path` (deepest first)."""
    for item in sorted([path, *path.rglob("*")], key=lambda p: len(p.parts), reverse=True):
        fd = os.open(item, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        item.chmod(0o555 if item.is_dir() else 0o444)


def _now() -> str:
    return datetime.now(UTC).isoformat()
