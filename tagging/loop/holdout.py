"""Score registered versions on the current real-photo holdout, for the gate.

The holdout grows as merchandisers verify products, so the figures a version stored when it
was trained were measured on fewer photos than today's. At gate time the champion is scored
again, with the candidate, on the same photos; model_registry (which knows nothing about
photos) only receives the resulting numbers. Each version is scored through its own input,
so a pixels champion and an encoder candidate are compared on the same photos.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tagging.model.data import fingerprint
from tagging.model.inference import Classifier
from tagging.photos.folder import LabelledPhotos

log = logging.getLogger(__name__)


def correct_on(classifier: Classifier, photos: LabelledPhotos) -> np.ndarray:
    """Which photos a version classifies right, through its own input (pixels, or its
    encoder's features as harvested), predicting exactly as the tagger does."""
    inputs = photos.inputs(classifier.model_input.key)
    return classifier.predict_proba(inputs).argmax(axis=1) == photos.labels


def holdout_comparison(registry_root: Path | str, candidate: str, champion: str | None,
                       holdout: LabelledPhotos | None) -> dict | None:
    """Paired figures of candidate and champion on the same held-out photos (None: nothing
    to compare: no champion, or no holdout yet)."""
    if champion is None or holdout is None or not len(holdout.labels) or candidate == champion:
        return None
    versions = [Classifier.from_registry(registry_root, v) for v in (candidate, champion)]
    missing = [c for c in versions if c.model_input.key not in ("pixels", *holdout.features)]
    if missing:
        log.warning("the holdout has no %s features (harvested with %s): %s cannot be scored "
                    "on it; the gate compares the stored figures", missing[0].model_input.name,
                    ", ".join(holdout.features) or "none", missing[0].version)
        return None
    ours, theirs = (correct_on(c, holdout) for c in versions)
    return {
        "photos": len(holdout.labels),
        "description": holdout.description,
        "fingerprint": fingerprint(holdout.pixels, holdout.labels),
        "candidate": candidate,
        "champion": champion,
        "candidate_accuracy": round(float(ours.mean()), 4),
        "champion_accuracy": round(float(theirs.mean()), 4),
        "candidate_only_correct": int((ours & ~theirs).sum()),
        "champion_only_correct": int((theirs & ~ours).sum()),
    }
