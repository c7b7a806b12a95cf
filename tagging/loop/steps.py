"""The learning loop's steps as plain functions: the DAG, the CLI and the demo wire them.

```
harvest_labels -> retrain (>= min_new_labels new labels) -> gate on the current holdout
  -> promote -> retag the previous retag_days days
```
"""

from __future__ import annotations

import csv
import logging
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tagging.catalogue.published import read_manifest
from tagging.labels import CATEGORY_SLUGS
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


# ---------------------------------------------------------------- demo: real photos as days


def real_photo_days(folder: Path | str, catalogue_root: Path | str, dates: list[str], *,
                    reveal: float = 0.6, seed: int = 0) -> list[Path]:
    """Spread a labelled photo folder over `dates` as catalogue partitions.

    Each photo becomes one product (in a seeded order, so every day mixes classes); a
    `reveal` share of each day's rows carry `verified_category` (what merchandisers
    confirmed), and every row keeps its `true_category` for the demo's accuracy.
    """
    folder = Path(folder)
    with open(folder / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    written = []
    for day, picks in zip(dates, np.array_split(order, len(dates)), strict=True):
        chosen = [rows[i] for i in picks]
        slugs = [CATEGORY_SLUGS[int(r["label"])] for r in chosen]
        shown = rng.random(len(chosen)) < reveal
        table = pa.table({
            "product_id": [f"sku-{Path(r['file']).stem}" for r in chosen],
            "image": pa.array([(folder / "images" / r["file"]).read_bytes() for r in chosen],
                              pa.binary()),
            "true_category": pa.array(slugs, pa.string()),
            "verified_category": pa.array([s if v else None for s, v in zip(
                slugs, shown, strict=True)], pa.string()),
        })
        out = Path(catalogue_root) / "incoming" / f"dt={day}" / "part-0.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        pq.write_table(table, tmp, row_group_size=64)
        tmp.replace(out)
        written.append(out)
        log.info("wrote %s: %d photos, %d verified", out, table.num_rows, int(shown.sum()))
    return written


def run_loop_demo(workdir: Path | str, photos: Path | str, dates: list[str], *,
                  reveal: float = 0.8, params: dict | None = None, train: dict | None = None,
                  gate: dict | None = None, data_dir: Path | str | None = None) -> dict:
    """The loop end to end on the real DAG: a photo folder spread over `dates`, one run a day.

    Returns, per day: whether the run succeeded, what the gate did (from the registry's
    event log), the champion with its holdout figures, the live quality of the day's
    published tags, and which earlier days were re-tagged.
    """
    from tagging.model.registry import open_registry
    from tagging.ops.airflow_local import LocalAirflow, last_error
    from tagging.settings import DATA_ENV

    extra_env = {DATA_ENV: str(Path(data_dir).absolute())} if data_dir else {}
    local = LocalAirflow.in_workdir(Path(workdir), extra_env=extra_env)
    real_photo_days(photos, local.catalogue, dates, reveal=reveal)
    local.setup()
    conf = {**(params or {}), "train": train or {}, "gate": gate or {}}
    registry = open_registry(local.registry)
    days = []
    for day in dates:
        seen = len(registry.events())
        before = {d: _tagged_by(local.catalogue, d) for d in dates}
        ok = local.dag_test(day, conf)
        events = registry.events()[seen:]
        champion = registry.champion()
        real = (registry.get(champion).metadata["metrics"].get("real_photos") or {}
                if champion else {})
        manifest = read_manifest(local.catalogue, day) or {}
        gated = [e for e in events if e["event"] in ("promoted", "refused")]
        days.append({
            "partition": day, "state": "success" if ok else "failed",
            "trained": [e["version"] for e in events if e["event"] == "register"],
            "gate": [{"version": e["version"], "event": e["event"], "reasons": e["reasons"]}
                     for e in gated],
            "champion": champion,
            "holdout_photos": real.get("n"),
            "holdout_accuracy": real.get("accuracy"),
            "holdout_coverage": real.get("published_coverage"),
            "quality": manifest.get("quality", {}),
            "retagged": [d for d in dates if d != day and before[d] is not None
                         and _tagged_by(local.catalogue, d) != before[d]],
            **({} if ok else {"error": last_error(local.log_dir / f"dags-test-{day}.log")}),
        })
    return {"airflow_home": str(local.home), "catalogue": str(local.catalogue),
            "registry": str(local.registry), "champion": registry.champion(), "days": days,
            "failed": [d["partition"] for d in days if d["state"] != "success"]}


def _tagged_by(catalogue_root: Path, day: str) -> str | None:
    """The model version of the day's published partition (None: not published)."""
    return (read_manifest(catalogue_root, day) or {}).get("model_version")
