"""A demo catalogue: Fashion-MNIST test images rendered as shop-style product photos.

Each photo is a 762x1000 canvas with an off-white background and the product (the
negated Fashion-MNIST image, upscaled) in a colour tint, off-centre with margins, saved as
JPEG of varied quality, or sometimes PNG/WebP. A few rows per day are broken on purpose.
The true label is kept in `true_category`. The catalogue may be a folder or an `s3://`
root (tagging.storage writes either, each file whole or not at all).
"""

from __future__ import annotations

import io
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from tagging.catalogue.layout import input_dir
from tagging.labels import CATEGORY_SLUGS
from tagging.model.data import load_fashion_mnist
from tagging.storage import Root, atomic_writer

log = logging.getLogger(__name__)

CANVAS = (762, 1000)  # width, height: the shop's originals
TINTS = (  # product colours: dark to mid tones, as garments photograph
    (25, 25, 30), (40, 50, 90), (120, 20, 30), (30, 80, 45), (90, 60, 35),
    (70, 70, 75), (20, 60, 110), (110, 40, 90), (140, 90, 40), (60, 30, 20),
)
ROW_GROUP_ROWS = 256


def render_photo(pixels: np.ndarray, seed: int) -> tuple[bytes, str]:
    """One Fashion-MNIST image (28x28 uint8) as encoded product-photo bytes and their format."""
    rng = np.random.default_rng(seed)
    width, height = CANVAS
    long_edge = int(rng.uniform(0.55, 0.85) * min(width, height))
    alpha = Image.fromarray(pixels).resize((long_edge, long_edge), Image.Resampling.BICUBIC)
    background = tuple(int(v) for v in rng.uniform(232, 252) - rng.uniform(0, 6, size=3))
    tint = TINTS[rng.integers(len(TINTS))]
    image = Image.new("RGB", CANVAS, background)  # slightly warm off-white
    left = int(rng.integers(0, width - long_edge + 1))
    top = int(rng.integers(0, height - long_edge + 1))
    image.paste(Image.new("RGB", alpha.size, tint), (left, top), mask=alpha)
    fmt = str(rng.choice(["JPEG"] * 8 + ["PNG", "WEBP"]))
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, "JPEG", quality=int(rng.integers(60, 96)))
    else:
        image.save(buffer, fmt)
    return buffer.getvalue(), fmt.lower()


def _render_many(args: tuple[np.ndarray, list[int]]) -> list[tuple[bytes, str]]:
    images, seeds = args
    return [render_photo(img, s) for img, s in zip(images, seeds, strict=True)]


def broken_rows(good_jpeg: bytes) -> list[tuple[bytes | None, str | None, str]]:
    """(image, image_uri, what) for a handful of rows that cannot be tagged."""
    return [
        (b"this is not an image", None, "undecodable"),
        (good_jpeg[: len(good_jpeg) // 2], None, "truncated"),
        (b"", None, "empty"),
        (None, None, "missing"),
        (None, "../../etc/passwd", "escaping image_uri"),
    ]


def generate_demo_catalogue(catalogue_root: Root | Path | str, dates: list[str], *,
                            rows_per_day: int = 200, data_dir: Path | str | None = None,
                            seed: int = 0, workers: int | None = None) -> list[Root]:
    """Write incoming/dt=DATE/part-0.parquet for each date; returns the files written."""
    data = load_fashion_mnist(data_dir)
    rng = np.random.default_rng(seed)
    written = []
    with ProcessPoolExecutor(workers or os.cpu_count()) as pool:
        for day, date in enumerate(dates):
            picks = rng.choice(len(data.x_test), size=rows_per_day, replace=False)
            seeds = [seed * 1_000_003 + day * 100_000 + i for i in range(rows_per_day)]
            chunks = [(data.x_test[picks[i:i + 64]], seeds[i:i + 64])
                      for i in range(0, rows_per_day, 64)]
            photos = [p for chunk in pool.map(_render_many, chunks) for p in chunk]
            table = demo_table(date, photos, data.y_test[picks])
            out = input_dir(catalogue_root, date) / "part-0.parquet"
            with atomic_writer(out) as sink:
                pq.write_table(table, sink, row_group_size=ROW_GROUP_ROWS, compression="none")
            log.info("wrote %s (%d rows)", out, table.num_rows)
            written.append(out)
    return written


def demo_table(date: str, photos: list[tuple[bytes, str]], labels: np.ndarray) -> pa.Table:
    """The day's rows: good photos then the broken ones, interleaved deterministically."""
    broken = broken_rows(next((b for b, f in photos if f == "jpeg"), photos[0][0]))
    rows = [(b, None, CATEGORY_SLUGS[y], f"photo ({f})") for (b, f), y in
            zip(photos, labels, strict=True)]
    for k, (image, uri, what) in enumerate(broken):
        rows.insert((k * 37) % (len(rows) + 1), (image, uri, None, f"broken: {what}"))
    return pa.table({
        "product_id": [f"{date.replace('-', '')}-{i:06d}" for i in range(len(rows))],
        "image": pa.array([r[0] for r in rows], pa.binary()),
        "image_uri": pa.array([r[1] for r in rows], pa.string()),
        "true_category": pa.array([r[2] for r in rows], pa.string()),
        "title": pa.array([r[3] for r in rows], pa.string()),
    })
