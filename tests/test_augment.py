"""Photo-like augmentation of Fashion-MNIST training images."""

from __future__ import annotations

import numpy as np
import pytest

from tagging.model.augment import augment_training_set


@pytest.fixture(scope="module")
def sample(fmnist) -> tuple[np.ndarray, np.ndarray]:
    return fmnist.x_train[:3000], fmnist.y_train[:3000]


def test_shape_dtype_and_determinism(sample):
    x, _ = sample
    a = augment_training_set(x[:500], seed=1)
    assert a.shape == (500, 28, 28) and a.dtype == np.uint8
    assert np.array_equal(a, augment_training_set(x[:500], seed=1))
    assert not np.array_equal(a, augment_training_set(x[:500], seed=2))
    assert not np.array_equal(a, x[:500])


def test_variants_are_framed_like_preprocessed_photos(sample):
    a = augment_training_set(sample[0], seed=0)
    rows, cols = (a > 30).any(axis=2), (a > 30).any(axis=1)
    long_edge = np.maximum(rows.sum(axis=1), cols.sum(axis=1))
    assert np.median(long_edge) >= 26  # longest edge fills the 28 px box, as in preprocess()
    assert np.median(a.reshape(len(a), -1).max(axis=1)) >= 250  # brightest pixels white
    corners = a[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == 0).mean() > 0.9  # background stays black


def test_labels_still_fit_the_variants(fmnist, sample):
    """Nearest class centroid of the originals still recognises the variants (same order)."""
    x, y = sample
    centroids = np.stack([fmnist.x_train[10_000:30_000][fmnist.y_train[10_000:30_000] == k]
                          .reshape(-1, 784).mean(axis=0) for k in range(10)])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)

    def accuracy(images: np.ndarray, labels: np.ndarray) -> float:
        flat = images.reshape(len(images), -1).astype(np.float64)
        flat /= np.linalg.norm(flat, axis=1, keepdims=True) + 1e-9
        return float(((flat @ centroids.T).argmax(axis=1) == labels).mean())

    variants = augment_training_set(x, seed=0)
    assert accuracy(x, y) > 0.6
    assert accuracy(variants, y) > 0.3  # 3x chance for this weak classifier: classes survive
    assert accuracy(variants, np.roll(y, 1)) < 0.15  # and the order is kept


def test_blank_images_survive():
    out = augment_training_set(np.zeros((5, 28, 28), np.uint8), seed=0)
    assert out.shape == (5, 28, 28) and out.max() < 255


def test_rejects_other_shapes():
    with pytest.raises(ValueError, match="shape"):
        augment_training_set(np.zeros((3, 32, 32), np.uint8), seed=0)

