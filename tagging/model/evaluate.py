"""Evaluate the tagger on labelled real photos: figures per source, and pictures to look at.

`evaluate_photos` sends new photos through exactly the tagging path (tagging.photos.decode
and .segment in worker processes, then the classifier's calibrated probabilities and its
review policy).
`check_on_photos` gives the honest figures on the photos a model was trained and calibrated
on: each photo is scored by a model, temperature and review policy fitted without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_registry.files import atomic_write_json
from tagging.labels import CATEGORY_NAMES, CATEGORY_SHORT, CATEGORY_SLUGS, NUM_CLASSES
from tagging.model.calibration import (
    apply_temperature,
    expected_calibration_error,
    reliability_bins,
)
from tagging.model.data import fingerprint
from tagging.model.inference import Classifier, PhotoModel
from tagging.model.policy import fit_calibration, needs_review
from tagging.model.report import confusion_matrix, plot_confusion
from tagging.photos.folder import LabelledPhotos, preprocess_files, read_photo_manifest


def evaluate_photos(images_dir: Path, manifest_csv: Path, classifier: Classifier,
                    out_dir: Path, workers: int | None = None) -> dict:
    """Accuracy (overall, per source, per class), review precision / coverage, ECE, pictures.

    The photos go through the tagger's path: decoded and rendered in worker processes, then
    the version's input (pixels, or its encoder's features) and its review policy.
    """
    model = PhotoModel.of(classifier)
    rows = read_photo_manifest(Path(manifest_csv))
    files = [f for f, _, _ in rows]
    (rendered,), errors = preprocess_files([Path(images_dir) / f for f in files], workers,
                                           (model.form,))
    failed = np.array([e is not None for e in errors])
    probs = np.asarray(model.predict_proba(rendered, ~failed), np.float32)
    flagged = failed | needs_review(probs, classifier.review_policy)
    return photo_report(
        out_dir, rendered, probs, np.array([label for _, label, _ in rows]),
        np.array([s for _, _, s in rows]), flagged, failed,
        {"images": len(rows), "review_policy": classifier.review_policy,
         "errors": {f: e for f, e in zip(files, errors, strict=True) if e is not None}})


@dataclass
class PhotoCheck:
    """Held-out predictions on labelled photos, with held-out review decisions."""

    photos: LabelledPhotos
    probs: np.ndarray  # calibrated, by a temperature fitted without the photo's fold
    flagged: np.ndarray  # needs_review, by a policy fitted without the photo's fold

    def summary(self) -> dict:
        """The headline figures (stored with the model version)."""
        correct = self.probs.argmax(axis=1) == self.photos.labels
        sources = self.photos.sources
        return {
            "photos": self.photos.description,
            "n": len(self.photos.labels),
            "fingerprint": fingerprint(self.photos.pixels, self.photos.labels),
            "accuracy": _mean(correct),
            "published_precision": _mean(correct[~self.flagged]),
            "published_coverage": _mean(~self.flagged),
            "ece": expected_calibration_error(self.probs, self.photos.labels),
            "accuracy_per_source": {s: _mean(correct[sources == s]) for s in sorted(set(sources))},
        }

    def write(self, out_dir: Path, review_policy: dict) -> dict:
        """report.json, contact sheet, reliability diagram and confusion matrix in out_dir."""
        return photo_report(out_dir, self.photos.pixels, self.probs, self.photos.labels,
                            self.photos.sources, self.flagged, np.zeros(len(self.probs), bool),
                            {"photos": self.photos.description, "review_policy": review_policy,
                             "held_out": "each photo scored by a model, temperature and review "
                                         "policy fitted without its fold",
                             "misclassified": self.misclassified()})

    def misclassified(self) -> dict[str, str]:
        """file -> predicted category, for the photos the held-out model got wrong."""
        predicted = self.probs.argmax(axis=1)
        return {f: CATEGORY_SLUGS[p] for f, p, y in
                zip(self.photos.files, predicted, self.photos.labels, strict=True) if p != y}


def check_on_photos(photos: LabelledPhotos, probs: np.ndarray, folds: np.ndarray,
                    target_precision: float) -> PhotoCheck:
    """Cross-validate the temperature and review policy over folds of held-out probabilities.

    probs: temperature-1 probabilities of photos the model did not train on (out-of-fold
    when it did). Each fold is calibrated and reviewed by what the other folds fit.
    """
    calibrated = np.zeros_like(probs, dtype=np.float32)
    flagged = np.zeros(len(probs), bool)
    for k in np.unique(folds):
        held, rest = folds == k, folds != k
        temperature, policy = fit_calibration(probs[rest], photos.labels[rest],
                                              target_precision)
        calibrated[held] = apply_temperature(probs[held], temperature)
        flagged[held] = needs_review(calibrated[held], policy)
    return PhotoCheck(photos, calibrated, flagged)


def photo_report(out_dir: Path, pixels: np.ndarray, probs: np.ndarray, labels: np.ndarray,
                 sources: np.ndarray, flagged: np.ndarray, failed: np.ndarray,
                 header: dict) -> dict:
    """Figures of predictions on labelled photos, written with pictures to out_dir."""
    predicted = np.where(failed, -1, probs.argmax(axis=1))
    report = {
        **header,
        **_scores(predicted, labels, flagged),
        "ece": expected_calibration_error(probs[~failed], labels[~failed]),
        "per_source": {s: _scores(predicted[sources == s], labels[sources == s],
                                  flagged[sources == s]) for s in sorted(set(sources))},
        "per_class_recall": {CATEGORY_NAMES[k]: _mean(predicted[labels == k] == k)
                             for k in range(NUM_CLASSES)},
        "confusion": confusion_matrix(labels, predicted, error_column=True).tolist(),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _plots(out_dir, pixels, probs, predicted, labels, flagged, failed, report)
    atomic_write_json(out_dir / "report.json", report)
    return report


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _scores(predicted: np.ndarray, labels: np.ndarray, flagged: np.ndarray) -> dict:
    correct = predicted == labels
    published = ~flagged
    return {
        "n": len(labels),
        "accuracy": _mean(correct),
        "published_precision": _mean(correct[published]),
        "published_coverage": _mean(published),
    }


def _plots(out_dir: Path, pixels, probs, predicted, labels, flagged, failed, report) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _contact_sheet(plt, out_dir / "contact_sheet.png", pixels, predicted, labels, flagged)
    _reliability(plt, out_dir / "reliability.png", probs[~failed], labels[~failed], report)
    plot_confusion(np.array(report["confusion"]), out_dir / "confusion.png",
                   "labelled real photos", CATEGORY_SHORT, [*CATEGORY_SHORT, "error"])


def _contact_sheet(plt, path: Path, pixels, predicted, labels, flagged, columns: int = 16
                   ) -> None:
    """Every rendered input (28x28 grey, or an encoder's RGB): predicted / true; red frame =
    wrong, '?' = review."""
    rows = -(-len(pixels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.1, rows * 1.3), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if i >= len(pixels):
            continue
        wrong = predicted[i] != labels[i]
        ax.imshow(pixels[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        guess = CATEGORY_SHORT[predicted[i]] if predicted[i] >= 0 else "error"
        mark = "?" if flagged[i] else ""
        ax.set_title(f"{guess}{mark}\n{CATEGORY_SHORT[labels[i]]}", fontsize=7,
                     color="red" if wrong else "green")
        if wrong:
            ax.add_patch(plt.Rectangle((-0.5, -0.5), pixels.shape[2], pixels.shape[1],
                                       fill=False, edgecolor="red", linewidth=2))
    fig.suptitle("predicted (? = needs review) / true", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _reliability(plt, path: Path, probs, labels, report) -> None:
    mean_conf, accuracy, counts = reliability_bins(probs, labels, 10)
    centres = (np.arange(10) + 0.5) / 10
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=(3, 1), sharex=True)
    top.bar(centres, np.nan_to_num(accuracy), width=0.1, edgecolor="black", label="accuracy")
    top.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    top.plot(mean_conf, accuracy, "o", color="orange", label="mean confidence")
    top.set_ylabel("accuracy")
    top.set_title(f"reliability (ECE {report['ece']:.3f})")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, counts, width=0.1, edgecolor="black")
    bottom.set_xlabel("confidence of the predicted class")
    bottom.set_ylabel("photos")
    threshold = report["review_policy"].get("confidence_threshold")
    if threshold is not None:
        for ax in (top, bottom):
            ax.axvline(threshold, color="red", linestyle=":")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

