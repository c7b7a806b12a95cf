"""Live quality: rows with `verified_category` are the ground truth of that day's tags.

Recorded per published partition (in its manifest): the accuracy of the published tags on
verified rows, the precision of the tags not flagged needs_review, their coverage (share of
verified rows published without review), the review rate of all tagged rows, and the
distribution of predicted categories. Only verified rows whose product the tagging version
did **not** train on are graded (a version is not graded on its own homework): the label
store's holdout side (the hash split: never trained on), and, when the version's train-side
products are known (`trained_products`), every other product it did not learn from (labels
verified after it was trained, audit answers). `verified` counts them; `verified_all`
counts every verified row. `check_live_quality` compares a day with what the version that
tagged it expects from its held-out real photos.

Every publication of a day is on record too: tagging.catalogue.publications.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tagging.catalogue.published import (
    published_days,
    published_schema,
    read_manifest,
    read_published,
)
from tagging.labels import CATEGORY_SLUGS, is_holdout, parse_label
from tagging.model.policy import reviews_everything, wilson_lower_bound
from tagging.settings import LoopPolicy
from tagging.storage import Root

log = logging.getLogger(__name__)

Z = 1.0  # one-sided ~84 % bound on live accuracy (a day is a sample too)
COLUMNS = ["product_id", "category", "needs_review", "verified_category"]


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def live_quality(table: pa.Table, trained_on: Collection[str] | None = None) -> dict:
    """Quality figures of published rows (product_id, category, needs_review[,
    verified_category]), graded on the verified rows the tagging version did not train on.

    trained_on: the version's train-side product ids (None: unknown, so only the holdout
    side counts). Without a product_id column every verified row counts.
    """
    tagged = table.filter(pc.is_valid(table["category"]))
    review = tagged["needs_review"].to_numpy(zero_copy_only=False).astype(bool)
    predicted = tagged["category"].to_pylist()
    if "verified_category" in table.column_names:
        truth = [parse_label(v) for v in tagged["verified_category"].to_pylist()]
    else:
        truth = [None] * tagged.num_rows
    verified = np.array([t is not None for t in truth], bool)
    unseen, basis = _unseen(tagged, trained_on)
    graded = verified & unseen
    correct = np.array([t is not None and CATEGORY_SLUGS[t] == p
                        for t, p in zip(truth, predicted, strict=True)], bool) & graded
    unflagged = graded & ~review
    counts = dict.fromkeys(CATEGORY_SLUGS, 0)
    for slug in predicted:
        counts[slug] += 1
    return {
        "rows": table.num_rows,
        "tagged": tagged.num_rows,
        "verified": int(graded.sum()),
        "verified_all": int(verified.sum()),
        "graded_on": basis,
        "accuracy": _share(int(correct.sum()), int(graded.sum())),
        "unflagged_precision": _share(int((correct & unflagged).sum()), int(unflagged.sum())),
        "coverage": _share(int(unflagged.sum()), int(graded.sum())),
        "review_rate": _share(int(review.sum()), tagged.num_rows),
        "predicted": counts,
    }


def _unseen(tagged: pa.Table, trained_on: Collection[str] | None) -> tuple[np.ndarray, str]:
    """Which rows' products the version did not train on, and how that was decided."""
    if "product_id" not in tagged.column_names:
        return np.ones(tagged.num_rows, bool), "every verified row (no product ids)"
    ids = tagged["product_id"].to_pylist()
    if trained_on is None:
        return is_holdout(ids), "holdout side"
    trained = set(trained_on)
    return (np.array([p not in trained for p in ids], bool),
            "products the version did not train on")


def trained_products(catalogue_root: Root | Path | str,
                     version_metadata: dict) -> frozenset[str]:
    """Product ids a version trained on: its label store's train side, harvested up to the
    newest label it was trained with (none when it learnt from no label store)."""
    from tagging.loop.labelstore import LabelStore

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


def published_quality(catalogue_root: Path | str, date: str,
                      trained_on: Collection[str] | None = None) -> dict:
    """live_quality of a published day (tagging.catalogue.published)."""
    schema = published_schema(catalogue_root, date)
    return _quality_of(schema.names if schema is not None else [],
                       lambda columns: read_published(catalogue_root, date, columns),
                       trained_on)


def _quality_of(names: list[str], read: Callable[[list[str]], pa.Table],
                trained_on: Collection[str] | None) -> dict:
    columns = [c for c in COLUMNS if c in names]
    if not {"category", "needs_review"} <= set(columns):
        return live_quality(pa.table({"category": pa.array([], pa.string()),
                                      "needs_review": pa.array([], pa.bool_())}))
    return live_quality(read(columns), trained_on)


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


class LiveCheck(NamedTuple):
    """What a day's live quality says about its tags: failures, and what is only reported."""

    problems: list[str]
    warnings: list[str]


def check_live_quality(quality: dict, expected: dict, *, version: str,
                       accuracy_margin: float = LoopPolicy.live_accuracy_margin,
                       review_margin: float = LoopPolicy.review_rate_margin,
                       min_verified: int = LoopPolicy.min_verified) -> LiveCheck:
    """Problems (empty: fine) and warnings of one day's quality against the tagging
    version's figures.

    Accuracy fails only when even its upper confidence bound is more than the margin
    below the lower bound of the holdout accuracy: both are small samples (a day of 30
    verified rows; a holdout of a few photos while the store is young); the accuracy
    itself more than the margin below is a warning (the on-call live-quality alert). The
    review rate fails above the version's expected rate plus the margin; a version whose
    policy reviews everything never fails for it (the safe answer): that is a warning.
    """
    problems, warnings = [], []
    n, accuracy = quality.get("verified", 0), quality.get("accuracy")
    holdout = expected.get("holdout_accuracy")
    if holdout is not None and accuracy is not None and n >= min_verified:
        upper = 1 - float(wilson_lower_bound(np.array(round(n * (1 - accuracy))), np.array(n),
                                             Z))
        photos = expected.get("holdout_photos")
        lower = (float(wilson_lower_bound(np.array(round(photos * holdout)), np.array(photos), Z))
                 if photos else holdout)
        if upper < lower - accuracy_margin:
            problems.append(
                f"live accuracy {accuracy:.3f} on {n} verified rows (upper bound {upper:.3f}) "
                f"is more than {accuracy_margin:g} below {version}'s holdout accuracy "
                f"{holdout:.3f}" + (f" on {photos} photos (lower bound {lower:.3f})"
                                    if photos else ""))
        elif accuracy < holdout - accuracy_margin:  # a drop too small a sample cannot prove
            warnings.append(f"live accuracy {accuracy:.3f} on {n} verified rows is more than "
                            f"{accuracy_margin:g} below {version}'s holdout accuracy "
                            f"{holdout:.3f} (too few rows to fail the day)")
    rate, wanted = quality.get("review_rate"), expected.get("expected_review_rate")
    if expected.get("reviews_everything"):
        warnings.append(reviews_everything_warning(version, rate))
    elif rate is not None and wanted is not None and rate > min(1.0, wanted + review_margin):
        problems.append(f"needs-review rate {rate:.3f} > {version}'s expected {wanted:.3f} "
                        f"(from its held-out real photos) + {review_margin:g}")
    return LiveCheck(problems, warnings)


def reviews_everything_warning(version: str, rate: float | None) -> str:
    shown = "" if rate is None else f" (needs-review rate {rate:.3f})"
    return (f"{version}'s review policy sends every tag to review{shown}: it had too "
            "little held-out evidence to certify its target precision, so search gets no "
            "trusted tag from it")


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
