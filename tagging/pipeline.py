"""What each DAG task does, as plain functions: testable without Airflow.

retrain -> gate_and_promote -> resolve_run -> plan_shards -> tag_shard[*] -> publish -> validate

Each function takes plain values and returns JSON-able dicts (they travel through XCom);
every failure is a TaggingError or RegistryError whose message says what to do, which the
DAG turns into a failed task without retries.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypedDict

from tagging.errors import TaggingError
from tagging.settings import Settings

log = logging.getLogger(__name__)


class CandidateRef(TypedDict):
    version: str
    reused: bool  # the champion was reused: nothing new to gate


class GateOutcome(TypedDict):
    candidate: str
    promoted: bool
    reasons: list[str]
    champion: str


class RunPlan(TypedDict):
    """Pinned once per run, so every shard uses the same model and timestamp."""

    partition: str
    model_version: str
    already_published: bool
    tagged_at: str


class Publication(TypedDict):
    path: str
    newly_published: bool


def choose_partition(requested: str | None, logical_date: datetime | None,
                     data_interval_start: datetime | None) -> tuple[str, str]:
    """The day a run tags, and where that came from (param, logical date, data interval)."""
    if requested:
        value, source = requested, "the 'partition' param"
    elif logical_date is not None:
        value, source = logical_date.astimezone(UTC).date().isoformat(), "the run's logical date"
    elif data_interval_start is not None:
        value = data_interval_start.astimezone(UTC).date().isoformat()
        source = "the run's data interval start"
    else:
        raise TaggingError(
            "this run has no logical date: pass the day to tag as the 'partition' param")
    try:
        return date.fromisoformat(value).isoformat(), source
    except ValueError:
        raise TaggingError(f"partition {value!r} is not a YYYY-MM-DD date") from None


def retrain(train_overrides: dict[str, Any], *, force: bool, actor: str) -> CandidateRef:
    """Train a candidate, or reuse the champion when data and config are unchanged."""
    from tagging.train import TrainConfig, train_candidate

    settings = Settings.from_env()
    defaults = {"real_photos": settings.real_photos} if settings.real_photos else {}
    try:
        config = TrainConfig.from_dict(defaults | train_overrides)
    except (TypeError, ValueError) as e:
        raise TaggingError(f"bad 'train' param: {e}") from e
    candidate = train_candidate(config, registry_root=settings.registry_root,
                                created_by=actor, reuse_if_unchanged=not force)
    log.info("candidate %s (%s)", candidate.version,
             "champion reused" if candidate.reused else "newly trained")
    return CandidateRef(version=candidate.version, reused=candidate.reused)


def promote_unless_reused(candidate: CandidateRef, gate_overrides: dict[str, Any], *,
                          actor: str) -> GateOutcome:
    """Promote a new candidate through the gate; a refusal keeps the champion.

    A reused champion is not gated again. No champion at all (a first candidate refused)
    is an error: there is nothing to tag with.
    """
    from model_registry import GatePolicy
    from tagging.registry import open_registry

    try:
        policy = GatePolicy(**gate_overrides)
    except TypeError as e:
        raise TaggingError(f"bad 'gate' param: {e}") from e
    registry = open_registry()
    promoted, reasons = False, []
    if not candidate["reused"]:
        decision = registry.promote(candidate["version"], policy=policy, actor=actor)
        promoted, reasons = decision.passed, decision.reasons
        if not decision.passed:
            log.warning("gate refused %s, champion stays %s: %s", candidate["version"],
                        decision.champion, "; ".join(decision.reasons))
    champion = registry.champion()
    if champion is None:
        raise TaggingError(
            f"no champion model in {registry.root}: the candidate was refused by the gate "
            f"({'; '.join(reasons)}) and there is no earlier champion to tag with")
    return GateOutcome(candidate=candidate["version"], promoted=promoted, reasons=reasons,
                       champion=champion)


def plan_run(partition: str, model_ref: str | None) -> RunPlan:
    """Pin the model version (champion unless `model_ref`) and the timestamp for a run."""
    from tagging.catalogue.publish import is_published
    from tagging.registry import open_registry

    version = open_registry().get(model_ref or "champion").version
    log.info("model version %s (%s)", version,
             "pinned by the 'model_version' param" if model_ref else "champion")
    published = is_published(Settings.from_env().catalogue_root, partition, version)
    if published:
        log.info("%s is already published by %s from the same inputs: nothing to re-tag",
                 partition, version)
    return RunPlan(partition=partition, model_version=version, already_published=published,
                   tagged_at=datetime.now(UTC).replace(microsecond=0).isoformat())


def publish_run(run: RunPlan, staged: list[str]) -> Publication:
    """Swap the partition in atomically (unless it was already published)."""
    from tagging.catalogue.layout import published_dir
    from tagging.catalogue.publish import publish_partition

    catalogue = Settings.from_env().catalogue_root
    if run["already_published"]:
        return Publication(path=str(published_dir(catalogue, run["partition"])),
                           newly_published=False)
    path: Path = publish_partition(catalogue, run["partition"], staged=staged,
                                   model_version=run["model_version"],
                                   tagged_at=run["tagged_at"])
    return Publication(path=str(path), newly_published=True)
