"""Temperature scaling of class probabilities and the calibration error it reduces."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0
_EPS = 1e-12


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T): T > 1 softens over-confident probabilities; float32 (n, k)."""
    logits = np.log(np.clip(np.asarray(probs, np.float64), _EPS, 1.0)) / float(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return (scaled / scaled.sum(axis=1, keepdims=True)).astype(np.float32)


def _nll(probs: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    scaled = apply_temperature(probs, temperature).astype(np.float64)
    return float(-np.log(np.clip(scaled[np.arange(len(labels)), labels], _EPS, 1.0)).mean())


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of held-out labels."""
    probs, labels = np.asarray(probs), np.asarray(labels, dtype=np.int64)
    if len(probs) == 0 or len(probs) != len(labels):
        raise ValueError(f"need matching, non-empty probs and labels, got {len(probs)} "
                         f"and {len(labels)}")
    result = minimize_scalar(
        lambda log_t: _nll(probs, labels, float(np.exp(log_t))),
        bounds=(np.log(MIN_TEMPERATURE), np.log(MAX_TEMPERATURE)), method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width confidence bin: mean confidence, accuracy (nan if empty), count."""
    confidence = np.asarray(probs).max(axis=1)
    correct = np.asarray(probs).argmax(axis=1) == np.asarray(labels)
    which = np.clip((confidence * n_bins).astype(int), 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, confidence, n_bins) / counts
        accuracy = np.bincount(which, correct.astype(float), n_bins) / counts
    return mean_conf, accuracy, counts


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15
                               ) -> float:
    """Top-label ECE: count-weighted |accuracy - confidence| over equal-width bins."""
    mean_conf, accuracy, counts = reliability_bins(probs, labels, n_bins)
    filled = counts > 0
    if not filled.any():
        return 0.0
    gaps = np.abs(accuracy[filled] - mean_conf[filled])
    return float((gaps * counts[filled]).sum() / counts.sum())
