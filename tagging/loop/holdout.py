"""Score registered versions on the current real-photo holdout, for the gate.

The holdout grows as merchandisers verify products, so the figures a version stored when it
was trained were measured on fewer photos than today's. At gate time the champion is scored
again, with the candidate, on the same photos; model_registry (which knows nothing about
photos) only receives the resulting numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tagging.model.data import fingerprint
from tagging.model.inference import Classifier
from tagging.photos.folder import LabelledPhotos


def correct_on(registry_root: Path | str, version: str, photos: LabelledPhotos) -> np.ndarray:
    """Which photos `version` classifies right, predicting exactly as the tagger does."""
    classifier = Classifier.from_registry(registry_root, version)
    return classifier.predict_proba(photos.pixels).argmax(axis=1) == photos.labels


def holdout_comparison(registry_root: Path | str, candidate: str, champion: str | None,
                       holdout: LabelledPhotos | None) -> dict | None:
    """Paired figures of candidate and champion on the same held-out photos (None: nothing
    to compare: no champion, or no holdout yet)."""
    if champion is None or holdout is None or not len(holdout.labels) or candidate == champion:
        return None
    ours = correct_on(registry_root, candidate, holdout)
    theirs = correct_on(registry_root, champion, holdout)
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
