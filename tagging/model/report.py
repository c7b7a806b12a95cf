"""Evaluation metrics and the training report (JSON + PNG plots)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tagging.labels import CATEGORY_NAMES, NUM_CLASSES


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, *,
                     error_column: bool = False) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class; with `error_column`, a last
    column counts the rows that could not be predicted (y_pred < 0)."""
    columns = NUM_CLASSES + error_column
    y_pred = np.where(y_pred < 0, NUM_CLASSES, y_pred) if error_column else y_pred
    return np.bincount(np.asarray(y_true, np.int64) * columns + y_pred,
                       minlength=NUM_CLASSES * columns).reshape(NUM_CLASSES, columns)


def evaluate(probs: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, log loss, per-class precision/recall/F1 and the confusion matrix."""
    labels = labels.astype(np.int64)
    pred = probs.argmax(axis=1)
    cm = confusion_matrix(labels, pred)
    tp = np.diag(cm).astype(float)
    precision = np.divide(tp, cm.sum(axis=0), out=np.zeros(NUM_CLASSES), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(axis=1), out=np.zeros(NUM_CLASSES), where=cm.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall,
                   out=np.zeros(NUM_CLASSES), where=(precision + recall) > 0)
    p_true = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    return {
        "accuracy": round(float((pred == labels).mean()), 5),
        "loss": round(float(-np.log(p_true).mean()), 5),
        "per_class_precision": [round(float(v), 4) for v in precision],
        "per_class_recall": [round(float(v), 4) for v in recall],
        "per_class_f1": [round(float(v), 4) for v in f1],
        "confusion_matrix": cm.tolist(),
        "n": len(labels),
    }


def plot_confusion(cm: np.ndarray, path: Path, title: str,
                   labels: Sequence[str] = CATEGORY_NAMES,
                   predicted_labels: Sequence[str] | None = None) -> None:
    """The confusion matrix as a heat map with counts; `predicted_labels` name the columns
    when they differ from the rows (e.g. an extra "error" column)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = labels if predicted_labels is None else predicted_labels
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = cm.max() / 2
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                color="white" if v > threshold else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_learning_curves(history: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        epochs = range(1, len(history[metric]) + 1)
        ax.plot(epochs, history[metric], label="train")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out_dir: Path, metrics: dict, history: dict[str, list[float]]) -> None:
    """metrics.json, learning_curves.png and confusion_matrix.png in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(
        {"test": metrics, "history": history}, indent=2, default=float))
    plot_learning_curves(history, out_dir / "learning_curves.png")
    plot_confusion(np.array(metrics["confusion_matrix"]), out_dir / "confusion_matrix.png",
                   f"Fashion-MNIST test split: accuracy {metrics['accuracy']:.4f}")
