"""The two-stage fit and the cross-fit's out-of-fold evidence, with real TensorFlow (tiny)."""

from __future__ import annotations

import numpy as np

from tagging.model.config import TrainConfig
from tagging.model.features import fashion_inputs
from tagging.model.fitting import base_key, fit_base, out_of_fold, photo_fit_set
from tagging.model.inference import Classifier
from tagging.photos.folder import LabelledPhotos

TINY = {"model_input": "pixels", "train_subset": 1000, "epochs": 1, "hidden_units": (64,),
        "photo_variants": 0.0}


def noise_photos(n: int, seed: int) -> LabelledPhotos:
    """Random images with random labels: learnable only by heart."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    return LabelledPhotos(pixels, labels, np.array(["shop"] * n), [f"{i}.png" for i in range(n)],
                          f"{n} noise photos")


def test_out_of_fold_predictions_come_from_models_that_never_saw_the_photo(fmnist):
    """Photos learnt by heart: the shipped model knows them, the fold models cannot."""
    config = TrainConfig(**TINY, real_photo_repeats=40, photo_epochs=6, replay=500,
                         cross_fit_folds=4, mirror_average=False, dropout=0.0)
    photos = noise_photos(40, 1)
    base = fit_base(config, fmnist, fashion_inputs(config, fmnist))
    fit_set = photo_fit_set(config, base, photos)
    assert (fit_set.origin == -1).sum() == 500
    assert np.array_equal(np.bincount(fit_set.origin[fit_set.origin >= 0]), np.full(40, 40))
    from tagging.model.fitting import fine_tune

    shipped = Classifier.from_keras(fine_tune(config, base, fit_set))
    in_sample = (shipped.predict_proba(photos.pixels).argmax(1) == photos.labels).mean()
    oof = out_of_fold(config, base, fit_set, photos)
    out_of_sample = (oof.argmax(1) == photos.labels).mean()
    assert in_sample >= 0.9 and out_of_sample <= 0.35, (in_sample, out_of_sample)
    np.testing.assert_allclose(oof.sum(axis=1), 1.0, atol=1e-5)


def test_the_base_depends_on_its_recipe_and_data_only(fmnist):
    config = TrainConfig(**TINY)
    key = base_key(config, fmnist)
    assert base_key(TrainConfig(**TINY, photo_epochs=9, real_photo_repeats=3), fmnist) == key
    assert base_key(TrainConfig(**{**TINY, "epochs": 2}), fmnist) != key
    assert base_key(TrainConfig(**{**TINY, "seed": 1}), fmnist) != key
    encoder = {**TINY, "model_input": "efficientnet-lite0"}
    assert base_key(TrainConfig(**encoder), fmnist) != key  # another input, another base
    fashion = fashion_inputs(config, fmnist)
    stored = fit_base(config, fmnist, fashion)
    again = fit_base(config, fmnist, fashion, (stored.weights, stored.history))
    assert again.seconds == 0.0 and again.key == key and again.history == stored.history
    retrained = fit_base(config, fmnist, fashion)  # deterministic: reusing is training again
    for a, b in zip(stored.weights, retrained.weights, strict=True):
        np.testing.assert_array_equal(a, b)
