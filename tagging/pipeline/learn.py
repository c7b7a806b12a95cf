"""The learning loop's steps: harvest verified labels, train or reuse, gate on the current
holdout and promote, re-tag the days before after a promotion.

```
harvest_labels -> retrain (>= min_new_labels new labels) -> gate on the current holdout
  -> promote -> retag the previous retag_days days
```
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from model_registry import GateDecision, GatePolicy
from tagging.catalogue.layout import image_root_for
from tagging.catalogue.published import read_manifest
from tagging.encoder import DEFAULT_ENCODER
from tagging.errors import TaggingError
from tagging.loop.labelled import Labelled, load_labelled
from tagging.loop.labelstore import LabelStore
from tagging.model.config import TrainConfig
from tagging.model.train import Candidate, train_candidate
from tagging.pipeline.results import CandidateRef, GateOutcome, HarvestSummary, RetaggedDay
from tagging.settings import LoopPolicy, Settings

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- harvest


def harvest_labels(catalogue_root: Path | str, day: str, *,
                   harvest_days: int = LoopPolicy.harvest_days,
                   real_photos: Path | str | None = None, image_root: Path | None = None,
                   workers: int | None = None, encoder: str | None = None) -> HarvestSummary:
    """Harvest the last `harvest_days` partitions up to `day` (and a labelled photo folder),
    with the features of `encoder` (the model input the next retrain takes)."""
    store = LabelStore.of_catalogue(catalogue_root)
    reports = store.harvest_recent(catalogue_root, day, harvest_days, image_root=image_root,
                                   workers=workers, encoder=encoder)
    if real_photos:
        reports.append(store.add_photo_folder(real_photos, workers=workers, encoder=encoder))
    status = store.status()
    return HarvestSummary(store=str(store.root),
                          harvested=[r.to_dict() for r in reports if r.harvested],
                          unchanged=[r.source for r in reports if not r.harvested],
                          labels=status["labels"], train=status["train"],
                          holdout=status["holdout"], rejected=status["rejected"])


def harvest(day: str, harvest_days: int = LoopPolicy.harvest_days,
            train_overrides: dict[str, Any] | None = None) -> HarvestSummary:
    """Harvest verified labels of the `harvest_days` days up to `day` into the label store
    (and the `TAGGING_REAL_PHOTOS` folder, which joins the same store), with the features
    of the model input the retrain's recipe takes (`train_overrides`' model_input)."""
    settings = Settings.from_env()
    catalogue = settings.catalogue_root
    encoder = features_for(train_config(train_overrides or {}, catalogue_root=catalogue,
                                        target_precision=LoopPolicy.target_precision))
    summary = harvest_labels(catalogue, day, harvest_days=harvest_days,
                             real_photos=settings.real_photos,
                             image_root=image_root_for(catalogue, settings), encoder=encoder)
    log.info("label store: %d labels (%d train side, %d held out); harvested %s; rejected %s",
             summary["labels"], summary["train"], summary["holdout"],
             [h["source"] for h in summary["harvested"]] or "nothing new",
             summary["rejected"] or "none")
    return summary


# ---------------------------------------------------------------- retrain


def train_config(overrides: dict, *, catalogue_root: Path | str,
                 target_precision: float) -> TrainConfig:
    """The scheduled retrain's TrainConfig: learn from the catalogue's label store.

    A `TAGGING_REAL_PHOTOS` folder is not passed here: harvest_labels put it in the store.
    """
    defaults = {"label_store": str(LabelStore.of_catalogue(catalogue_root).root),
                "review_target_precision": target_precision}
    try:
        return TrainConfig.from_dict(defaults | overrides)
    except (TypeError, ValueError) as e:
        raise TaggingError(f"bad 'train' param: {e}") from e


def retrain(train_overrides: dict[str, Any], *, force: bool, actor: str,
            min_new_labels: int = LoopPolicy.min_new_labels,
            target_precision: float = LoopPolicy.target_precision) -> CandidateRef:
    """Train a candidate on Fashion-MNIST and the label store's train side, or reuse the
    champion when data and config are unchanged or too few new labels arrived."""
    settings = Settings.from_env()
    config = train_config(train_overrides, catalogue_root=settings.catalogue_root,
                          target_precision=target_precision)
    candidate = train_candidate(config, labelled=labels_of(config),
                                registry_root=settings.registry_root, created_by=actor,
                                reuse_if_unchanged=not force, min_new_labels=min_new_labels)
    log.info("candidate %s (%s)", candidate.version,
             candidate.reason or ("champion reused" if candidate.reused else "newly trained"))
    return CandidateRef(version=candidate.version, reused=candidate.reused,
                        reason=candidate.reason)


def features_for(config: TrainConfig) -> str:
    """The encoder whose features labels are harvested with: the recipe's, or the default
    one for a pixels recipe (pixels are always stored), so that a pixels champion and an
    encoder candidate can both be scored on the holdout, either way round."""
    return DEFAULT_ENCODER if config.input.is_pixels else config.model_input


def labels_of(config: TrainConfig) -> Labelled | None:
    """The labelled photos a recipe learns from (its store and photo folder), with their
    pixels and features (features_for)."""
    return load_labelled(config.label_store, config.real_photos, encoder=features_for(config))


def train_and_promote(config: TrainConfig, *, registry_root: Path | str,
                      data_dir: Path | str | None = None, created_by: str,
                      policy: GatePolicy, reuse_if_unchanged: bool = False,
                      progress: bool = False) -> tuple[Candidate, GateDecision | None]:
    """Train a candidate, then promote it through the gate (unless the champion was reused);
    with real photos, the gate compares it with the champion on their current holdout."""
    labelled = labels_of(config)
    candidate = train_candidate(config, labelled=labelled, registry_root=registry_root,
                                data_dir=data_dir, created_by=created_by,
                                reuse_if_unchanged=reuse_if_unchanged, progress=progress)
    if candidate.reused:
        return candidate, None
    decision = promote_through_gate(registry_root, candidate.version, catalogue_root=None,
                                    policy=policy, actor=created_by, labelled=labelled)
    return candidate, decision


# ---------------------------------------------------------------- gate and promote


def promote_unless_reused(candidate: CandidateRef, gate_overrides: dict[str, Any], *,
                          actor: str) -> GateOutcome:
    """Promote a new candidate through the gate; a refusal keeps the champion.

    A reused champion is not gated again. No champion at all (a first candidate refused)
    is an error: there is nothing to tag with.
    """
    from tagging.model.registry import open_registry

    try:
        policy = GatePolicy(**gate_overrides)
    except TypeError as e:
        raise TaggingError(f"bad 'gate' param: {e}") from e
    registry = open_registry()
    promoted, reasons = False, []
    if not candidate["reused"]:
        decision = promote_through_gate(registry.root, candidate["version"],
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


def promote_through_gate(registry_root: Path | str, candidate: str, *,
                         catalogue_root: Path | str | None, policy, actor: str,
                         labelled: Labelled | None = None):
    """Promote through the gate, the champion re-scored with the candidate on today's holdout.

    labelled: the labels to take the holdout from (default: the catalogue's store).
    """
    from tagging.loop.holdout import holdout_comparison
    from tagging.model.registry import open_registry

    registry = open_registry(registry_root)
    if labelled is None and catalogue_root is not None:
        labelled = current_labels(catalogue_root)
    scores = holdout_comparison(registry_root, candidate, registry.champion(),
                                labelled.holdout if labelled is not None else None)
    return registry.promote(candidate, policy=policy, actor=actor, holdout=scores)


def current_labels(catalogue_root: Path | str) -> Labelled | None:
    """The catalogue's current labels (None when nothing was harvested yet)."""
    store = LabelStore.of_catalogue(catalogue_root)
    return load_labelled(store.root) if store.exists() else None


# ---------------------------------------------------------------- re-tag after a promotion


def retag_after_promotion(outcome: GateOutcome, partition: str,
                          retag_days: int = LoopPolicy.retag_days) -> list[RetaggedDay]:
    """After a promotion, re-tag and republish the `retag_days` days before `partition`
    (those published by another version) with the new champion."""
    if not outcome["promoted"] or not retag_days:
        return []
    settings = Settings.from_env()
    days = days_to_retag(settings.catalogue_root, partition, retag_days, outcome["champion"])
    log.info("re-tagging %s with the new champion %s", days or "no earlier day",
             outcome["champion"])
    return retag(settings.catalogue_root, days, registry_root=settings.registry_root,
                 version=outcome["champion"])


def days_to_retag(catalogue_root: Path | str, day: str, retag_days: int,
                  version: str) -> list[str]:
    """The published days among the `retag_days` before `day` not tagged by `version`."""
    end = date.fromisoformat(day)
    days = []
    for back in range(retag_days, 0, -1):
        current = (end - timedelta(days=back)).isoformat()
        manifest = read_manifest(catalogue_root, current)
        if manifest is not None and manifest["model_version"] != version:
            days.append(current)
    return days


def retag(catalogue_root: Path | str, days: list[str], *, registry_root: Path | str,
          version: str, workers: int | None = None) -> list[RetaggedDay]:
    """Re-tag and republish each day with `version` (each publish is atomic, as always)."""
    from tagging.pipeline.tag import tag_partition

    done = []
    for day in days:
        summary = tag_partition(catalogue_root, day, registry_root=registry_root, model=version,
                                workers=workers)
        log.info("re-tagged %s with %s", day, version)
        done.append(RetaggedDay(partition=day, model_version=version, rows=summary["rows"]))
    return done
