"""The learning loop's steps as plain functions: the DAG, the CLI and the demo wire them.

```
harvest_labels -> retrain (>= min_new_labels new labels) -> gate on the current holdout
  -> promote -> retag the previous retag_days days
```
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

from tagging.catalogue.published import read_manifest
from tagging.loop.labelled import Labelled, load_labelled
from tagging.loop.labelstore import LabelStore

log = logging.getLogger(__name__)


def harvest_labels(catalogue_root: Path | str, day: str, *, harvest_days: int = 30,
                   real_photos: Path | str | None = None, image_root: Path | None = None,
                   workers: int | None = None) -> dict:
    """Harvest the last `harvest_days` partitions up to `day` (and a labelled photo folder)."""
    store = LabelStore.of_catalogue(catalogue_root)
    reports = store.harvest_recent(catalogue_root, day, harvest_days, image_root=image_root,
                                   workers=workers)
    if real_photos:
        reports.append(store.add_photo_folder(real_photos, workers=workers))
    status = store.status()
    return {
        "store": str(store.root),
        "harvested": [r.to_dict() for r in reports if r.harvested],
        "unchanged": [r.source for r in reports if not r.harvested],
        "labels": status["labels"], "train": status["train"], "holdout": status["holdout"],
        "rejected": status["rejected"],
    }


def train_config(overrides: dict, *, catalogue_root: Path | str, target_precision: float):
    """The scheduled retrain's TrainConfig: learn from the catalogue's label store.

    A `TAGGING_REAL_PHOTOS` folder is not passed here: harvest_labels put it in the store.
    """
    from tagging.model.train import TrainConfig

    defaults = {"label_store": str(LabelStore.of_catalogue(catalogue_root).root),
                "review_target_precision": target_precision}
    return TrainConfig.from_dict(defaults | overrides)


def gate(registry_root: Path | str, candidate: str, *, catalogue_root: Path | str | None,
         policy, actor: str, labelled: Labelled | None = None):
    """Promote through the gate, the champion re-scored with the candidate on today's holdout.

    labelled: the labels to take the holdout from (default: the catalogue's store).
    """
    from tagging.loop.holdout import holdout_comparison
    from tagging.model.registry import open_registry

    registry = open_registry(registry_root)
    if labelled is None and catalogue_root is not None:
        labelled = store_holdout(catalogue_root)
    scores = holdout_comparison(registry_root, candidate, registry.champion(),
                                labelled.holdout if labelled is not None else None)
    return registry.promote(candidate, policy=policy, actor=actor, holdout=scores)


def store_holdout(catalogue_root: Path | str) -> Labelled | None:
    """The catalogue's current labels (None when nothing was harvested yet)."""
    store = LabelStore.of_catalogue(catalogue_root)
    return load_labelled(store.root) if store.state_path.exists() else None


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
          version: str, workers: int | None = None) -> list[dict]:
    """Re-tag and republish each day with `version` (each publish is atomic, as always)."""
    from tagging.catalogue.job import tag_partition

    done = []
    for day in days:
        summary = tag_partition(catalogue_root, day, registry_root=registry_root, model=version,
                                workers=workers)
        log.info("re-tagged %s with %s", day, version)
        done.append({"partition": day, "model_version": version, "rows": summary["rows"]})
    return done
