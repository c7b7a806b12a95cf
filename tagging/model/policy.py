"""Which tags need a person: the review policy stored with each model version.

A tag is published without review only when its calibrated confidence reaches the policy's
threshold. The threshold is chosen on labelled held-out photos (ideally real ones) as the
lowest one whose published tags are precise enough *with statistical margin* (a one-sided
Wilson lower confidence bound, not the point estimate), so that a small labelled set does
not buy an optimistic threshold. Without enough evidence, every tag is reviewed.
"""

from __future__ import annotations

import numpy as np

from tagging.model.calibration import apply_temperature, fit_temperature

DEFAULT_THRESHOLD = 0.5
DEFAULT_Z = 1.0  # one-sided ~84 % confidence for the precision bound
MIN_PUBLISHED = 10  # never trust a precision estimated on fewer published tags
# Fewer labelled photos of evidence: everything is reviewed. Chosen by re-sampling the
# loop's own evidence (out-of-fold + held-out predictions of verified photos): a threshold
# chosen on 60 photos published 0.94-precise tags on the rest, on >= 100 photos 0.956-0.962
# (benchmarks/README.md, "the review policy's evidence").
MIN_EVIDENCE = 100


def needs_review(probs: np.ndarray, policy: dict) -> np.ndarray:
    """True where the top probability is below policy["confidence_threshold"] (0.5 default).

    A threshold >= 1.0 means: review everything.
    """
    probs = np.asarray(probs)
    if len(probs) == 0:
        return np.zeros(0, bool)
    threshold = float(policy.get("confidence_threshold", DEFAULT_THRESHOLD))
    return (probs.max(axis=1) < threshold) | (threshold >= 1.0)


def wilson_lower_bound(successes: np.ndarray, totals: np.ndarray, z: float) -> np.ndarray:
    """One-sided Wilson score lower bound of a binomial proportion (0 where totals == 0)."""
    n = np.maximum(np.asarray(totals, np.float64), 1)
    p = np.asarray(successes, np.float64) / n
    centre = p + z * z / (2 * n)
    margin = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return np.where(np.asarray(totals) > 0, (centre - margin) / (1 + z * z / n), 0.0)


def lowest_safe_threshold(confidence: np.ndarray, correct: np.ndarray, target: float, z: float,
                          min_published: int = MIN_PUBLISHED) -> float | None:
    """Lowest confidence cut whose published tags' precision bound reaches target (or None)."""
    order = np.argsort(-confidence, kind="stable")
    ranked = confidence[order]
    published = np.arange(1, len(order) + 1)
    bound = wilson_lower_bound(np.cumsum(correct[order]), published, z)
    ok = (bound >= target) & (published >= min_published)
    ok[:-1] &= ranked[1:] < ranked[:-1]  # a cut can only fall between distinct confidences
    return float(ranked[np.nonzero(ok)[0].max()]) if ok.any() else None


def choose_review_policy(probs: np.ndarray, labels: np.ndarray, *,
                         target_precision: float,
                         z: float = DEFAULT_Z, min_threshold: float = DEFAULT_THRESHOLD,
                         min_evidence: int = MIN_EVIDENCE, source: str = "") -> dict:
    """The threshold so that the tags published without review reach `target_precision`.

    probs: calibrated (n, 10) on labelled photos the model did not train on, as close as
    possible to the photos it will tag (real labelled photos beat augmented validation
    images); labels: (n,). Below `min_evidence` photos every tag is reviewed. Returns a
    JSON-able policy for `needs_review`.
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    cut = (lowest_safe_threshold(confidence, correct, target_precision, z)
           if len(labels) >= min_evidence else None)
    policy = {
        "confidence_threshold": round(max(cut, min_threshold), 6) if cut else 1.0,
        "target_precision": target_precision,
        "method": (f"lowest confidence threshold whose Wilson lower bound (z={z:g}) of "
                   f"precision on the selection set >= target (>= {min_evidence} photos)"),
        "selection_samples": len(labels),
        "selection_source": source,
    }
    published = ~needs_review(probs, policy)
    policy["selection_precision"] = float(correct[published].mean()) if published.any() else None
    policy["selection_coverage"] = float(published.mean()) if len(labels) else 0.0
    return policy


def fit_calibration(probs: np.ndarray, labels: np.ndarray, target_precision: float,
                    source: str = "") -> tuple[float, dict]:
    """Temperature, then the review policy on the calibrated probabilities.

    probs: temperature-1 probabilities of labelled photos the model did not train on.
    """
    temperature = fit_temperature(probs, labels)
    policy = choose_review_policy(apply_temperature(probs, temperature), labels,
                                  target_precision=target_precision, source=source)
    return temperature, policy
