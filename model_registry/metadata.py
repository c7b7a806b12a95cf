"""A version's metadata.json: what the caller gives, what the registry adds, how it is checked."""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from model_registry.errors import RegistryError
from model_registry.files import sha256_file, to_json

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"  # written last, create-only: the version's commit point
CLAIM_FILE = ".claim"  # the version id's create-only claim, kept for good
ABANDONED_FILE = ".abandoned"  # a registrant that died before its commit point
REGISTRY_FILES = (METADATA_FILE, CLAIM_FILE, ABANDONED_FILE)  # never artifacts (skipped)
VERSION_RE = re.compile(r"v\d{4,}")
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
STORED_KEYS = {**_CALLER_KEYS, **_REGISTRY_KEYS}


def caller_metadata(metadata: dict[str, Any], artifact_dir: Path, created_by: str,
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
    problems = metadata_problems(record, _CALLER_KEYS, classes)
    reserved = sorted(set(_REGISTRY_KEYS) & set(record)) if isinstance(record, dict) else []
    if reserved:
        problems.append(f"keys {reserved} are set by the registry, not the caller")
    if problems:
        raise RegistryError(f"metadata for {artifact_dir}: {'; '.join(problems)}")
    return record


def metadata_problems(meta: Any, schema: dict[str, tuple[Any, str]],
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


def metadata_digest(meta: dict[str, Any]) -> str:
    """sha256 of the metadata's canonical JSON, without its own entry in 'sha256' (a file
    cannot hold its own hash): editing any value, a metric say, changes it."""
    others = {k: v for k, v in meta["sha256"].items() if k != METADATA_FILE}
    canonical = json.dumps({**meta, "sha256": others}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def artifact_files(path: Path) -> list[str]:
    """Relative POSIX names of the files under `path` that are artifacts (not registry files)."""
    return sorted(name for name in (p.relative_to(path).as_posix()
                                    for p in path.rglob("*") if p.is_file())
                  if name not in REGISTRY_FILES)


def checksum_problems(location: str, meta: dict[str, Any],
                      actual: dict[str, str]) -> list[str]:
    """What differs between the registered checksums and `actual` (name -> sha256 of the
    files found), metadata.json's own content included; names are shown under `location`."""
    expected = {k: v for k, v in meta["sha256"].items() if k != METADATA_FILE}
    problems = []
    if METADATA_FILE in meta["sha256"]:
        digest = metadata_digest(meta)
        if digest != meta["sha256"][METADATA_FILE]:
            problems.append(f"{location}/{METADATA_FILE} content has sha256 {digest[:12]}…, "
                            f"registered {meta['sha256'][METADATA_FILE][:12]}… (edited after "
                            "registration)")
    for name in sorted(expected.keys() | actual.keys()):
        if name not in actual:
            problems.append(f"{location}/{name} is missing")
        elif name not in expected:
            problems.append(f"{location}/{name} was not part of the registered artifacts")
        elif actual[name] != expected[name]:
            problems.append(f"{location}/{name} has sha256 {actual[name][:12]}…, registered "
                            f"{expected[name][:12]}… (modified after registration)")
    return problems


def hash_files(path: Path, names: list[str]) -> dict[str, str]:
    """sha256 of each named file under `path`."""
    return {name: sha256_file(path / name) for name in names}
