"""How the weights are fitted: two stages, and the cross-fit that gives the review policy
out-of-fold evidence.

Every array here is in the model's input (tagging.model.inputs): uint8 images for `pixels`,
encoder features otherwise (FashionInputs); photo-like variants only exist for pixels.

Stage 1, the **base**: Fashion-MNIST (plus photo-like variants), early stopping on (variants
of) the validation split; no real photo. It depends only on the recipe and Fashion-MNIST, so a
retrain reuses the base stored with an earlier version (`base.npz`, same `base_key`): seeded
and deterministic, a reused base is the base it would train.

Stage 2, the **photos**: the base fine-tuned for `photo_epochs` on the train-side photos
(`real_photo_repeats` copies each) with the Fashion-MNIST fit split replayed (`replay`
images), plus photo-like variants of all of it (drawn once per retrain).

**Cross-fit**: stage 2 again once per fold of the train-side photos, without that fold, from
the same base with the same recipe: every train-side photo is predicted by a model that
never saw it, made as the shipped one is (on 1 - 1/k of the photos, so a little weaker: a
careful estimate). These out-of-fold predictions join the holdout's as the review policy's
evidence, so the policy does not wait weeks for the holdout to grow.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np

from tagging.labels import NUM_CLASSES
from tagging.model.config import TrainConfig
from tagging.model.data import FashionMNIST, fingerprint
from tagging.model.features import FashionInputs, fashion_mnist_training_set
from tagging.photos.folder import LabelledPhotos, stratified_folds

BASE_FILE = "base.npz"
# What the base depends on, besides Fashion-MNIST's training split.
BASE_FIELDS = ("model_input", "hidden_units", "dropout", "epochs", "batch_size",
               "learning_rate", "validation_fraction", "patience", "seed", "train_subset",
               "photo_variants")


@dataclass
class Base:
    """The photo-free stage: weights, its training history, and the validation split."""

    weights: list[np.ndarray]
    history: dict[str, list[float]]
    key: str
    seconds: float  # 0.0 when reused
    x_val: np.ndarray
    y_val: np.ndarray
    x_fit: np.ndarray  # the fit split (replayed in stage 2)
    y_fit: np.ndarray


@dataclass
class PhotoFitSet:
    """Stage 2's fit set, drawn once: which photo each row comes from (-1: Fashion-MNIST)."""

    x: np.ndarray
    y: np.ndarray
    origin: np.ndarray


def base_key(config: TrainConfig, data: FashionMNIST) -> str:
    """Content hash of what the base is trained from: its recipe, its input (an encoder's
    weights) and Fashion-MNIST."""
    x, y = fashion_mnist_training_set(config, data)
    recipe = {f: getattr(config, f) for f in BASE_FIELDS}
    text = (json.dumps(recipe, sort_keys=True, default=list) + config.input.key
            + fingerprint(x, y))
    return hashlib.sha256(text.encode()).hexdigest()


def fit_base(config: TrainConfig, data: FashionMNIST, fashion: FashionInputs,
             stored: tuple[list[np.ndarray], dict] | None = None,
             progress: str | None = None) -> Base:
    """Train the base (or take `stored` = (weights, history) with the same base_key)."""
    import keras

    x_fit, y_fit, x_val, y_val = split_validation(fashion.x_train, fashion.y_train,
                                                  config.validation_fraction, config.seed)
    key = base_key(config, data)
    if stored is not None:
        return Base(stored[0], stored[1], key, 0.0, x_val, y_val, x_fit, y_fit)
    seed_everything(config.seed)
    x_aug, y_aug = with_photo_variants(config, x_fit, y_fit,
                                       round(config.photo_variants * len(x_fit)), config.seed)
    x_photo_val, y_photo_val = with_photo_variants(config, x_val, y_val, len(x_val),
                                                   config.seed + 1)
    prepare = config.input.prepare
    model = build_model(config, -(-len(x_aug) // config.batch_size), config.epochs,
                        config.learning_rate)
    callbacks = [keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True)]
    if progress:
        callbacks.append(rich_progress(config.epochs, progress))
    start = time.perf_counter()
    history = model.fit(prepare(x_aug), y_aug,
                        validation_data=(prepare(x_photo_val), y_photo_val),
                        batch_size=config.batch_size, epochs=config.epochs, shuffle=True,
                        callbacks=callbacks, verbose=0)
    history = {k: [float(v) for v in values] for k, values in history.history.items()}
    return Base(model.get_weights(), history, key, time.perf_counter() - start,
                x_val, y_val, x_fit, y_fit)


def photo_fit_set(config: TrainConfig, base: Base, photos: LabelledPhotos) -> PhotoFitSet:
    """Replayed Fashion-MNIST + repeated photos + photo-like variants (seeded, drawn once)."""
    rng = np.random.default_rng(config.seed)
    n = len(base.x_fit) if config.replay is None else min(config.replay, len(base.x_fit))
    pick = np.sort(rng.choice(len(base.x_fit), n, replace=False))
    repeats = config.real_photo_repeats
    inputs = photos.inputs(config.input.key).astype(base.x_fit.dtype, copy=False)
    x = np.concatenate([base.x_fit[pick], np.repeat(inputs, repeats, 0)])
    y = np.concatenate([base.y_fit[pick],
                        np.repeat(photos.labels.astype(base.y_fit.dtype), repeats)])
    origin = np.concatenate([np.full(n, -1), np.repeat(np.arange(len(photos.labels)), repeats)])
    count = round(config.photo_variants * len(x)) if config.input.is_pixels else 0
    if count:
        from tagging.model.augment import augment_training_set

        chosen = np.random.default_rng(config.seed + 2).choice(len(x), count,
                                                               replace=count > len(x))
        x = np.concatenate([x, augment_training_set(x[chosen], config.seed + 2)])
        y, origin = np.concatenate([y, y[chosen]]), np.concatenate([origin, origin[chosen]])
    return PhotoFitSet(x, y, origin)


def fine_tune(config: TrainConfig, base: Base, fit_set: PhotoFitSet,
              keep: np.ndarray | None = None):
    """Stage 2 from the base on the fit set's rows (`keep`: a row mask); a Keras model."""
    x, y = (fit_set.x, fit_set.y) if keep is None else (fit_set.x[keep], fit_set.y[keep])
    seed_everything(config.seed)
    model = build_model(config, -(-len(x) // config.batch_size), config.photo_epochs,
                        config.photo_learning_rate)
    model.set_weights(base.weights)
    model.fit(config.input.prepare(x), y, batch_size=config.batch_size,
              epochs=config.photo_epochs, shuffle=True, verbose=0)
    return model


def out_of_fold(config: TrainConfig, base: Base, fit_set: PhotoFitSet, photos: LabelledPhotos
                ) -> np.ndarray:
    """Temperature-1 probabilities of each train-side photo by the fold model without it."""
    from tagging.model.inference import Classifier

    folds = stratified_folds(photos.labels, photos.sources, config.cross_fit_folds, config.seed)
    probs = np.zeros((len(photos.labels), len(base.weights[-1])), np.float32)
    for k in np.unique(folds):
        held = np.nonzero(folds == k)[0]
        model = fine_tune(config, base, fit_set, ~np.isin(fit_set.origin, held))
        fold_model = Classifier.from_keras(model, calibration(config), config.input)
        probs[held] = fold_model.predict_proba(photos.inputs(config.input.key)[held])
    return probs


# ---------------------------------------------------------------- building blocks


def calibration(config: TrainConfig) -> dict:
    """How a model of this recipe predicts, before its temperature is fitted."""
    return {"mirror_average": config.mirror_average and config.input.is_pixels}


def dense_model(config: TrainConfig):
    """Flatten -> (Dense ReLU, Dropout) per hidden size -> Dense 10 softmax, on the prepared
    input (pixels in [0, 1], or features)."""
    import keras

    layers = [keras.Input(config.input.shape, name=config.input.name.replace("-", "_")),
              keras.layers.Flatten()]
    for units in config.hidden_units:
        layers.append(keras.layers.Dense(units, activation="relu"))
        if config.dropout:
            layers.append(keras.layers.Dropout(config.dropout))
    layers.append(keras.layers.Dense(NUM_CLASSES, activation="softmax"))
    return keras.Sequential(layers, name="dense_classifier")


def build_model(config: TrainConfig, steps_per_epoch: int, epochs: int, learning_rate: float):
    """dense_model compiled: Adam, learning rate cosine-decayed from `learning_rate` over
    `epochs`, sparse categorical cross-entropy."""
    import keras

    model = dense_model(config)
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=steps_per_epoch * epochs, alpha=0.05)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def seed_everything(seed: int) -> None:
    """A fresh Keras session, seeded, with deterministic ops (same data -> same weights)."""
    import keras
    import tensorflow as tf

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def split_validation(x: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    """Seeded shuffle, then the last `fraction` of rows is the validation set."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(len(x) * fraction))
    train, val = order[:-n_val], order[-n_val:]
    return x[train], y[train], x[val], y[val]


def with_photo_variants(config: TrainConfig, x: np.ndarray, y: np.ndarray, count: int,
                        seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x and y, plus `count` photo-like variants of randomly chosen images (same labels);
    features have none."""
    if not count or not config.input.is_pixels:
        return x, y
    from tagging.model.augment import augment_training_set

    pick = np.random.default_rng(seed).choice(len(x), count, replace=count > len(x))
    return (np.concatenate([x, augment_training_set(x[pick], seed)]),
            np.concatenate([y, y[pick]]))


def rich_progress(epochs: int, label: str):
    """A Keras callback drawing one rich progress bar over the epochs, with accuracies."""
    import keras
    from rich.progress import Progress

    class RichProgress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = Progress(*Progress.get_default_columns(), "{task.fields[info]}")
            self.bar.start()
            self.task = self.bar.add_task(label, total=epochs, info="")

        def on_epoch_end(self, epoch, logs=None):
            info = " ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items() if "acc" in k)
            self.bar.update(self.task, advance=1, info=info)

        def on_train_end(self, logs=None):
            self.bar.update(self.task, total=self.bar.tasks[0].completed)
            self.bar.stop()

    return RichProgress()
