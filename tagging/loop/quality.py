"""The learning loop's side of live quality (computed and checked by
tagging.catalogue.quality): what a version trained on (`trained_by`: the products live
quality must not grade it on) and what it expects from its held-out real photos
(`expected_of`), both passed to publishing and validation as data; and the quality of
every published day, oldest first, with its plot.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tagging.catalogue.published import published_days, read_manifest
from tagging.catalogue.quality import published_quality
from tagging.loop.labelstore import LabelStore
from tagging.model.policy import reviews_everything, wilson_lower_bound
from tagging.storage import Root


def trained_products(catalogue_root: Root | Path | str,
                     version_metadata: dict) -> frozenset[str]:
    """Product ids a version trained on: its label store's train side, harvested up to the
    newest label it was trained with (none when it learnt from no label store)."""
    since = (version_metadata.get("metrics", {}).get("labels") or {}).get("harvested_through")
    store_root = version_metadata.get("hyperparameters", {}).get("label_store")
    if since is None or store_root is None:
        return frozenset()
    store = LabelStore(store_root)
    if not store.exists():
        store = LabelStore.of_catalogue(catalogue_root)
    table = store.table()
    moment = pa.scalar(datetime.fromisoformat(since), table.schema.field("harvested_at").type)
    train = table.filter(pc.and_(pc.invert(table["holdout"]),
                                 pc.less_equal(table["harvested_at"], moment)))
    return frozenset(train["product_id"].to_pylist())


def trained_by(catalogue_root: Root | Path | str, registry_root: Root | Path | str,
               version: str) -> frozenset[str]:
    """trained_products of a registered version."""
    from tagging.model.registry import open_registry

    return trained_products(catalogue_root, open_registry(registry_root).get(version).metadata)


def expectations(version_metadata: dict) -> dict:
    """What a version expects on real photos: its held-out accuracy and review rate.

    The expected review rate is the one its stored review policy produces: a threshold of
    1.0 (too little evidence to trust any tag) reviews everything, so it expects 1.0.
    """
    real = version_metadata.get("metrics", {}).get("real_photos") or {}
    policy = version_metadata.get("review") or {}
    everything = "confidence_threshold" in policy and reviews_everything(policy)
    return {"holdout_accuracy": real.get("accuracy"), "holdout_photos": real.get("n"),
            "expected_review_rate": 1.0 if everything else real.get("expected_review_rate"),
            "reviews_everything": everything}


def expected_of(registry_root: Path | str, version: str) -> dict:
    """expectations() of a registered version."""
    from tagging.model.registry import open_registry

    return expectations(open_registry(registry_root).get(version).metadata)


# ---------------------------------------------------------------- over days


def quality_history(catalogue_root: Path | str) -> list[dict]:
    """Per published partition, oldest first: its manifest's quality and model version
    (what search reads now; tagging.catalogue.publications has every publication)."""
    history = []
    for day in published_days(catalogue_root):
        manifest = read_manifest(catalogue_root, day)
        if manifest is None:  # unpublished meanwhile
            continue
        quality = manifest.get("quality") or published_quality(catalogue_root, day)
        history.append({"partition": manifest["partition"],
                        "model_version": manifest["model_version"], **quality})
    return history


def plot_quality(history: list[dict], path: Path) -> Path:
    """Accuracy (with its 95 % interval: a day's graded rows are few), precision, coverage
    and review rate by day; a line where the model changed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graded = [h.get("verified") or 0 for h in history]
    days = [f"{h['partition']}\n{n} graded" for h, n in zip(history, graded, strict=True)]
    x = np.arange(len(days))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(days) + 3), 4.5))
    accuracy = np.array([np.nan if h.get("accuracy") is None else h["accuracy"]
                         for h in history])
    right, n = np.nan_to_num(accuracy) * graded, np.array(graded)
    low = wilson_lower_bound(right, n, 1.96)
    high = 1 - wilson_lower_bound(n - right, n, 1.96)
    ax.errorbar(x, accuracy, yerr=[np.clip(accuracy - low, 0, None),
                                   np.clip(high - accuracy, 0, None)], fmt="o-", capsize=3,
                label="accuracy, rows it did not train on (95 % CI)")
    for key, label, style in (("unflagged_precision", "precision, not flagged", "s--"),
                              ("coverage", "coverage (graded, not flagged)", "^-"),
                              ("review_rate", "review rate (all tagged)", "x:")):
        values = [np.nan if h.get(key) is None else h[key] for h in history]
        ax.plot(x, values, style, label=label)
    previous = None
    for i, h in enumerate(history):
        if h["model_version"] != previous:
            ax.axvline(i - 0.5 if i else i, color="grey", alpha=0.4)
            ax.text(i, 1.02, h["model_version"], fontsize=8, ha="center", va="bottom")
            previous = h["model_version"]
    ax.set_xticks(x, days, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("share")
    ax.set_title("live quality by day (model versions marked)", pad=16)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
