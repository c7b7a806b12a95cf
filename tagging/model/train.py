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
from tagging.errors import ConfigError
from tagging.labels import NUM_CLASSES
from tagging.loop.holdout import holdout_comparison
from tagging.loop.labelled import Labelled, load_labelled
from tagging.model.calibration import apply_temperature, fit_temperature
from tagging.model.data import FashionMNIST, fingerprint, load_fashion_mnist
from tagging.model.inference import WEIGHTS_FILE, Classifier
from tagging.model.policy import choose_review_policy, fit_calibration
from tagging.model.registry import open_registry
from tagging.model.report import evaluate, write_report
from tagging.photos.evaluate import PhotoCheck, check_on_photos
from tagging.photos.folder import LabelledPhotos, stratified_folds
from tagging.settings import LoopPolicy

log = logging.getLogger(__name__)

MIN_CALIBRATION_PHOTOS = 30  # fewer held-out photos: the temperature comes from validation


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
    # Toward real photos (tagging.model.augment / calibration / review):
    photo_variants: float = 0.5  # photo-like variants added, as a fraction of the fit set
    real_photos: str | None = None  # labelled real photos (dir with manifest.csv + images/)
    label_store: str | None = None  # the shop's verified labels (tagging.loop.labelstore root)
    real_photo_repeats: int = 60  # copies of each train-side photo in the fit set; 0: none
    review_target_precision: float = LoopPolicy.target_precision  # of tags published unreviewed
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
    photo_check: PhotoCheck | None = None  # held-out figures on the real-photo holdout


@dataclass
class Candidate:
    version: str
    reused: bool  # True: the champion itself (same data and config), so nothing to gate
    reason: str = ""  # why the champion was reused although the data changed


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


def train_model(config: TrainConfig, data: FashionMNIST, labelled: Labelled | None = None,
                progress: bool = False) -> TrainResult:
    """Seeded training, calibration and review policy; evaluation on the test split.

    labelled: the real photos of `config.label_store` / `config.real_photos`, split by
    product. The train side is trained on (unless real_photo_repeats is 0); the holdout,
    never trained on, calibrates the temperature and chooses the review threshold, so one
    fit is enough (no cross-fitting).
    """
    train_side = labelled.train if labelled is not None and config.real_photo_repeats else None
    model, history, wall, (x_val, y_val) = fit(config, data, train_side,
                                                "training" if progress else None)
    classifier = Classifier.from_keras(model)
    check_same_predictions(model, classifier, data.x_test[:2000])
    classifier.mirror_average = config.mirror_average
    holdout = labelled.holdout if labelled is not None else None
    photo_check = calibrate_on(classifier, holdout, x_val, y_val, config.review_target_precision)
    metrics = evaluate(classifier.predict_proba(data.x_test), data.y_test)
    metrics["epochs_run"] = len(history["loss"])
    metrics["train_wall_time_s"] = round(wall, 2)
    if labelled is not None:
        metrics["labels"] = labelled.summary()
    if photo_check is not None:
        metrics["real_photos"] = photo_check.summary()
        metrics["real_photos"]["expected_review_rate"] = expected_review_rate(
            classifier.review_policy)
    log.info("trained %d epochs in %.1f s: test accuracy %.4f",
             metrics["epochs_run"], wall, metrics["accuracy"])
    return TrainResult(model, classifier, history, metrics,
                       training_fingerprint(config, data, labelled), photo_check)


def expected_review_rate(policy: dict) -> float:
    """The review rate the stored policy produces on the photos it was chosen on (1.0 for a
    policy that reviews everything), what validation holds a day's review rate against."""
    if float(policy.get("confidence_threshold", 0.0)) >= 1.0:
        return 1.0
    return round(1 - float(policy.get("selection_coverage", 0.0)), 4)


def calibrate_on(classifier: Classifier, holdout: LabelledPhotos | None, x_val: np.ndarray,
                 y_val: np.ndarray, target_precision: float) -> PhotoCheck | None:
    """Temperature and review policy from the real-photo holdout, else the validation split.

    The holdout is never trained on, so its predictions are honest: no refits are needed.
    A temperature fitted on a handful of photos is noise, so below MIN_CALIBRATION_PHOTOS
    it comes from the validation split; the threshold still comes from the holdout, which
    (Wilson bound, at least 10 published tags) reviews everything until there is evidence.
    The held-out figures cross-validate this calibration within the holdout.
    """
    if holdout is None or not len(holdout.labels):
        calibrate(classifier, classifier.predict_proba(x_val), y_val, target_precision,
                  "the validation split")
        return None
    classifier.temperature = 1.0
    probs = classifier.predict_proba(holdout.pixels)
    if len(holdout.labels) >= MIN_CALIBRATION_PHOTOS:
        calibrate(classifier, probs, holdout.labels, target_precision, holdout.description)
    else:
        classifier.temperature = fit_temperature(classifier.predict_proba(x_val), y_val)
        classifier.review_policy = choose_review_policy(
            apply_temperature(probs, classifier.temperature), holdout.labels,
            target_precision=target_precision, source=holdout.description)
    folds = stratified_folds(holdout.labels, holdout.sources, min(5, len(holdout.labels)), 0)
    return check_on_photos(holdout, probs, folds, target_precision)


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


def fashion_mnist_training_set(config: TrainConfig, data: FashionMNIST
                               ) -> tuple[np.ndarray, np.ndarray]:
    if config.train_subset:
        return data.x_train[: config.train_subset], data.y_train[: config.train_subset]
    return data.x_train, data.y_train


def training_fingerprint(config: TrainConfig, data: FashionMNIST,
                         labelled: Labelled | None) -> str:
    """Content hash of what is trained on: Fashion-MNIST and the train side of the labels.

    The holdout is left out on purpose: held-out labels arriving alone are no reason to
    retrain (they sharpen the gate's comparison, not the model).
    """
    x, y = fashion_mnist_training_set(config, data)
    if labelled is not None:
        x = np.concatenate([x, labelled.train.pixels])
        y = np.concatenate([y, labelled.train.labels.astype(y.dtype)])
    return fingerprint(x, y)


def with_photo_variants(x: np.ndarray, y: np.ndarray, count: int, seed: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """x and y, plus `count` photo-like variants of randomly chosen images (same labels)."""
    if not count:
        return x, y
    from tagging.model.augment import augment_training_set

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
                   labelled: Labelled | None) -> str | None:
    """A version trained on the same data with the same config: the champion if it is one,
    else the newest such version."""
    wanted = {"hyperparameters": config.to_dict(),
              "training_data_fingerprint": training_fingerprint(config, data, labelled)}
    champion = registry.champion()
    for info in sorted(registry.list_versions(), key=lambda i: (i.version == champion, i.version),
                       reverse=True):
        if all(info.metadata[k] == v for k, v in wanted.items()):
            return info.version
    return None


def too_few_new_labels(registry: Registry, config: TrainConfig, labelled: Labelled | None,
                       min_new_labels: int) -> str | None:
    """Why the champion is kept although the data changed (None: retrain).

    Only when the champion has the same recipe: fewer than `min_new_labels` train-side
    labels were harvested since the newest one it was trained on.
    """
    champion = registry.champion()
    if not min_new_labels or labelled is None or champion is None:
        return None
    meta = registry.get(champion).metadata
    if meta["hyperparameters"] != config.to_dict():
        return None
    since = meta["metrics"].get("labels", {}).get("harvested_through")
    new = labelled.new_train_labels(since)
    if new >= min_new_labels:
        log.info("%d new train-side labels since champion %s was trained (>= %d): retraining",
                 new, champion, min_new_labels)
        return None
    return (f"only {new} new train-side labels since champion {champion} was trained "
            f"(< min_new_labels {min_new_labels}): reusing it")


def train_candidate(config: TrainConfig, *, registry_root: Path | str,
                    data_dir: Path | str | None = None, created_by: str,
                    reuse_if_unchanged: bool = True, min_new_labels: int = 0,
                    progress: bool = False) -> Candidate:
    """Train, evaluate, write the report and register a candidate (not promoted).

    min_new_labels: with reuse_if_unchanged, keep the champion (same recipe) until at
    least this many new train-side labels arrived since it was trained.
    """
    registry = open_registry(registry_root)
    data = load_fashion_mnist(data_dir)
    labelled = load_labelled(config.label_store, config.real_photos)
    if reuse_if_unchanged and (version := trained_before(registry, config, data, labelled)):
        reused = version == registry.champion()
        log.info("%s was trained on the same data with the same config: %s", version,
                 "reusing the champion" if reused else "not training it again; gating it")
        return Candidate(version, reused=reused)
    if reuse_if_unchanged and (why := too_few_new_labels(registry, config, labelled,
                                                         min_new_labels)):
        log.info("%s", why)
        return Candidate(str(registry.champion()), reused=True, reason=why)
    result = train_model(config, data, labelled, progress=progress)
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
    """Train a candidate, then promote it through the gate (unless the champion was reused);
    with real photos, the gate compares it with the champion on their current holdout."""
    candidate = train_candidate(config, registry_root=registry_root, data_dir=data_dir,
                                created_by=created_by, reuse_if_unchanged=reuse_if_unchanged,
                                progress=progress)
    if candidate.reused:
        return candidate, None
    registry = open_registry(registry_root)
    labelled = load_labelled(config.label_store, config.real_photos)
    scores = holdout_comparison(registry_root, candidate.version, registry.champion(),
                                labelled.holdout if labelled is not None else None)
    decision = registry.promote(candidate.version, policy=policy, actor=created_by,
                                holdout=scores)
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
