"""The real-photo parts of the benchmark (issue 13): photo pools, the decode-only bound, the
cost of each image format, and the tf.data peer.

Imported by bench_tagging.py (same folder); every function here runs in a child process.
"""

from __future__ import annotations

import csv
import io
import statistics
import time
from pathlib import Path

import numpy as np

REENCODE_EVERY = 10  # of every 10 real photos: one stored as PNG, one as WebP, the rest as is
WEBP_QUALITY = 90
PEER_BATCH = 1024  # the tf.data peer predicts in batches of this many photos
PEER_JPEG_RATIO = 4  # tf.io.decode_jpeg's DCT downscaling: 1/4 of each side
OTHER_FORMATS = ("png", "webp")


def photo_folder(name: str, explicit: str | None = None) -> Path | None:
    """A labelled-photo folder (manifest.csv + images/): `explicit`, else the settings'
    real_photos (for the dev set), else `name` beside the Fashion-MNIST folder or in
    ../shared."""
    from tagging.settings import Settings

    settings = Settings.from_env()
    candidates = [explicit] if explicit else []
    if name == "real-photos-dev" and settings.real_photos:
        candidates.append(settings.real_photos)
    candidates += [settings.fashion_mnist_dir.parent / name,
                   Path(__file__).resolve().parents[2] / "shared" / name]
    return next((Path(c) for c in candidates if (Path(c) / "manifest.csv").is_file()), None)


def build_photo_pool(path: Path, folder: Path) -> dict[str, int]:
    """Every photo of a labelled folder in one Parquet file (image, format, true_category):
    the original bytes, except one photo in REENCODE_EVERY re-encoded as PNG (lossless) and
    one as WebP, so the pool has those formats at the photos' own sizes."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from tagging.labels import CATEGORY_SLUGS

    with open(folder / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    images, formats = [], []
    for i, row in enumerate(rows):
        data = (folder / "images" / row["file"]).read_bytes()
        fmt = {1: "png", 6: "webp"}.get(i % REENCODE_EVERY)
        if fmt:
            buffer = io.BytesIO()
            options = {"quality": WEBP_QUALITY} if fmt == "webp" else {}
            Image.open(io.BytesIO(data)).convert("RGB").save(buffer, fmt.upper(), **options)
            data = buffer.getvalue()
        images.append(data)
        formats.append(fmt or Image.open(io.BytesIO(data)).format.lower())
    table = pa.table({"image": pa.array(images, pa.binary()), "format": formats,
                      "true_category": [CATEGORY_SLUGS[int(r["label"])] for r in rows]})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="none")
    return {fmt: formats.count(fmt) for fmt in sorted(set(formats))}


def decode_only(data: bytes) -> np.ndarray:
    """The decoding bound: `decode_photo` (JPEGs at reduced scale) and a plain resize to
    28x28 grey, no segmentation."""
    from PIL import Image

    from tagging.photos.decode import decode_photo
    from tagging.photos.segment import SIZE

    return np.asarray(decode_photo(data).convert("L").resize((SIZE, SIZE),
                                                               Image.Resampling.BOX))


def child_formats(p: dict) -> dict:
    """CPU ms per photo (median, one process) by pool and format: Pillow decoding as the job
    does it, OpenCV's decoder (full and IMREAD_REDUCED_COLOR_4) for comparison, the
    decoding bound, and the segmentation + rendering (`to_fashion_mnist`)."""
    import cv2
    import pyarrow.parquet as pq

    from tagging.photos.decode import decode_photo
    from tagging.photos.segment import to_fashion_mnist

    def cpu_ms(function, items) -> float:
        times = []
        for item in items:
            start = time.process_time()
            function(item)
            times.append(time.process_time() - start)
        return round(1000 * statistics.median(times), 2)

    def opencv(flag):
        return lambda data: cv2.imdecode(np.frombuffer(data, np.uint8), flag)

    out: dict[str, dict] = {}
    for name, pool in p["pools"].items():
        table = pq.read_table(pool, columns=["image", "format"])
        by_format: dict[str, list[bytes]] = {}
        for data, fmt in zip(table["image"].to_pylist(), table["format"].to_pylist(),
                             strict=True):
            by_format.setdefault(fmt, []).append(data)
        for fmt, images in sorted(by_format.items()):
            images = images[:p["per_format"]]
            decoded = [decode_photo(d) for d in images]
            out[f"{name} {fmt}"] = {
                "photos": len(images), "decoded_size": "x".join(map(str, decoded[0].size)),
                "decode_photo_ms": cpu_ms(decode_photo, images),
                "opencv_decode_ms": cpu_ms(opencv(cv2.IMREAD_COLOR), images),
                "opencv_decode_reduced_4_ms": cpu_ms(opencv(cv2.IMREAD_REDUCED_COLOR_4), images),
                "decode_only_bound_ms": cpu_ms(decode_only, images),
                "to_fashion_mnist_ms": cpu_ms(to_fashion_mnist, decoded),
            }
    return {"by_format": out}


def child_peer(p: dict) -> dict:
    """The obvious TensorFlow pipeline over a partition's Parquet file, with the same
    registered model: tf.data over the image column -> tf.io.decode_jpeg (ratio 4) or
    decode_image -> grey, negate, pad and resize to 28x28 -> model.predict_on_batch in
    batches of 1,024. Rows whose image does not decode are dropped (ignore_errors)."""
    import keras
    import pyarrow.parquet as pq
    import tensorflow as tf

    from model_registry import Registry
    from tagging.labels import CATEGORY_SLUGS

    model = keras.saving.load_model(Registry(p["registry"]).get(p["version"]).model_path)
    model.predict_on_batch(np.zeros((1, 28, 28), np.float32))  # first-call tracing, untimed
    start = time.perf_counter()
    file = pq.ParquetFile(p["file"])
    truth = file.read(columns=["true_category"])["true_category"].to_pylist()

    def photos():
        row = 0
        for batch in file.iter_batches(batch_size=PEER_BATCH, columns=["image"]):
            for data in batch.column(0).to_pylist():
                yield row, data or b""
                row += 1

    def to_input(row, data):
        jpeg = tf.strings.substr(data, 0, 3) == b"\xff\xd8\xff"
        image = tf.cond(
            jpeg, lambda: tf.io.decode_jpeg(data, channels=3, ratio=PEER_JPEG_RATIO),
            lambda: tf.io.decode_image(data, channels=3, expand_animations=False))
        negative = 255.0 - tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))
        pixels = tf.image.resize_with_pad(negative, 28, 28, antialias=True)
        return row, pixels[..., 0] / 255.0

    dataset = (tf.data.Dataset.from_generator(photos, output_signature=(
        tf.TensorSpec((), tf.int64), tf.TensorSpec((), tf.string)))
        .map(to_input, num_parallel_calls=tf.data.AUTOTUNE)
        .ignore_errors()
        .batch(PEER_BATCH)
        .prefetch(tf.data.AUTOTUNE))
    predicted: dict[int, str] = {}
    for rows, pixels in dataset:
        probs = np.asarray(model.predict_on_batch(pixels))
        predicted.update(zip(rows.numpy().tolist(),
                             (CATEGORY_SLUGS[k] for k in probs.argmax(axis=1)), strict=True))
    seconds = time.perf_counter() - start
    scored = [predicted[i] == t for i, t in enumerate(truth) if t and i in predicted]
    return {"rows": len(truth), "predicted": len(predicted), "pipeline_s": round(seconds, 2),
            "pipeline_images_per_s": round(len(truth) / seconds, 1),
            "accuracy_vs_true_category": round(float(np.mean(scored)), 4) if scored else None}
