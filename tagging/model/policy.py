"""Which tags need a person: the review policy stored with each model version.

A tag is published without review only when its calibrated confidence reaches the policy's
threshold. The threshold is chosen on labelled held-out photos (ideally real ones) as the
lowest one whose published tags are precise enough *with statistical margin* (a one-sided
Wilson lower confidence bound, not the point estimate), so that a small labelled set does
not buy an optimistic threshold. Without enough evidence, every tag is reviewed.

Classes differ: shoes and bags are easy, shirts are not, and one threshold for all makes the
easy classes wait behind the hard ones. A predicted class with enough evidence of its own
(MIN_CLASS_EVIDENCE photos predicted as it) whose own photos certify a lower cut, chosen
the same way on them only, publishes from that cut; no class is held above the global
threshold (raising the hard classes too cost the encoder a tenth of its coverage for less
than a point of precision: benchmarks/README.md, "Per-class thresholds").
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
MIN_CLASS_EVIDENCE = 40  # photos predicted as a class before it gets its own threshold


def thresholds(policy: dict, classes: int) -> np.ndarray:
    """The confidence threshold of each predicted class (its own, else the global one)."""
    out = np.full(classes, float(policy.get("confidence_threshold", DEFAULT_THRESHOLD)))
    for k, value in enumerate(policy.get("class_thresholds") or []):
        if value is not None and k < classes:
            out[k] = float(value)
    return out


def needs_review(probs: np.ndarray, policy: dict) -> np.ndarray:
    """True where the top probability is below the threshold of the predicted class
    (policy["class_thresholds"][k], else policy["confidence_threshold"], 0.5 by default).

    A threshold >= 1.0 means: review every tag of that class.
    """
    probs = np.asarray(probs)
    if len(probs) == 0:
        return np.zeros(0, bool)
    cut = thresholds(policy, probs.shape[1])[probs.argmax(axis=1)]
    return (probs.max(axis=1) < cut) | (cut >= 1.0)


def reviews_everything(policy: dict) -> bool:
    """Does the policy send every tag to a person (no class has a threshold below 1.0)?"""
    classes = len(policy.get("class_thresholds") or []) or 1
    return bool((thresholds(policy, classes) >= 1.0).all())


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
                         min_evidence: int = MIN_EVIDENCE,
                         min_class_evidence: int | None = None,
                         source: str = "") -> dict:
    """The thresholds so that the tags published without review reach `target_precision`.

    probs: calibrated (n, 10) on labelled photos the model did not train on, as close as
    possible to the photos it will tag (real labelled photos beat augmented validation
    images); labels: (n,). Below `min_evidence` photos every tag is reviewed; a predicted
    class with `min_class_evidence` photos gets its own threshold. Returns a JSON-able
    policy for `needs_review`.
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
    min_class_evidence = min_class_evidence or MIN_CLASS_EVIDENCE
    confidence = probs.max(axis=1)
    predicted = probs.argmax(axis=1)
    correct = predicted == labels
    enough = len(labels) >= min_evidence

    def safe_cut(rows: np.ndarray) -> float | None:
        cut = lowest_safe_threshold(confidence[rows], correct[rows], target_precision, z)
        return round(max(cut, min_threshold), 6) if cut else None

    overall = (enough and safe_cut(np.ones(len(labels), bool))) or 1.0
    own = [safe_cut(predicted == k) if enough and (predicted == k).sum() >= min_class_evidence
           else None for k in range(probs.shape[1])]
    policy = {
        "confidence_threshold": overall,
        "class_thresholds": [cut if cut is not None and cut < overall else None for cut in own],
        "target_precision": target_precision,
        "method": (f"lowest confidence threshold whose Wilson lower bound (z={z:g}) of "
                   f"precision on the selection set >= target (>= {min_evidence} photos); "
                   f"lower for a predicted class its own photos certify "
                   f"(>= {min_class_evidence})"),
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
