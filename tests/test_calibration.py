"""Temperature scaling, calibration error, and the review policy built on calibrated output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tagging.model.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)
from tagging.model.policy import (
    choose_review_policy,
    needs_review,
    reviews_everything,
    wilson_lower_bound,
)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def synthetic(n: int, overconfidence: float, seed: int = 0, spread: float = 2.0
              ) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z); the 'model' reports softmax(z * overconfidence)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, spread, (n, 10))
    truth = softmax(logits)
    labels = (truth.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return softmax(logits * overconfidence), labels


def test_temperature_one_is_identity_and_rows_sum_to_one():
    probs, _ = synthetic(500, 1.0)
    assert np.allclose(apply_temperature(probs, 1.0), probs, atol=1e-6)
    soft = apply_temperature(probs, 3.0)
    assert soft.dtype == np.float32 and np.allclose(soft.sum(axis=1), 1, atol=1e-5)
    assert (soft.max(axis=1) <= probs.max(axis=1) + 1e-6).all()  # T > 1 softens
    assert (soft.argmax(axis=1) == probs.argmax(axis=1)).all()  # and keeps the ranking


def test_fit_recovers_the_overconfidence():
    probs, labels = synthetic(20_000, 2.0)
    assert fit_temperature(probs, labels) == pytest.approx(2.0, abs=0.15)
    calibrated, _ = synthetic(20_000, 1.0, seed=1)
    assert fit_temperature(calibrated, _) == pytest.approx(1.0, abs=0.1)


def test_temperature_scaling_reduces_calibration_error():
    probs, labels = synthetic(20_000, 2.5)
    before = expected_calibration_error(probs, labels)
    after = expected_calibration_error(apply_temperature(probs, fit_temperature(probs, labels)),
                                       labels)
    assert before > 0.1 and after < 0.02


def test_fit_rejects_mismatched_input():
    with pytest.raises(ValueError, match="matching"):
        fit_temperature(np.full((3, 10), 0.1), np.zeros(2, int))


def test_reliability_bins_and_a_hand_computed_ece():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])  # 95 % bin: half right; 60 % bin: all right
    conf, accuracy, counts = reliability_bins(probs, labels, n_bins=10)
    assert counts.sum() == 4 and counts[9] == 2 and counts[6] == 2
    assert accuracy[9] == 0.5 and accuracy[6] == 1.0 and conf[9] == pytest.approx(0.95)
    assert expected_calibration_error(probs, labels, 10) == pytest.approx((0.45 + 0.4) / 2)


def test_needs_review_default_and_policy_threshold():
    probs = np.array([[0.3, 0.7], [0.55, 0.45], [0.45, 0.55], [0.49, 0.51]])
    assert needs_review(probs, {}).tolist() == [False, False, False, False]
    flagged = needs_review(probs, {"confidence_threshold": 0.6})
    assert flagged.tolist() == [False, True, True, True]
    assert needs_review(np.full((2, 10), 0.1), {}).all()


def test_wilson_lower_bound_known_values():
    assert wilson_lower_bound(np.array([90]), np.array([100]), 1.96)[0] == pytest.approx(
        0.8256, abs=1e-4)
    assert wilson_lower_bound(np.array([0]), np.array([0]), 1.96)[0] == 0.0


def test_chosen_threshold_holds_on_fresh_data():
    """Chosen on one sample, the published tags of an independent sample are precise enough."""
    probs, labels = synthetic(2_000, 1.0, seed=2, spread=3.5)
    policy = choose_review_policy(probs, labels, target_precision=0.9, source="synthetic")
    json.dumps(policy)
    assert 0.5 <= policy["confidence_threshold"] < 1.0
    assert policy["selection_precision"] >= 0.9 and policy["selection_coverage"] > 0.2
    fresh, fresh_labels = synthetic(20_000, 1.0, seed=3, spread=3.5)
    published = ~needs_review(fresh, policy)
    precision = (fresh.argmax(axis=1) == fresh_labels)[published].mean()
    assert precision >= 0.9


def test_too_little_evidence_sends_everything_to_review():
    probs, labels = synthetic(15, 1.0)
    policy = choose_review_policy(probs, labels, target_precision=0.9)
    assert policy["confidence_threshold"] == 1.0
    assert needs_review(probs, policy).all()
    assert needs_review(np.eye(10)[:3], {"confidence_threshold": 1.0}).all()


def test_below_the_minimum_evidence_everything_is_reviewed():
    """60 perfect photos could be luck: a threshold needs >= min_evidence photos."""
    labels = np.arange(150) % 10
    probs = np.full((150, 10), 0.001 / 9)
    probs[np.arange(150), labels] = 0.999
    def threshold(n: int, **options) -> float:
        return choose_review_policy(probs[:n], labels[:n], target_precision=0.95,
                                    **options)["confidence_threshold"]

    assert threshold(60) == 1.0
    assert threshold(150) < 1.0
    assert threshold(60, min_evidence=50) < 1.0


def sink_class_sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A calibrated-looking sample, except that 15 % land confidently (and wrongly) in 'bag'."""
    probs, labels = synthetic(n, 1.0, seed=seed, spread=3.5)
    rng = np.random.default_rng(seed)
    sunk = rng.random(n) < 0.15
    probs[sunk] = 0.0001 / 9
    probs[sunk, 8] = 0.9999
    return probs, labels


def test_confidently_wrong_tags_send_their_class_to_review():
    """When the most confident tags are not precise enough, no global threshold is safe;
    the class they land in is reviewed whole, the other classes keep their own thresholds
    (one class per threshold: shoes do not wait behind shirts)."""
    probs, labels = sink_class_sample(3_000, seed=5)
    one = choose_review_policy(probs, labels, target_precision=0.9, min_class_evidence=10**9)
    assert one["confidence_threshold"] == 1.0 and reviews_everything(one)
    assert one["selection_precision"] is None and one["selection_coverage"] == 0.0
    policy = choose_review_policy(probs, labels, target_precision=0.9, source="synthetic")
    assert policy["confidence_threshold"] == 1.0 and policy["class_thresholds"][8] is None
    assert all(t is not None and t < 1.0 for k, t in enumerate(policy["class_thresholds"])
               if k != 8)
    published = ~needs_review(probs, policy)
    assert not published[probs.argmax(axis=1) == 8].any()
    assert policy["selection_precision"] >= 0.9 and policy["selection_coverage"] > 0.2
    assert not reviews_everything(policy)
    clean, clean_labels = synthetic(3_000, 1.0, seed=5, spread=3.5)
    clean_policy = choose_review_policy(clean, clean_labels, target_precision=0.9)
    assert clean_policy["confidence_threshold"] < 1.0


def test_a_stricter_margin_raises_the_threshold():
    probs, labels = synthetic(600, 1.0, seed=4, spread=3.5)
    loose = choose_review_policy(probs, labels, target_precision=0.9, z=0.0)
    strict = choose_review_policy(probs, labels, target_precision=0.9, z=2.33)
    assert strict["confidence_threshold"] > loose["confidence_threshold"]
