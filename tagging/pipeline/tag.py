"""Tagging a day: which partition a run tags, the pinned model version, publishing and
validating the run's partition, and the whole of it in one process (`tagging tag`).
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, date, datetime
from typing import Any

from rich.progress import Progress

from tagging.catalogue.layout import image_root_for, published_dir, shard_path
from tagging.catalogue.planning import plan_shards
from tagging.catalogue.publish import is_published, publish_partition
from tagging.catalogue.published import read_manifest
from tagging.catalogue.tagger import STAGES, Tagger, rounded
from tagging.errors import TaggingError
from tagging.loop.quality import trained_by
from tagging.model.inference import Classifier
from tagging.pipeline.results import Publication, RunPlan, ValidatedRun
from tagging.settings import LoopPolicy, Settings, TaggingLimits
from tagging.storage import Root

log = logging.getLogger(__name__)


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


def plan_run(partition: str, model_ref: str | None) -> RunPlan:
    """Pin the model version (champion unless `model_ref`) and the timestamp for a run."""
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
    """Commit the day to the tagged Delta table (unless it was already published)."""
    settings = Settings.from_env()
    catalogue = settings.catalogue_root
    if run["already_published"]:
        return Publication(path=str(published_dir(catalogue, run["partition"])),
                           newly_published=False)
    path = publish_partition(
        catalogue, run["partition"], staged=staged, model_version=run["model_version"],
        tagged_at=run["tagged_at"],
        trained_on=trained_by(catalogue, settings.registry_root, run["model_version"]))
    return Publication(path=str(path), newly_published=True)


def validate_run(run: RunPlan, published: Publication, *,
                 max_error_rate: float = TaggingLimits.max_error_rate,
                 max_review_rate: float = TaggingLimits.max_review_rate,
                 live_accuracy_margin: float = LoopPolicy.live_accuracy_margin,
                 review_rate_margin: float = LoopPolicy.review_rate_margin) -> ValidatedRun:
    """validate_partition of the run's publication, with the live quality held against the
    tagging version's held-out real-photo figures."""
    from tagging.catalogue.validate import validate_partition
    from tagging.loop.quality import expected_of

    settings = Settings.from_env()
    report = validate_partition(
        settings.catalogue_root, run["partition"], max_error_rate=max_error_rate,
        max_review_rate=max_review_rate,
        expected=expected_of(settings.registry_root, run["model_version"]),
        live_accuracy_margin=live_accuracy_margin, review_rate_margin=review_rate_margin)
    return ValidatedRun(validation=report, path=published["path"],
                        newly_published=published["newly_published"])


def tag_partition(catalogue_root: Root | str, date: str, *, registry_root: Root | str,
                  model: str = "champion", review_threshold: float | None = None,
                  workers: int | None = None,
                  rows_per_shard: int = TaggingLimits.rows_per_shard,
                  progress: bool = False) -> dict[str, Any]:
    """Plan, tag every shard with one warm worker pool, publish; returns a summary."""
    shards = plan_shards(catalogue_root, date, rows_per_shard=rows_per_shard)
    classifier = Classifier.from_registry(registry_root, model)
    tagged_at = datetime.now(UTC).replace(microsecond=0)
    run_id = f"cli-{tagged_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    start = time.perf_counter()
    staged, seconds = [], dict.fromkeys(STAGES, 0.0)
    with Tagger(classifier, review_threshold=review_threshold, workers=workers,
                image_root=image_root_for(catalogue_root)) as tagger, \
            Progress(disable=not progress) as bar:
        task = bar.add_task(f"tagging {date}", total=sum(s["rows"] for s in shards))
        for shard in shards:
            out = shard_path(catalogue_root, date, run_id, shard["index"])
            stats = tagger.write_shard(shard, out, tagged_at, lambda n: bar.advance(task, n))
            staged.append(str(out))
            seconds = {k: v + stats.seconds[k] for k, v in seconds.items()}
    elapsed = time.perf_counter() - start
    path = publish_partition(catalogue_root, date, staged=staged,
                             model_version=classifier.version, tagged_at=tagged_at.isoformat(),
                             trained_on=trained_by(catalogue_root, registry_root,
                                                   classifier.version))
    manifest = read_manifest(catalogue_root, date)
    counts = manifest["counts"]
    return {"partition": date, "model_version": classifier.version, **counts,
            "seconds": round(elapsed, 2), "images_per_s": round(counts["rows"] / elapsed, 1),
            "stage_seconds": rounded(seconds), "output": str(path)}

