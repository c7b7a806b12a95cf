"""The learning curve of the loop (issue 10): what N verified labels buy on real photos.

    .venv/bin/python benchmarks/bench_learning.py                  # 0, 50, ..., 200 labels
    .venv/bin/python benchmarks/bench_learning.py --quick          # 12k images, 4 epochs

The dev photos (`../shared/real-photos-dev`, or --dev) play the shop's verified labels: they
are split as the label store splits products (a fixed hash of product_id, ~20 % held out),
and the train side is revealed in a seeded order, 0, 50, 100, 150 and all ~200 labels. At
each point the default recipe is trained exactly as a scheduled retrain does (train side in
the fit set, temperature and review threshold from the holdout, one fit), then measured on:

* the dev holdout (~50 photos, what the gate and the review policy see);
* the stream photos (`../shared/real-photos-stream`, 724, never trained on, other sources
  and class counts): accuracy; precision and coverage of the tags the version publishes
  without review; and the best coverage any threshold reaches at 0.95 precision there;
* the Fashion-MNIST test split.

Prints a table, writes WORKDIR/learning.json and WORKDIR/learning_curve.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

REPO = Path(__file__).resolve().parents[1]
# The shared data folder: beside the clone, or the one holding $TAGGING_FASHION_MNIST_DIR.
SHARED = (Path(os.environ["TAGGING_FASHION_MNIST_DIR"]).parent
          if os.environ.get("TAGGING_FASHION_MNIST_DIR") else REPO.parent / "shared")
POINTS = (0, 50, 100, 150, 200)
TARGETS = {"accuracy": 0.80, "precision": 0.95, "coverage": 0.60, "fashion_mnist": 0.88}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {message}",
          file=sys.stderr, flush=True)


def coverage_at_precision(probs: np.ndarray, labels: np.ndarray, target: float) -> float:
    """Largest share of photos whose most confident tags are at least `target` precise."""
    order = np.argsort(-probs.max(axis=1), kind="stable")
    correct = (probs.argmax(axis=1) == labels)[order]
    precision = np.cumsum(correct) / np.arange(1, len(correct) + 1)
    ok = np.nonzero(precision >= target)[0]
    return float((ok.max() + 1) / len(labels)) if len(ok) else 0.0


def revealed(table: pa.Table, n: int, seed: int) -> pa.Table:
    """The holdout plus the first n train-side products of a seeded order."""
    train = table.filter(pc.invert(table["holdout"]))
    order = np.random.default_rng(seed).permutation(train.num_rows)[:n]
    keep = set(train.take(pa.array(order, pa.int64()))["product_id"].to_pylist())
    mask = [h or p in keep for h, p in zip(table["holdout"].to_pylist(),
                                           table["product_id"].to_pylist(), strict=True)]
    return table.filter(pa.array(mask))


def measure(n: int, table: pa.Table, stream, data, config, seed: int) -> dict:
    from tagging.loop.labelled import Labelled
    from tagging.model.policy import needs_review
    from tagging.model.train import train_model

    labelled = Labelled.of(revealed(table, n, seed), "real-photos-dev")
    start = time.process_time()
    result = train_model(config, data, labelled)
    cpu = time.process_time() - start
    classifier = result.classifier
    probs = classifier.predict_proba(stream.pixels)
    correct = probs.argmax(axis=1) == stream.labels
    published = ~needs_review(probs, classifier.review_policy)
    dev = result.metrics.get("real_photos", {})
    point = {
        "labels": len(labelled.train.labels),
        "holdout_photos": len(labelled.holdout.labels),
        "dev_holdout_accuracy": dev.get("accuracy"),
        "dev_holdout_precision": dev.get("published_precision"),
        "dev_holdout_coverage": dev.get("published_coverage"),
        "threshold": classifier.review_policy.get("confidence_threshold"),
        "stream_accuracy": round(float(correct.mean()), 4),
        "stream_precision": round(float(correct[published].mean()), 4) if published.any()
        else None,
        "stream_coverage": round(float(published.mean()), 4),
        "stream_coverage_at_095": round(coverage_at_precision(probs, stream.labels, 0.95), 4),
        "fashion_mnist_accuracy": result.metrics["accuracy"],
        "epochs": result.metrics["epochs_run"],
        "train_cpu_s": round(cpu, 1),
        "fit_wall_s": round(result.wall_time_s, 1),
    }
    log(json.dumps(point))
    return point


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [p["labels"] for p in points]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label, style in (
            ("stream_accuracy", "accuracy, stream photos (724, never trained on)", "o-"),
            ("dev_holdout_accuracy", "accuracy, dev holdout (~50)", "o--"),
            ("stream_coverage_at_095", "coverage at 0.95 precision, stream (best threshold)",
             "^-"),
            ("stream_coverage", "coverage of the version's policy, stream", "^--"),
            ("stream_precision", "precision of the version's policy, stream", "s:")):
        ax.plot(x, [np.nan if p[key] is None else p[key] for p in points], style, label=label)
    ax.axhline(TARGETS["accuracy"], color="C0", alpha=0.3, linestyle="-.")
    ax.axhline(TARGETS["coverage"], color="C2", alpha=0.3, linestyle="-.")
    ax.set_xlabel("verified labels on the train side (real-photos-dev)")
    ax.set_ylabel("share")
    ax.set_ylim(0, 1)
    ax.set_title("learning curve: verified labels -> quality on real photos")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dev", type=Path, default=SHARED / "real-photos-dev")
    parser.add_argument("--stream", type=Path, default=SHARED / "real-photos-stream")
    parser.add_argument("--workdir", type=Path, default=REPO / "var" / "bench-learning")
    parser.add_argument("--points", type=int, nargs="+", default=list(POINTS))
    parser.add_argument("--seed", type=int, default=0, help="order the labels are revealed in")
    parser.add_argument("--quick", action="store_true", help="12k images, 4 epochs")
    args = parser.parse_args()

    from tagging.loop.harvest import photo_folder_rows
    from tagging.loop.labelstore import deduplicate
    from tagging.model.data import load_fashion_mnist
    from tagging.model.train import TrainConfig
    from tagging.photos.folder import load_labelled_photos

    config = TrainConfig(**({"train_subset": 12_000, "epochs": 4} if args.quick else {}))
    data = load_fashion_mnist()
    table = deduplicate(photo_folder_rows(args.dev).table)
    stream = load_labelled_photos(args.stream)
    log(f"dev: {table.num_rows} photos ({pc.sum(table['holdout']).as_py()} held out); "
        f"stream: {len(stream.labels)} photos; config {config.to_dict()}")
    points = [measure(n, table, stream, data, config, args.seed) for n in args.points]
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / "learning.json").write_text(json.dumps(
        {"config": config.to_dict(), "seed": args.seed, "points": points}, indent=2))
    plot(points, args.workdir / "learning_curve.png")

    columns = ("labels", "dev_holdout_accuracy", "stream_accuracy", "stream_precision",
               "stream_coverage", "stream_coverage_at_095", "fashion_mnist_accuracy",
               "train_cpu_s")
    print(" | ".join(columns))
    for p in points:
        print(" | ".join(str(p[c]) for c in columns))
    last = points[-1]
    verdicts = {
        "accuracy >= 0.80 on held-out real photos (stream)": last["stream_accuracy"] >= 0.80,
        ">= 0.95 precision at >= 0.60 coverage (stream, best threshold)":
            last["stream_coverage_at_095"] >= 0.60,
        "Fashion-MNIST test accuracy >= 0.88": last["fashion_mnist_accuracy"] >= 0.88,
    }
    for what, ok in verdicts.items():
        print(f"{'met' if ok else 'NOT met'}: {what}")
    print(f"written: {args.workdir / 'learning.json'}, {args.workdir / 'learning_curve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
