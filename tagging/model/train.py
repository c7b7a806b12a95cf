"""Train, evaluate and register the dense classifier."""

from __future__ import annotations

import logging
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from model_registry import Registry
from tagging.model.calibration import apply_temperature, fit_temperature
from tagging.model.config import TrainConfig
from tagging.model.data import FashionMNIST, fingerprint, load_fashion_mnist
from tagging.model.evaluate import PhotoCheck, check_on_photos
from tagging.model.features import fashion_inputs, fashion_mnist_training_set
from tagging.model.fitting import (
    BASE_FILE,
    Base,
    base_key,
    calibration,
    dense_model,
    fine_tune,
    fit_base,
    out_of_fold,
    photo_fit_set,
)
from tagging.model.inference import WEIGHTS_FILE, Classifier
from tagging.model.policy import choose_review_policy, fit_calibration, reviews_everything
from tagging.model.registry import open_registry
from tagging.model.report import evaluate, write_report
from tagging.photos.folder import LabelledPhotos, stratified_folds

log = logging.getLogger(__name__)

MIN_CALIBRATION_PHOTOS = 30  # fewer held-out photos: the temperature comes from validation


class Labels(Protocol):
    """The labelled photos a training learns from, split by product into the train side and
    the fixed holdout (tagging.loop.labelled.Labelled provides them)."""

    train: LabelledPhotos
    holdout: LabelledPhotos

    def summary(self) -> dict: ...

    def new_train_labels(self, since: str | None) -> int: ...


@dataclass
class TrainResult:
    model: object  # keras.Model
    classifier: Classifier
    history: dict[str, list[float]]
    metrics: dict
    train_fingerprint: str
    photo_check: PhotoCheck | None = None  # held-out figures on the review policy's evidence
    base: Base | None = None  # the photo-free stage (stored with the version, reused)


@dataclass
class Candidate:
    version: str
    reused: bool  # True: the champion itself (same data and config), so nothing to gate
    reason: str = ""  # why the champion was reused although the data changed


def train_model(config: TrainConfig, data: FashionMNIST, labelled: Labels | None = None,
                progress: bool = False, stored_base: tuple[list, dict] | None = None
                ) -> TrainResult:
    """Seeded two-stage training, calibration and review policy; evaluation on the test split.

    labelled: the real photos of `config.label_store` / `config.real_photos`, split by
    product. The base (Fashion-MNIST only; `stored_base` = (weights, history) of the same
    base_key skips it) is fine-tuned on the train side (unless real_photo_repeats is 0).
    The review policy's evidence: the holdout (never trained on) and the train side's
    out-of-fold predictions (cross-fit, tagging.model.fitting). Review answers (the audit
    slice's too) are labels of the store like any other, so they are evidence either way.
    """
    fashion = fashion_inputs(config, data, progress=progress)
    base = fit_base(config, data, fashion, stored_base, "training" if progress else None)
    train_side = labelled.train if labelled is not None and config.real_photo_repeats else None
    start = time.perf_counter()
    if train_side is not None and len(train_side.labels):
        fit_set = photo_fit_set(config, base, train_side)
        model = fine_tune(config, base, fit_set)
        oof = (out_of_fold(config, base, fit_set, train_side)
               if config.cross_fit_folds >= 2 and len(train_side.labels) >= config.cross_fit_folds
               else None)
    else:
        model, oof = dense_model(config), None  # the base itself (no optimizer state)
        model.set_weights(base.weights)
    photo_seconds = time.perf_counter() - start
    classifier = Classifier.from_keras(model, model_input=config.input)
    check_same_predictions(model, classifier, fashion.x_test[:2000])
    classifier.mirror_average = calibration(config)["mirror_average"]
    evidence, probs = policy_evidence(classifier, labelled, train_side, oof)
    photo_check = calibrate_on(classifier, evidence, probs, base.x_val, base.y_val,
                               config.review_target_precision)
    metrics = evaluate(classifier.predict_proba(fashion.x_test), fashion.y_test)
    metrics["epochs_run"] = len(base.history.get("loss", []))
    metrics["train_wall_time_s"] = round(base.seconds + photo_seconds, 2)
    metrics["photo_stage_wall_time_s"] = round(photo_seconds, 2)
    if labelled is not None:
        metrics["labels"] = labelled.summary()
    if photo_check is not None:
        metrics["real_photos"] = photo_check.summary()
        metrics["real_photos"]["evidence"] = evidence_counts(labelled, oof)
        metrics["real_photos"]["expected_review_rate"] = expected_review_rate(
            classifier.review_policy)
    log.info("trained in %.1f s (base %s, photo stage %.1f s): test accuracy %.4f",
             base.seconds + photo_seconds, "reused" if not base.seconds else
             f"{metrics['epochs_run']} epochs", photo_seconds, metrics["accuracy"])
    return TrainResult(model, classifier, base.history, metrics,
                       training_fingerprint(config, data, labelled), photo_check, base)


def policy_evidence(classifier: Classifier, labelled: Labels | None,
                    train_side: LabelledPhotos | None, oof: np.ndarray | None
                    ) -> tuple[LabelledPhotos | None, np.ndarray | None]:
    """Labelled photos the shipped model (or, out of fold, its fold model) did not train on,
    with their temperature-1 probabilities: holdout, out-of-fold train side."""
    classifier.temperature = 1.0
    parts = []
    if labelled is not None and len(labelled.holdout.labels):
        holdout = labelled.holdout
        parts.append((holdout, classifier.predict_proba(
            holdout.inputs(classifier.model_input.key))))
    if oof is not None and train_side is not None:
        parts.append((train_side, oof))
    if not parts:
        return None, None
    photos = join_photos([p for p, _ in parts])
    return photos, np.concatenate([probs for _, probs in parts]).astype(np.float32)


def evidence_counts(labelled: Labels | None, oof: np.ndarray | None) -> dict[str, int]:
    return {"holdout": len(labelled.holdout.labels) if labelled is not None else 0,
            "out_of_fold": len(oof) if oof is not None else 0}


def join_photos(parts: list[LabelledPhotos]) -> LabelledPhotos:
    """One LabelledPhotos of several (their descriptions joined)."""
    if len(parts) == 1:
        return parts[0]
    shared = set.intersection(*(set(p.features) for p in parts))
    return LabelledPhotos(np.concatenate([p.pixels for p in parts]),
                          np.concatenate([p.labels for p in parts]),
                          np.concatenate([p.sources for p in parts]),
                          [f for p in parts for f in p.files],
                          " + ".join(p.description for p in parts),
                          {k: np.concatenate([p.features[k] for p in parts]) for k in shared})


def expected_review_rate(policy: dict) -> float:
    """The review rate the stored policy produces on the photos it was chosen on (1.0 for a
    policy that reviews everything), what validation holds a day's review rate against."""
    if reviews_everything(policy):
        return 1.0
    return round(1 - float(policy.get("selection_coverage", 0.0)), 4)


def calibrate_on(classifier: Classifier, evidence: LabelledPhotos | None,
                 probs: np.ndarray | None, x_val: np.ndarray, y_val: np.ndarray,
                 target_precision: float) -> PhotoCheck | None:
    """Temperature and review policy from the real-photo evidence, else the validation split.

    evidence, probs: labelled photos the model did not train on (holdout, out of fold) and
    their temperature-1 probabilities. A temperature fitted on a handful of photos is noise,
    so below MIN_CALIBRATION_PHOTOS it comes from the validation split; the threshold still
    comes from the evidence, which (Wilson bound, at least 10 published tags) reviews
    everything until there is enough. The held-out figures cross-validate this calibration
    within the evidence.
    """
    if evidence is None or not len(evidence.labels):
        calibrate(classifier, classifier.predict_proba(x_val), y_val, target_precision,
                  "the validation split")
        return None
    if len(evidence.labels) >= MIN_CALIBRATION_PHOTOS:
        calibrate(classifier, probs, evidence.labels, target_precision, evidence.description)
    else:
        classifier.temperature = fit_temperature(classifier.predict_proba(x_val), y_val)
        classifier.review_policy = choose_review_policy(
            apply_temperature(probs, classifier.temperature), evidence.labels,
            target_precision=target_precision, source=evidence.description)
    folds = stratified_folds(evidence.labels, evidence.sources, min(5, len(evidence.labels)), 0)
    return check_on_photos(evidence, probs, folds, target_precision)


def training_fingerprint(config: TrainConfig, data: FashionMNIST,
                         labelled: Labels | None) -> str:
    """Content hash of what is trained on: Fashion-MNIST and the train side of the labels.

    The holdout is left out on purpose: held-out labels arriving alone are no reason to
    retrain (they sharpen the gate's comparison, not the model).
    """
    x, y = fashion_mnist_training_set(config, data)
    if labelled is not None:
        x = np.concatenate([x, labelled.train.pixels])
        y = np.concatenate([y, labelled.train.labels.astype(y.dtype)])
    return fingerprint(x, y)


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
    keras_probs = model.predict(classifier.model_input.prepare(x), batch_size=2048, verbose=0)
    numpy_probs = classifier.predict_proba(x)
    if not (np.array_equal(keras_probs.argmax(1), numpy_probs.argmax(1))
            and np.allclose(keras_probs, numpy_probs, atol=1e-4)):
        raise RuntimeError("NumPy inference disagrees with Keras; refusing to register")


def library_versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ("tensorflow-cpu", "keras", "numpy", "pillow", "pyarrow", "ai-edge-litert")
    return {"python": platform.python_version()} | {n: version(n) for n in names}


def artifact_metadata(config: TrainConfig, result: TrainResult, data: FashionMNIST) -> dict:
    return {
        "input": config.input.describe(),
        "metrics": result.metrics,
        "eval_data_fingerprint": data.test_fingerprint,
        "training_data_fingerprint": result.train_fingerprint,
        "hyperparameters": config.to_dict(),
        "library_versions": library_versions(),
        "calibration": result.classifier.calibration,
        "review": result.classifier.review_policy,
        **({"base": {"key": result.base.key, "history": result.base.history,
                     "reused": not result.base.seconds}} if result.base is not None else {}),
    }


def stored_base(registry: Registry, key: str) -> tuple[list[np.ndarray], dict] | None:
    """(weights, history) of a base with this base_key stored with a version (the
    champion's first, then the newest), or None."""
    champion = registry.champion()
    for info in sorted(registry.list_versions(), key=lambda i: (i.version == champion, i.version),
                       reverse=True):
        base = info.metadata.get("base") or {}
        if base.get("key") == key and (info.path / BASE_FILE).is_file():
            with np.load(info.path / BASE_FILE) as npz:
                weights = [npz[f"w{i}"] for i in range(len(npz.files))]
            log.info("reusing the base stored with %s (same recipe and data)", info.version)
            return weights, base.get("history", {})
    return None


def trained_before(registry: Registry, config: TrainConfig, data: FashionMNIST,
                   labelled: Labels | None) -> str | None:
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


def too_few_new_labels(registry: Registry, config: TrainConfig, labelled: Labels | None,
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


def train_candidate(config: TrainConfig, *, labelled: Labels | None,
                    registry_root: Path | str, data_dir: Path | str | None = None,
                    created_by: str, reuse_if_unchanged: bool = True, min_new_labels: int = 0,
                    progress: bool = False) -> Candidate:
    """Train, evaluate, write the report and register a candidate (not promoted).

    labelled: the photos of `config.label_store` / `config.real_photos` (the caller reads
    them: tagging.loop.labelled.load_labelled), in `config`'s input.
    min_new_labels: with reuse_if_unchanged, keep the champion (same recipe) until at
    least this many new train-side labels arrived since it was trained.
    """
    registry = open_registry(registry_root)
    data = load_fashion_mnist(data_dir)
    if reuse_if_unchanged and (version := trained_before(registry, config, data, labelled)):
        reused = version == registry.champion()
        log.info("%s was trained on the same data with the same config: %s", version,
                 "reusing the champion" if reused else "not training it again; gating it")
        return Candidate(version, reused=reused)
    if reuse_if_unchanged and (why := too_few_new_labels(registry, config, labelled,
                                                         min_new_labels)):
        log.info("%s", why)
        return Candidate(str(registry.champion()), reused=True, reason=why)
    result = train_model(config, data, labelled, progress=progress,
                         stored_base=stored_base(registry, base_key(config, data)))
    with tempfile.TemporaryDirectory(prefix="candidate-") as tmp:
        artifact = Path(tmp)
        result.model.save(artifact / "model.keras")
        result.classifier.save(artifact / WEIGHTS_FILE)
        np.savez(artifact / BASE_FILE, **{f"w{i}": w for i, w in enumerate(result.base.weights)})
        write_report(artifact / "report", result.metrics, result.history)
        if result.photo_check is not None:
            result.photo_check.write(artifact / "report" / "real-photos",
                                    result.classifier.review_policy)
        version = registry.register(artifact, artifact_metadata(config, result, data),
                                    created_by=created_by)
    log.info("registered candidate %s (test accuracy %.4f)", version, result.metrics["accuracy"])
    return Candidate(version, reused=False)
