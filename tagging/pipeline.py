"""What each DAG task does, as plain functions: testable without Airflow.

harvest_labels -> retrain -> gate_and_promote -> resolve_run -> plan_shards -> tag_shard[*]
  -> publish -> validate; after a promotion, also retag (the previous retag_days days)

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
    reason: str  # why the champion was reused although the labels changed ("" otherwise)


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


def harvest(day: str, harvest_days: int) -> dict[str, Any]:
    """Harvest verified labels of the `harvest_days` days up to `day` into the label store
    (and the `TAGGING_REAL_PHOTOS` folder, which joins the same store)."""
    from tagging.loop.steps import harvest_labels

    settings = Settings.from_env()
    catalogue = settings.catalogue_root
    summary = harvest_labels(catalogue, day, harvest_days=harvest_days,
                             real_photos=settings.real_photos,
                             image_root=settings.image_root_for(catalogue))
    log.info("label store: %d labels (%d train side, %d held out); harvested %s; rejected %s",
             summary["labels"], summary["train"], summary["holdout"],
             [h["source"] for h in summary["harvested"]] or "nothing new",
             summary["rejected"] or "none")
    return summary


def retrain(train_overrides: dict[str, Any], *, force: bool, actor: str,
            min_new_labels: int = 0, target_precision: float = 0.95) -> CandidateRef:
    """Train a candidate on Fashion-MNIST and the label store's train side, or reuse the
    champion when data and config are unchanged or too few new labels arrived."""
    from tagging.loop.steps import train_config
    from tagging.model.train import train_candidate

    settings = Settings.from_env()
    try:
        config = train_config(train_overrides, catalogue_root=settings.catalogue_root,
                              target_precision=target_precision)
    except (TypeError, ValueError) as e:
        raise TaggingError(f"bad 'train' param: {e}") from e
    candidate = train_candidate(config, registry_root=settings.registry_root,
                                created_by=actor, reuse_if_unchanged=not force,
                                min_new_labels=min_new_labels)
    log.info("candidate %s (%s)", candidate.version,
             candidate.reason or ("champion reused" if candidate.reused else "newly trained"))
    return CandidateRef(version=candidate.version, reused=candidate.reused,
                        reason=candidate.reason)


def promote_unless_reused(candidate: CandidateRef, gate_overrides: dict[str, Any], *,
                          actor: str) -> GateOutcome:
    """Promote a new candidate through the gate; a refusal keeps the champion.

    A reused champion is not gated again. No champion at all (a first candidate refused)
    is an error: there is nothing to tag with.
    """
    from model_registry import GatePolicy
    from tagging.loop.steps import gate
    from tagging.model.registry import open_registry

    try:
        policy = GatePolicy(**gate_overrides)
    except TypeError as e:
        raise TaggingError(f"bad 'gate' param: {e}") from e
    registry = open_registry()
    promoted, reasons = False, []
    if not candidate["reused"]:
        decision = gate(registry.root, candidate["version"],
                        catalogue_root=Settings.from_env().catalogue_root, policy=policy,
                        actor=actor)
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
    from tagging.model.registry import open_registry

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


def retag_after_promotion(outcome: GateOutcome, partition: str,
                          retag_days: int) -> list[dict[str, Any]]:
    """After a promotion, re-tag and republish the `retag_days` days before `partition`
    (those published by another version) with the new champion."""
    from tagging.loop.steps import days_to_retag, retag

    if not outcome["promoted"] or not retag_days:
        return []
    settings = Settings.from_env()
    days = days_to_retag(settings.catalogue_root, partition, retag_days, outcome["champion"])
    log.info("re-tagging %s with the new champion %s", days or "no earlier day",
             outcome["champion"])
    return retag(settings.catalogue_root, days, registry_root=settings.registry_root,
                 version=outcome["champion"])


def validate_run(run: RunPlan, *, max_error_rate: float, max_review_rate: float,
                 live_accuracy_margin: float, review_rate_margin: float) -> dict[str, Any]:
    """validate_partition, with the live quality held against the tagging version's
    held-out real-photo figures."""
    from tagging.catalogue.validate import validate_partition
    from tagging.loop.quality import expected_of

    settings = Settings.from_env()
    return dict(validate_partition(
        settings.catalogue_root, run["partition"], max_error_rate=max_error_rate,
        max_review_rate=max_review_rate,
        expected=expected_of(settings.registry_root, run["model_version"]),
        live_accuracy_margin=live_accuracy_margin, review_rate_margin=review_rate_margin))
