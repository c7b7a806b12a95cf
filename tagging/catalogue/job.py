"""`tagging tag`: plan, tag every shard with one warm worker pool, publish, in one process."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.progress import Progress

from tagging.catalogue.layout import shard_path, staging_dir, staging_lock
from tagging.catalogue.planning import plan_shards
from tagging.catalogue.publish import publish_partition
from tagging.catalogue.published import read_manifest
from tagging.catalogue.tagger import STAGES, Tagger, rounded
from tagging.model.inference import Classifier
from tagging.settings import Settings, TaggingLimits


def tag_partition(catalogue_root: Path | str, date: str, *, registry_root: Path | str,
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
                image_root=Settings.from_env().image_root_for(catalogue_root)) as tagger, \
            staging_lock(staging_dir(catalogue_root, date, run_id)), \
            Progress(disable=not progress) as bar:
        task = bar.add_task(f"tagging {date}", total=sum(s["rows"] for s in shards))
        for shard in shards:
            out = shard_path(catalogue_root, date, run_id, shard["index"])
            stats = tagger.write_shard(shard, out, tagged_at, lambda n: bar.advance(task, n))
            staged.append(str(out))
            seconds = {k: v + stats.seconds[k] for k, v in seconds.items()}
    elapsed = time.perf_counter() - start
    path = publish_partition(catalogue_root, date, staged=staged,
                             model_version=classifier.version, tagged_at=tagged_at.isoformat())
    manifest = read_manifest(catalogue_root, date)
    counts = manifest["counts"]
    return {"partition": date, "model_version": classifier.version, **counts,
            "seconds": round(elapsed, 2), "images_per_s": round(counts["rows"] / elapsed, 1),
            "stage_seconds": rounded(seconds), "output": str(path)}

