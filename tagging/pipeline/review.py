"""The review queue's DAG steps: export the answers before harvest_labels, and publish
again the days whose answers changed since their last publication.

```
export_answers -> harvest_labels -> ... -> resolve_run -> retag -> republish_answered
                                                 ... -> publish -> fill_review_queue
```
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tagging.catalogue.layout import answers_path
from tagging.catalogue.published import read_manifest
from tagging.pipeline.results import RunPlan
from tagging.settings import REVIEW_DB_ENV, ReviewSettings, Settings

log = logging.getLogger(__name__)
NO_STORE = (f"the catalogue is on object storage and {REVIEW_DB_ENV} is not set (a "
            "postgresql:// URL, or a SQLite file on a disk the app and the workers share)")


def export_review_answers() -> dict[str, Any]:
    """Write each day's winning answers to <catalogue>/reviews/dt=D/answers.parquet (a day
    is rewritten only when its answers changed). Nothing to do without a review store."""
    from tagging.review.export import export_answers
    from tagging.review.store import ReviewStore

    catalogue = Settings.from_env().catalogue_root
    url = ReviewSettings.from_env().db_or_none(catalogue)
    if url is None or ("://" not in url and not Path(url).exists()):
        log.info("no review store (%s): no answers to export", url or NO_STORE)
        return {"store": url, "days": []}
    store = ReviewStore(url)
    try:
        days = export_answers(store, catalogue)
    finally:
        store.close()
    log.info("review answers exported: %s", [(d["partition"], d["answers"], d["written"])
                                             for d in days] or "none")
    return {"store": store.db.shown, "days": days}


def fill_review_queue(partition: str) -> dict[str, Any]:
    """Queue the run's published day for review: its needs_review rows and audit slice
    (tagging.review.queue; rows already queued are left as they are)."""
    from dataclasses import asdict

    from tagging.review.queue import DayFill, fill
    from tagging.review.store import ReviewStore

    catalogue = Settings.from_env().catalogue_root
    review = ReviewSettings.from_env()
    url = review.db_or_none(catalogue)
    if url is None:
        log.warning("the review queue is off: %s", NO_STORE)
        return asdict(DayFill(partition))
    store = ReviewStore(url)
    try:
        [report] = fill(store, catalogue, settings=review, days=[partition])
    finally:
        store.close()
    return asdict(report)


def days_with_new_answers(catalogue_root: Path | str) -> list[str]:
    """Published days whose answers file is not the one their publication applied."""
    from tagging.catalogue.answers import answers_fingerprint, exported_days

    days = []
    for day in exported_days(catalogue_root):
        manifest = read_manifest(catalogue_root, day)
        applied = ((manifest or {}).get("reviews") or {}).get("sha256")
        if manifest is not None and applied != answers_fingerprint(catalogue_root, day):
            days.append(day)
    return days


def republish_answered(run: RunPlan) -> list[dict[str, Any]]:
    """Publish again, through the re-tag path and with the model version each day was
    tagged by, the days that got answers since their last publication. The run's own day
    is left to the run when the run publishes it (its publish applies the answers)."""
    from tagging.pipeline.learn import retag

    settings = Settings.from_env()
    catalogue = settings.catalogue_root
    days = [d for d in days_with_new_answers(catalogue)
            if d != run["partition"] or run["already_published"]]
    done = []
    for day in days:
        version = read_manifest(catalogue, day)["model_version"]
        log.info("publishing %s again with its review answers (%s, %s)", day, version,
                 answers_path(catalogue, day))
        done += retag(catalogue, [day], registry_root=settings.registry_root, version=version)
    return done
