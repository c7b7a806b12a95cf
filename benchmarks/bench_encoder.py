"""Tagging real photos with the encoder, next to the TensorFlow pipeline a user would write
(issue 25); one command, one report.

    .venv/bin/python benchmarks/bench_encoder.py                 # 10k rows, the figures
    .venv/bin/python benchmarks/bench_encoder.py --rows 2000     # a quick look

1. A partition of --rows rows: the stream and dev photos (974 real photos, their original
   bytes) cycled, with `true_category`; row groups of 256, as the demo writes them.
2. A version of the default recipe (the encoder's features) trained with the dev photos as
   labelled photos (--train overrides; default: the first 12,000 Fashion-MNIST images).
3. The job: `tagging tag`'s path (tag_partition: planning, the warm decoding pool, LiteRT
   batched in the main process, the NumPy head, the Delta commit), in a fresh process,
   sampled as a process tree (wall, images/s, peak RSS and address space per process); also
   at --rows / 5, to show that memory does not grow with the partition. Its answers are
   graded in a process of their own.
4. Each encoder alone (efficientnet-lite0 and -lite1), in LiteRT and in Keras, on 256 photos.
5. The peer: tf.data over the same Parquet column (decode_image, resize keeping the aspect
   ratio with antialiasing, pad to a square in the border colour), the same encoder as a
   Keras model (`model.predict` on batches of 32), then the version's Keras head; in a fresh
   process, measured the same way. Both are scored against `true_category` and against
   each other (the share of rows given the same category).

Prints the figures and writes WORKDIR/results.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from bench_tagging import REPO, log  # this script's folder is on sys.path
from bench_tagging import run_child as run_script_child

SHARED = (Path(os.environ["TAGGING_FASHION_MNIST_DIR"]).parent
          if os.environ.get("TAGGING_FASHION_MNIST_DIR") else REPO.parent / "shared")
DATE = "2030-02-01"
ROW_GROUP_ROWS = 256
PEER_BATCH = 32


def write_partition(catalogue: Path, rows: int, date: str = DATE) -> Path:
    """incoming/dt=DATE/part-0.parquet: the shared real photos cycled to `rows` rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tagging.catalogue.layout import input_dir
    from tagging.labels import CATEGORY_SLUGS

    photos = []
    for name in ("real-photos-stream", "real-photos-dev"):
        folder = SHARED / name
        with open(folder / "manifest.csv", newline="") as f:
            photos += [((folder / "images" / r["file"]).read_bytes(),
                        CATEGORY_SLUGS[int(r["label"])]) for r in csv.DictReader(f)]
    out = input_dir(catalogue, date).path / "part-0.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("product_id", pa.string()), ("image", pa.binary()),
                        ("true_category", pa.string())])
    with pq.ParquetWriter(out, schema, compression="none", use_dictionary=False) as writer:
        for start in range(0, rows, ROW_GROUP_ROWS):
            block = range(start, min(start + ROW_GROUP_ROWS, rows))
            writer.write_table(pa.table({
                "product_id": [f"sku-{i:07d}" for i in block],
                "image": pa.array([photos[i % len(photos)][0] for i in block], pa.binary()),
                "true_category": [photos[i % len(photos)][1] for i in block]}, schema))
    return out


# ---------------------------------------------------------------- child steps


def child_train(p: dict) -> dict:
    from model_registry import GatePolicy, Registry
    from tagging.model.config import TrainConfig
    from tagging.pipeline.learn import train_and_promote

    config = TrainConfig.from_dict({"real_photos": p["real_photos"], **p["train"]})
    candidate, _ = train_and_promote(config, registry_root=p["registry"],
                                     data_dir=p["data_dir"], created_by="benchmark",
                                     policy=GatePolicy(min_accuracy=0.5, min_class_recall=0.0))
    meta = Registry(p["registry"]).get(candidate.version).metadata
    return {"version": candidate.version, "input": meta["input"]["encoder"],
            "fashion_mnist_accuracy": meta["metrics"]["accuracy"]}


def child_job(p: dict) -> dict:
    from tagging.pipeline.tag import tag_partition

    summary = tag_partition(p["catalogue"], p["date"], registry_root=p["registry"],
                            model=p["version"])
    return {"rows": summary["rows"], "seconds": summary["seconds"],
            "images_per_s": summary["images_per_s"], "stages_s": summary["stage_seconds"]}


def child_grade(p: dict) -> dict:
    """The job's published answers, graded (its own process: not in the job's memory)."""
    from tagging.catalogue.published import read_published

    table = read_published(p["catalogue"], p["date"],
                           columns=["product_id", "category", "true_category"])
    answers = dict(zip(table["product_id"].to_pylist(), table["category"].to_pylist(),
                       strict=True))
    Path(p["answers"]).write_text(json.dumps(answers))
    truth = table["true_category"].to_pylist()
    correct = [a == t for a, t in zip(table["category"].to_pylist(), truth, strict=True)]
    return {"accuracy": round(float(np.mean(correct)), 4)}


def child_peer(p: dict) -> dict:
    """tf.data -> decode_image -> resize (aspect kept) -> pad in the border colour -> the
    Keras encoder -> the version's Keras head."""
    import keras
    import pyarrow.parquet as pq
    import tensorflow as tf

    from model_registry import Registry
    from tagging.encoder import encoder_spec, keras_encoder
    from tagging.labels import CATEGORY_SLUGS

    info = Registry(p["registry"]).get(p["version"])
    spec = encoder_spec(info.metadata["input"]["encoder"])
    size = spec.input_size
    encoder = keras_encoder(spec)
    head = keras.saving.load_model(info.model_path)
    encoder.predict(np.zeros((1, size, size, 3), np.uint8), verbose=0)  # tracing, untimed
    head.predict(np.zeros((1, spec.feature_dim), np.float32), verbose=0)
    start = time.perf_counter()
    file = pq.ParquetFile(p["file"])
    ids = file.read(columns=["product_id"])["product_id"].to_pylist()
    truth = file.read(columns=["true_category"])["true_category"].to_pylist()

    def photos():
        for batch in file.iter_batches(batch_size=ROW_GROUP_ROWS, columns=["image"]):
            yield from batch.column(0).to_pylist()

    def to_input(data):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = size / tf.reduce_max(shape)
        fitted = tf.cast(tf.round(shape * scale), tf.int32)
        resized = tf.image.resize(image, fitted, antialias=True)
        border = tf.concat([resized[0], resized[-1], resized[:, 0], resized[:, -1]], axis=0)
        colour = tf.reduce_mean(border, axis=0)
        top, left = (size - fitted[0]) // 2, (size - fitted[1]) // 2
        canvas = tf.pad(resized - colour, [[top, size - fitted[0] - top],
                                           [left, size - fitted[1] - left], [0, 0]]) + colour
        return tf.cast(tf.clip_by_value(tf.round(canvas), 0, 255), tf.uint8)

    dataset = (tf.data.Dataset.from_generator(photos, output_signature=tf.TensorSpec((),
                                                                                   tf.string))
               .map(to_input, num_parallel_calls=tf.data.AUTOTUNE)
               .batch(PEER_BATCH).prefetch(tf.data.AUTOTUNE))
    predicted = []
    for images in dataset:
        probs = head.predict_on_batch(encoder.predict_on_batch(images))
        predicted += [CATEGORY_SLUGS[k] for k in np.asarray(probs).argmax(axis=1)]
    seconds = time.perf_counter() - start
    job = json.loads(Path(p["answers"]).read_text())
    same = [job[i] == c for i, c in zip(ids, predicted, strict=True)]
    correct = [c == t for c, t in zip(predicted, truth, strict=True)]
    return {"rows": len(predicted), "seconds": round(seconds, 2),
            "images_per_s": round(len(predicted) / seconds, 1),
            "accuracy": round(float(np.mean(correct)), 4),
            "same_category_as_the_job": round(float(np.mean(same)), 4)}


def child_encoders(p: dict) -> dict:
    """Each encoder alone, on 256 shared photos rendered as the tagger renders them: LiteRT
    (the job's runtime) and Keras, wall ms per photo after a warm-up; the largest feature
    difference between the two."""
    from tagging.encoder import ENCODERS, Encoder, keras_encoder
    from tagging.photos.render import PhotoInput

    files = sorted((SHARED / "real-photos-stream" / "images").iterdir())[:256]
    out = {}
    for name, spec in ENCODERS.items():
        form = PhotoInput("encoder", spec.input_size)
        images = np.stack([form.render(f.read_bytes()) for f in files])
        fast = Encoder.load(name)
        fast.features(images[:8])
        start = time.perf_counter()
        features = fast.features(images)
        litert_ms = 1000 * (time.perf_counter() - start) / len(images)
        model = keras_encoder(spec)
        model.predict(images[:32], batch_size=32, verbose=0)
        start = time.perf_counter()
        reference = model.predict(images, batch_size=32, verbose=0)
        keras_ms = 1000 * (time.perf_counter() - start) / len(images)
        out[name] = {"input_size": spec.input_size, "litert_ms_per_photo": round(litert_ms, 2),
                     "keras_ms_per_photo": round(keras_ms, 2),
                     "max_feature_difference": float(np.abs(features - reference).max())}
    return out


CHILDREN = {"train": child_train, "job": child_job, "grade": child_grade, "peer": child_peer,
            "encoders": child_encoders}


# ---------------------------------------------------------------- the run


def run_child(kind: str, params: dict) -> dict:
    return run_script_child(kind, params, __file__)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--workdir", type=Path, default=REPO / "var" / "bench-encoder")
    parser.add_argument("--train", type=json.loads, default={"train_subset": 12_000},
                        help="TrainConfig overrides of the version")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, params = args.child
        print(json.dumps(CHILDREN[kind](json.loads(params))))
        return 0

    import shutil

    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    data_dir = os.environ.get("TAGGING_FASHION_MNIST_DIR", str(SHARED / "fashion-mnist"))
    registry = work / "registry"
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "platform": platform.platform()}, "rows": args.rows}
    log("training the version (dev photos as labelled photos)")
    results["version"] = run_child("train", {
        "registry": str(registry), "data_dir": data_dir, "train": args.train,
        "real_photos": str(SHARED / "real-photos-dev")})
    version = results["version"]["version"]
    for name, rows in (("small", max(args.rows // 5, 1)), ("full", args.rows)):
        catalogue = work / f"catalogue-{name}"
        file = write_partition(catalogue, rows)
        answers = work / f"answers-{name}.json"
        common = {"registry": str(registry), "version": version, "answers": str(answers)}
        log(f"the job on {rows} rows")
        where = {"catalogue": str(catalogue), "date": DATE}
        results[f"job_{name}"] = run_child("job", {**common, **where})
        results[f"job_{name}"]["accuracy"] = run_child("grade", {**common, **where})["accuracy"]
        if name == "full":
            log(f"the tf.data + Keras peer on {rows} rows")
            results["peer"] = run_child("peer", {**common, "file": str(file)})
    log("each encoder alone: LiteRT and Keras")
    results["encoders"] = run_child("encoders", {})
    job, peer = results["job_full"], results["peer"]
    results["speed_up_vs_peer"] = round(job["wall_s"] and peer["wall_s"] / job["wall_s"], 2)
    out = work / "results.json"
    out.write_text(json.dumps(results, indent=2))
    for key in ("version", "job_small", "job_full", "peer", "encoders"):
        print(key, json.dumps(results[key]))
    print(f"job {job['rows'] / job['wall_s']:.1f} images/s end to end (process wall), "
          f"peer {peer['rows'] / peer['wall_s']:.1f}: x{results['speed_up_vs_peer']}; "
          f"peak RSS {results['job_small']['peak_rss_mb']} MB at {args.rows // 5} rows, "
          f"{job['peak_rss_mb']} MB at {args.rows}")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
