"""Evaluate the tagger on labelled real photos: figures per source, and pictures to look at.

The photos go through exactly the tagging path (tagging.imaging in worker processes, then
the classifier's calibrated probabilities and its review policy).
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from tagging.calibration import expected_calibration_error, reliability_bins
from tagging.imaging import ImageError, preprocess
from tagging.labels import CATEGORY_NAMES, NUM_CLASSES
from tagging.review import needs_review

SOURCE_PATTERN = re.compile(r"^\d+_([A-Za-z]+)_")  # e.g. 3_cd_017.jpg -> cd


def read_manifest(manifest_csv: Path) -> list[tuple[str, int, str]]:
    """(file, label, source) per row; source from a `source` column or the file prefix."""
    with open(manifest_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"file", "label"} <= set(rows[0]):
        raise ValueError(f"{manifest_csv}: need a header with at least 'file' and 'label'")
    out = []
    for row in rows:
        match = SOURCE_PATTERN.match(row["file"])
        source = row.get("source") or (match.group(1) if match else "all")
        label = int(row["label"])
        if not 0 <= label < NUM_CLASSES:
            raise ValueError(f"{manifest_csv}: label {label} of {row['file']} is not 0-9")
        out.append((row["file"], label, source))
    return out


def _load_and_preprocess(path: str) -> tuple[np.ndarray | None, str | None]:
    try:
        return preprocess(Path(path).read_bytes()), None
    except ImageError as e:
        return None, str(e)
    except OSError as e:
        return None, f"unreadable: {e.strerror or e}"


def preprocess_files(paths: list[Path], workers: int | None = None
                     ) -> tuple[np.ndarray, list[str | None]]:
    """Decode and preprocess in worker processes; failed images are zeros plus their error."""
    with ProcessPoolExecutor(workers or os.cpu_count()) as pool:
        results = list(pool.map(_load_and_preprocess, [str(p) for p in paths], chunksize=8))
    pixels = np.stack([p if p is not None else np.zeros((28, 28), np.uint8) for p, _ in results])
    return pixels, [error for _, error in results]


def labelled_photos(root: Path, workers: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Preprocessed pixels and labels of a labelled photo set (root/manifest.csv, root/images).

    Photos that cannot be decoded are left out (in production they are errors, not tags).
    """
    rows = read_manifest(root / "manifest.csv")
    pixels, errors = preprocess_files([root / "images" / f for f, _, _ in rows], workers)
    ok = np.array([e is None for e in errors])
    labels = np.array([label for _, label, _ in rows])
    return pixels[ok], labels[ok], f"{int(ok.sum())} labelled photos in {root}"


def evaluate_photos(images_dir: Path, manifest_csv: Path, classifier, out_dir: Path,
                    workers: int | None = None) -> dict:
    """Accuracy (overall, per source, per class), review precision / coverage, ECE, pictures."""
    rows = read_manifest(Path(manifest_csv))
    files = [f for f, _, _ in rows]
    labels = np.array([label for _, label, _ in rows])
    sources = np.array([s for _, _, s in rows])
    pixels, errors = preprocess_files([Path(images_dir) / f for f in files], workers)
    failed = np.array([e is not None for e in errors])
    probs = np.asarray(classifier.predict_proba(pixels), np.float32)
    predicted = np.where(failed, -1, probs.argmax(axis=1))
    flagged = failed | needs_review(probs, classifier.review_policy)
    report = {
        "images": len(rows),
        "errors": {f: e for f, e in zip(files, errors, strict=True) if e is not None},
        "review_policy": classifier.review_policy,
        **_scores(predicted, labels, flagged),
        "ece": expected_calibration_error(probs[~failed], labels[~failed]),
        "per_source": {s: _scores(predicted[sources == s], labels[sources == s],
                                  flagged[sources == s]) for s in sorted(set(sources))},
        "per_class_recall": {CATEGORY_NAMES[k]: _mean(predicted[labels == k] == k)
                             for k in range(NUM_CLASSES)},
        "confusion": _confusion(predicted, labels).tolist(),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _plots(out_dir, pixels, probs, predicted, labels, flagged, failed, report)
    _write_json(out_dir / "report.json", report)
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


def _confusion(predicted: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rows: true class; columns: predicted class, then a last column for errors."""
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES + 1), np.int64)
    np.add.at(matrix, (labels, np.where(predicted < 0, NUM_CLASSES, predicted)), 1)
    return matrix


def _write_json(path: Path, data: dict) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        json.dump(data, f, indent=2)
    os.replace(f.name, path)


def _plots(out_dir: Path, pixels, probs, predicted, labels, flagged, failed, report) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _contact_sheet(plt, out_dir / "contact_sheet.png", pixels, predicted, labels, flagged)
    _reliability(plt, out_dir / "reliability.png", probs[~failed], labels[~failed], report)
    _confusion_plot(plt, out_dir / "confusion.png", np.array(report["confusion"]))


SHORT = ("tee", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
         "boot")


def _contact_sheet(plt, path: Path, pixels, predicted, labels, flagged, columns: int = 16
                   ) -> None:
    """Every preprocessed input, enlarged: predicted / true; red frame = wrong, '?' = review."""
    rows = -(-len(pixels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.1, rows * 1.3), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if i >= len(pixels):
            continue
        wrong = predicted[i] != labels[i]
        ax.imshow(pixels[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        guess = SHORT[predicted[i]] if predicted[i] >= 0 else "error"
        mark = "?" if flagged[i] else ""
        ax.set_title(f"{guess}{mark}\n{SHORT[labels[i]]}", fontsize=7,
                     color="red" if wrong else "green")
        if wrong:
            ax.add_patch(plt.Rectangle((-0.5, -0.5), 28, 28, fill=False, edgecolor="red",
                                       linewidth=2))
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


def _confusion_plot(plt, path: Path, matrix: np.ndarray) -> None:
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(matrix, cmap="Blues")
    for (r, c), value in np.ndenumerate(matrix):
        if value:
            ax.text(c, r, str(value), ha="center", va="center", fontsize=8,
                    color="white" if value > matrix.max() / 2 else "black")
    ax.set_xticks(range(NUM_CLASSES + 1), [*SHORT, "error"], rotation=45, ha="right")
    ax.set_yticks(range(NUM_CLASSES), SHORT)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
