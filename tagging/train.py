"""Train, evaluate and register the dense classifier."""

from __future__ import annotations

import dataclasses
import logging
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_registry import GateDecision, GatePolicy, Registry
from tagging.data import FashionMNIST, fingerprint, load_fashion_mnist
from tagging.errors import ConfigError
from tagging.inference import WEIGHTS_FILE, Classifier
from tagging.labels import NUM_CLASSES
from tagging.photo_eval import PhotoCheck, check_on_photos
from tagging.real_photos import LabelledPhotos, load_labelled_photos, stratified_folds
from tagging.registry import open_registry
from tagging.report import evaluate, write_report
from tagging.review import fit_calibration

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights (stored as the version's hyper-parameters)."""

    hidden_units: tuple[int, ...] = (256, 128)
    dropout: float = 0.2  # after each hidden layer
    epochs: int = 15  # the learning rate follows a cosine decay over these; early stopping
    batch_size: int = 256
    learning_rate: float = 1e-3
    validation_fraction: float = 0.1
    patience: int = 4
    seed: int = 0
    train_subset: int | None = None  # first N training images, for quick runs
    # Toward real photos (tagging.augment / calibration / review):
    photo_variants: float = 0.5  # photo-like variants added, as a fraction of the fit set
    real_photos: str | None = None  # labelled real photos (dir with manifest.csv + images/)
    real_photo_repeats: int = 60  # copies of each real photo in the fit set; 0: calibrate only
    cross_fit_folds: int = 5  # real photos trained on: calibrate on out-of-fold predictions
    review_target_precision: float = 0.9  # precision of the tags published without review
    mirror_average: bool = True  # predict from each image and its mirror image (inference)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown training options: {sorted(unknown)}")
        values = dict(values)
        if "hidden_units" in values:
            values["hidden_units"] = tuple(int(u) for u in values["hidden_units"])
        return cls(**values)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "hidden_units": list(self.hidden_units)}


@dataclass
class TrainResult:
    model: object  # keras.Model
    classifier: Classifier
    history: dict[str, list[float]]
    metrics: dict
    train_fingerprint: str
    photo_check: PhotoCheck | None = None  # held-out figures on the labelled real photos


@dataclass
class Candidate:
    version: str
    reused: bool  # True: the champion itself (same data and config), so nothing to gate


def build_model(config: TrainConfig, steps_per_epoch: int):
    """Flatten -> (Dense ReLU, Dropout) per hidden size -> Dense 10 softmax; pixels in [0, 1]."""
    import keras

    layers = [keras.Input((28, 28), name="pixels"), keras.layers.Flatten()]
    for units in config.hidden_units:
        layers.append(keras.layers.Dense(units, activation="relu"))
        if config.dropout:
            layers.append(keras.layers.Dropout(config.dropout))
    layers.append(keras.layers.Dense(NUM_CLASSES, activation="softmax"))
    model = keras.Sequential(layers, name="dense_classifier")
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=steps_per_epoch * config.epochs, alpha=0.05)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def split_validation(x: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    """Seeded shuffle, then the last `fraction` of rows is the validation set."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(len(x) * fraction))
    train, val = order[:-n_val], order[-n_val:]
    return x[train], y[train], x[val], y[val]


def train_model(config: TrainConfig, data: FashionMNIST, photos: LabelledPhotos | None = None,
                progress: bool = False) -> TrainResult:
    """Seeded training, calibration and review policy; evaluation on the test split.

    photos: the labelled real photos of `config.real_photos`, if any. Trained on (unless
    real_photo_repeats is 0), they are predicted out of fold for the calibration.
    """
    learn_from = photos if photos is not None and config.real_photo_repeats else None
    model, history, wall, (x_val, y_val) = fit(config, data, learn_from,
                                                "training" if progress else None)
    classifier = Classifier.from_keras(model)
    check_same_predictions(model, classifier, data.x_test[:2000])
    classifier.mirror_average = config.mirror_average
    photo_check = None
    if photos is None:
        calibrate(classifier, classifier.predict_proba(x_val), y_val,
                  config.review_target_precision, "the validation split")
    else:
        if not 2 <= config.cross_fit_folds <= len(photos.labels):
            raise ConfigError(f"cross_fit_folds must be between 2 and the number of photos "
                             f"({len(photos.labels)}), got {config.cross_fit_folds}")
        folds = stratified_folds(photos.labels, photos.sources, config.cross_fit_folds,
                                 config.seed)
        if learn_from is None:
            probs, how = classifier.predict_proba(photos.pixels), photos.description
        else:
            probs = cross_fit(config, data, photos, folds, progress)
            how = f"out-of-fold predictions ({config.cross_fit_folds}-fold) on {photos.description}"
        calibrate(classifier, probs, photos.labels, config.review_target_precision, how)
        photo_check = check_on_photos(photos, probs, folds, config.review_target_precision)
    metrics = evaluate(classifier.predict_proba(data.x_test), data.y_test)
    metrics["epochs_run"] = len(history["loss"])
    metrics["train_wall_time_s"] = round(wall, 2)
    if photo_check is not None:
        metrics["real_photos"] = photo_check.summary()
    log.info("trained %d epochs in %.1f s: test accuracy %.4f",
             metrics["epochs_run"], wall, metrics["accuracy"])
    return TrainResult(model, classifier, history, metrics,
                       training_fingerprint(config, data, photos), photo_check)


def fit(config: TrainConfig, data: FashionMNIST, photos: LabelledPhotos | None,
        progress: str | None = None) -> tuple[object, dict, float, tuple[np.ndarray, np.ndarray]]:
    """Seeded fit with early stopping; returns model, history, seconds, clean validation set.

    progress: the label of a progress bar over the epochs (None: no bar).
    The fit set is Fashion-MNIST's, plus `real_photo_repeats` copies of each real photo,
    plus photo-like variants of it all; early stopping watches variants of the validation
    images too.
    """
    import keras
    import tensorflow as tf

    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    x, y = fashion_mnist_training_set(config, data)
    x_fit, y_fit, x_val, y_val = split_validation(x, y, config.validation_fraction, config.seed)
    if photos is not None:
        x_fit = np.concatenate([x_fit, np.repeat(photos.pixels, config.real_photo_repeats, 0)])
        y_fit = np.concatenate([y_fit, np.repeat(photos.labels.astype(y_fit.dtype),
                                                  config.real_photo_repeats)])
    x_fit, y_fit = with_photo_variants(x_fit, y_fit, round(config.photo_variants * len(x_fit)),
                                       config.seed)
    x_photo_val, y_photo_val = with_photo_variants(x_val, y_val, len(x_val), config.seed + 1)
    scale = np.float32(1 / 255)
    model = build_model(config, steps_per_epoch=-(-len(x_fit) // config.batch_size))
    callbacks = [keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True)]
    if progress:
        callbacks.append(rich_progress(config.epochs, progress))
    start = time.perf_counter()
    history = model.fit(
        x_fit * scale, y_fit, validation_data=(x_photo_val * scale, y_photo_val),
        batch_size=config.batch_size, epochs=config.epochs, shuffle=True,
        callbacks=callbacks, verbose=0,
    )
    return model, history.history, time.perf_counter() - start, (x_val, y_val)


def cross_fit(config: TrainConfig, data: FashionMNIST, photos: LabelledPhotos,
              folds: np.ndarray, progress: bool = False) -> np.ndarray:
    """Probabilities (temperature 1) of each photo from a model fitted without its fold."""
    probs = np.zeros((len(photos.labels), NUM_CLASSES), np.float32)
    for k in range(config.cross_fit_folds):
        held = folds == k
        log.info("cross-fit %d/%d: fitting without %d of the real photos",
                 k + 1, config.cross_fit_folds, int(held.sum()))
        label = f"cross-fit {k + 1}/{config.cross_fit_folds}" if progress else None
        model, *_ = fit(config, data, photos.subset(~held), label)
        classifier = Classifier.from_keras(model, {"mirror_average": config.mirror_average})
        probs[held] = classifier.predict_proba(photos.pixels[held])
    return probs


def fashion_mnist_training_set(config: TrainConfig, data: FashionMNIST
                               ) -> tuple[np.ndarray, np.ndarray]:
    if config.train_subset:
        return data.x_train[: config.train_subset], data.y_train[: config.train_subset]
    return data.x_train, data.y_train


def training_fingerprint(config: TrainConfig, data: FashionMNIST,
                         photos: LabelledPhotos | None) -> str:
    """Content hash of everything trained or calibrated on (Fashion-MNIST, real photos)."""
    x, y = fashion_mnist_training_set(config, data)
    if photos is not None:
        x = np.concatenate([x, photos.pixels])
        y = np.concatenate([y, photos.labels.astype(y.dtype)])
    return fingerprint(x, y)


def with_photo_variants(x: np.ndarray, y: np.ndarray, count: int, seed: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """x and y, plus `count` photo-like variants of randomly chosen images (same labels)."""
    if not count:
        return x, y
    from tagging.augment import augment_training_set

    pick = np.random.default_rng(seed).choice(len(x), count, replace=count > len(x))
    return (np.concatenate([x, augment_training_set(x[pick], seed)]),
            np.concatenate([y, y[pick]]))


def calibrate(classifier: Classifier, probs: np.ndarray, labels: np.ndarray,
              target_precision: float, source: str) -> None:
    """Temperature and review policy from held-out probabilities (temperature 1) and labels.

    Real photos are the right held-out set for a real catalogue; the validation split is
    right for Fashion-MNIST-like photos (the demo catalogue) but too trusting for real ones,
    on which the model is more often confidently wrong.
    """
    classifier.temperature, classifier.review_policy = fit_calibration(
        probs, labels, target_precision, source)
    log.info("temperature %.3f; review policy from %s", classifier.temperature, source)


def check_same_predictions(model, classifier: Classifier, x: np.ndarray) -> None:
    """The NumPy path must reproduce Keras: same classes, probabilities within 1e-4."""
    keras_probs = model.predict(x.astype(np.float32) / 255, batch_size=2048, verbose=0)
    numpy_probs = classifier.predict_proba(x)
    if not (np.array_equal(keras_probs.argmax(1), numpy_probs.argmax(1))
            and np.allclose(keras_probs, numpy_probs, atol=1e-4)):
        raise RuntimeError("NumPy inference disagrees with Keras; refusing to register")


def library_versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ("tensorflow-cpu", "keras", "numpy", "pillow", "pyarrow")
    return {"python": platform.python_version()} | {n: version(n) for n in names}


def artifact_metadata(config: TrainConfig, result: TrainResult, data: FashionMNIST) -> dict:
    return {
        "metrics": result.metrics,
        "eval_data_fingerprint": data.test_fingerprint,
        "training_data_fingerprint": result.train_fingerprint,
        "hyperparameters": config.to_dict(),
        "library_versions": library_versions(),
        "calibration": result.classifier.calibration,
        "review": result.classifier.review_policy,
    }


def trained_before(registry: Registry, config: TrainConfig, data: FashionMNIST,
                   photos: LabelledPhotos | None) -> str | None:
    """A version trained on the same data with the same config: the champion if it is one,
    else the newest such version."""
    wanted = {"hyperparameters": config.to_dict(),
              "training_data_fingerprint": training_fingerprint(config, data, photos)}
    champion = registry.champion()
    for info in sorted(registry.list_versions(), key=lambda i: (i.version == champion, i.version),
                       reverse=True):
        if all(info.metadata[k] == v for k, v in wanted.items()):
            return info.version
    return None


def train_candidate(config: TrainConfig, *, registry_root: Path | str,
                    data_dir: Path | str | None = None, created_by: str,
                    reuse_if_unchanged: bool = True, progress: bool = False) -> Candidate:
    """Train, evaluate, write the report and register a candidate (not promoted)."""
    registry = open_registry(registry_root)
    data = load_fashion_mnist(data_dir)
    photos = load_labelled_photos(config.real_photos) if config.real_photos else None
    if reuse_if_unchanged and (version := trained_before(registry, config, data, photos)):
        reused = version == registry.champion()
        log.info("%s was trained on the same data with the same config: %s", version,
                 "reusing the champion" if reused else "not training it again; gating it")
        return Candidate(version, reused=reused)
    result = train_model(config, data, photos, progress=progress)
    with tempfile.TemporaryDirectory(prefix="candidate-") as tmp:
        artifact = Path(tmp)
        result.model.save(artifact / "model.keras")
        result.classifier.save(artifact / WEIGHTS_FILE)
        write_report(artifact / "report", result.metrics, result.history)
        if result.photo_check is not None:
            result.photo_check.write(artifact / "report" / "real-photos",
                                    result.classifier.review_policy)
        version = registry.register(artifact, artifact_metadata(config, result, data),
                                    created_by=created_by)
    log.info("registered candidate %s (test accuracy %.4f)", version, result.metrics["accuracy"])
    return Candidate(version, reused=False)


def train_and_promote(config: TrainConfig, *, registry_root: Path | str,
                      data_dir: Path | str | None = None, created_by: str,
                      policy: GatePolicy, reuse_if_unchanged: bool = False,
                      progress: bool = False) -> tuple[Candidate, GateDecision | None]:
    """Train a candidate, then promote it through the gate (unless the champion was reused)."""
    candidate = train_candidate(config, registry_root=registry_root, data_dir=data_dir,
                                created_by=created_by, reuse_if_unchanged=reuse_if_unchanged,
                                progress=progress)
    if candidate.reused:
        return candidate, None
    decision = open_registry(registry_root).promote(candidate.version, policy=policy,
                                                    actor=created_by)
    return candidate, decision


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
