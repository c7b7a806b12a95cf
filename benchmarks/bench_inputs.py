"""The model's input and recipe on real photos (issue 25): the dev photos as the training
photos, graded on the stream photos (never trained on); one line per recipe.

    .venv/bin/python benchmarks/bench_inputs.py                       # the default recipe
    .venv/bin/python benchmarks/bench_inputs.py --recipes '[{"model_input": "pixels"},
        {"dropout": 0.2}, {"replay": 3000}]' --seeds 0,1,2,3
    .venv/bin/python benchmarks/bench_inputs.py --mirror              # mirror-averaged features

Each recipe (TrainConfig overrides of the default) is trained with `train_model` exactly as a
retrain does (two stages, the cross-fit, the review policy), per seed; then its version
tags the 724 stream photos through its own input (features as harvested) and is scored:
accuracy, precision and coverage of the tags its own policy publishes without review, the
best coverage any threshold reaches at 0.95 precision in hindsight, Fashion-MNIST test
accuracy, CPU seconds of the training (this process). Means over the seeds.

--mirror: the default recipe, with a photo's features averaged with its mirror image's at
test time, and/or the mirrored training photos added as labelled photos.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = (Path(os.environ["TAGGING_FASHION_MNIST_DIR"]).parent
          if os.environ.get("TAGGING_FASHION_MNIST_DIR") else REPO.parent / "shared")


def best_coverage(probs: np.ndarray, labels: np.ndarray, target: float = 0.95) -> float:
    """The largest share of photos any confidence threshold publishes at `target` precision."""
    order = np.argsort(-probs.max(axis=1))
    correct = (probs.argmax(axis=1) == labels)[order]
    precision = np.cumsum(correct) / np.arange(1, len(order) + 1)
    good = np.nonzero(precision >= target)[0]
    return float((good.max() + 1) / len(labels)) if len(good) else 0.0


def scores(classifier, inputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from tagging.model.policy import needs_review

    probs = classifier.predict_proba(inputs)
    published = ~needs_review(probs, classifier.review_policy)
    correct = probs.argmax(axis=1) == labels
    return {"accuracy": correct.mean(),
            "precision": correct[published].mean() if published.any() else np.nan,
            "coverage": published.mean(), "best_coverage": best_coverage(probs, labels)}


def photos_of(folder: Path, encoder: str):
    """A labelled folder's photos, both sides, as the label store keeps them."""
    from tagging.loop.labelled import load_labelled
    from tagging.model.train import join_photos

    labelled = load_labelled(real_photos=folder, encoder=encoder)
    return labelled, join_photos([labelled.train, labelled.holdout])


def mirror_features(folder: Path, files: list[str], encoder: str) -> np.ndarray:
    """Features of each photo's mirror image (decoded and rendered as the tagger does)."""
    from tagging.encoder import Encoder
    from tagging.model.inputs import ModelInput
    from tagging.photos.folder import preprocess_files

    form = ModelInput(encoder).photo_input
    (rendered,), _ = preprocess_files([folder / "images" / f.split("/", 1)[1] for f in files],
                                      forms=(form,))
    return Encoder.load(encoder).features(np.ascontiguousarray(rendered[:, :, ::-1]))


def with_mirrors(photos, mirrored: np.ndarray, key: str):
    """The photos plus their mirror images (same labels) as more labelled photos."""
    from tagging.photos.folder import LabelledPhotos

    return LabelledPhotos(
        np.concatenate([photos.pixels, photos.pixels[:, :, ::-1]]),
        np.concatenate([photos.labels, photos.labels]),
        np.concatenate([photos.sources, photos.sources]),
        photos.files + [f"{f}#mirror" for f in photos.files], f"{photos.description} + mirrors",
        {key: np.concatenate([photos.features[key], mirrored])})


def run_recipes(recipes: list[dict], seeds: list[int], data) -> None:
    from tagging.model.config import TrainConfig
    from tagging.model.train import train_model
    from tagging.pipeline.learn import features_for

    for recipe in recipes:
        config = TrainConfig.from_dict(recipe)
        dev, _ = photos_of(SHARED / "real-photos-dev", features_for(config))
        _, stream = photos_of(SHARED / "real-photos-stream", features_for(config))
        rows = []
        for seed in seeds:
            start = time.process_time()
            result = train_model(TrainConfig.from_dict({**recipe, "seed": seed}), data, dev)
            cpu = time.process_time() - start
            rows.append({**scores(result.classifier, stream.inputs(config.input.key),
                                  stream.labels),
                         "fashion_mnist": result.metrics["accuracy"], "train_cpu_s": cpu})
        report(json.dumps(recipe), rows)


def run_mirror(seeds: list[int], data) -> None:
    from tagging.encoder import DEFAULT_ENCODER
    from tagging.model.config import TrainConfig
    from tagging.model.inputs import ModelInput
    from tagging.model.train import train_model

    key = ModelInput(DEFAULT_ENCODER).key
    dev, _ = photos_of(SHARED / "real-photos-dev", DEFAULT_ENCODER)
    _, stream = photos_of(SHARED / "real-photos-stream", DEFAULT_ENCODER)
    stream_mirrored = mirror_features(SHARED / "real-photos-stream", stream.files,
                                      DEFAULT_ENCODER)
    train = dev.train
    train_mirrored = with_mirrors(train, mirror_features(SHARED / "real-photos-dev",
                                                         train.files, DEFAULT_ENCODER), key)
    for train_with_mirrors in (False, True):
        labels = types.SimpleNamespace(
            train=train_mirrored if train_with_mirrors else train, holdout=dev.holdout,
            summary=dict, new_train_labels=lambda since: 0)
        for averaged in (False, True):
            inputs = stream.inputs(key)
            inputs = (inputs + stream_mirrored) / 2 if averaged else inputs
            rows = [scores(train_model(TrainConfig(seed=seed), data, labels).classifier,
                           inputs, stream.labels) for seed in seeds]
            report(f"mirrored training photos {train_with_mirrors}, mirror-averaged features "
                   f"at test {averaged}", rows)


def report(name: str, rows: list[dict]) -> None:
    """Means over the seeds (precision: over the seeds that published anything)."""
    means = {}
    for key in rows[0]:
        values = [r[key] for r in rows if not np.isnan(r[key])]
        means[key] = round(float(np.mean(values)), 3) if values else None
    print(f"{name}: {json.dumps(means)}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", type=json.loads, default=[{}],
                        help="a JSON list of TrainConfig overrides (default: [{}])")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
    parser.add_argument("--mirror", action="store_true", help="the mirror-averaging screen")
    args = parser.parse_args()
    from tagging.model.data import load_fashion_mnist

    os.environ.setdefault("TAGGING_FASHION_MNIST_DIR", str(SHARED / "fashion-mnist"))
    data = load_fashion_mnist()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.mirror:
        run_mirror(seeds, data)
    else:
        run_recipes(args.recipes, seeds, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
