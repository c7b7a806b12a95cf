"""Live quality: rows with `verified_category` are the ground truth of that day's tags.

Recorded per published partition (in its manifest, by tagging.catalogue.publish): the
accuracy of the published tags on verified rows, the precision of the tags not flagged
needs_review, their coverage (share of verified rows published without review), the review
rate of all tagged rows, and the distribution of predicted categories. Only verified rows
whose product the tagging version did **not** train on are graded (a version is not graded
on its own homework): the holdout side of the label split (tagging.labels.is_holdout), and,
when the caller knows the version's train-side products (`trained_on`, data the learning
loop gives: tagging.loop.quality.trained_by), every other product it did not learn from
(labels verified after it was trained, audit answers). `verified` counts them;
`verified_all` counts every verified row.

`check_live_quality` (validation) compares a day with what the version that tagged it
expects from its held-out real photos (`expected`, data too: tagging.loop.quality
.expectations). Every publication of a day is on record: tagging.catalogue.publications.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tagging.catalogue.published import published_schema, read_published
from tagging.labels import CATEGORY_SLUGS, is_holdout, parse_label
from tagging.model.policy import wilson_lower_bound
from tagging.settings import LoopPolicy

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
