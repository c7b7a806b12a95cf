"""Decode and preprocess photos in worker processes: a worker's death costs only its row.

The tagger, the label store and the labelled-photo loader all decode through a
DecodingPool, so a photo that kills its decoder (the OOM killer, a native crash) is one
row's error everywhere, never a failed batch.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import current_process, get_context
from pathlib import Path

import numpy as np

from tagging.errors import ImageError, TaggingError
from tagging.photos.decode import load_image_uri
from tagging.photos.render import PIXELS, PhotoInput, render_forms

log = logging.getLogger(__name__)

CHUNK_ROWS = 32  # rows per task sent to a decoding worker (small: short tail at a shard's end)
DIED = "decoding process died on this photo (killed, e.g. out of memory)"
# A chunk of rows sent to a decoding worker: the pool it went to, its future, and its rows
# (kept to retry them one by one if the worker dies).
Chunk = tuple[ProcessPoolExecutor, Future, list, list]
# One array per form asked for (zeros where a row failed), per-row errors, CPU seconds.
Decoded = tuple[tuple[np.ndarray, ...], list[str | None], float]


def empty(forms: tuple[PhotoInput, ...], rows: int) -> tuple[np.ndarray, ...]:
    """Zeroed arrays for `rows` rows of each form."""
    return tuple(np.zeros((rows, *form.shape), np.uint8) for form in forms)


def decode_chunk(images: list[bytes | None], uris: list[str | None], image_root: str,
                 forms: tuple[PhotoInput, ...]) -> Decoded:
    """Render a chunk of rows in each form (in a worker): arrays, per-row errors, CPU s."""
    start = time.process_time()
    arrays = empty(forms, len(images))
    errors: list[str | None] = [None] * len(images)
    for i, (data, uri) in enumerate(zip(images, uris, strict=True)):
        try:
            if data is None and uri:
                data = load_image_uri(uri, image_root)
            for array, rendered in zip(arrays, render_forms(data, forms), strict=True):
                array[i] = rendered
        except ImageError as e:
            errors[i] = str(e)
        except Exception as e:  # a row must never take the batch down
            errors[i] = f"preprocessing failed: {type(e).__name__}: {e}"
    return arrays, errors, time.process_time() - start


def aws_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_")}


def use_env(env: dict[str, str]) -> None:
    os.environ.update(env)


class DecodingPool:
    """Warm forkserver workers that decode chunks of rows into the model input's `forms`
    (default: the 28x28 pixels); replaced when one dies."""

    def __init__(self, image_root: Path | str, workers: int | None = None,
                 forms: tuple[PhotoInput, ...] = (PIXELS,)):
        if current_process().daemon:  # multiprocessing would refuse at the first submit
            raise TaggingError(
                "cannot start the decoding processes from a daemonic process (a Celery "
                "prefork pool process?): serve the tagging and training queues with "
                "concurrency 1 in Celery's solo pool (AIRFLOW__CELERY__POOL=solo), as "
                "tagging.ops.stack and docker-compose.yml do")
        self.image_root = str(image_root)
        self.forms = forms
        self.workers = workers or os.cpu_count() or 1
        self.pool = self._new_pool()

    def __enter__(self) -> DecodingPool:
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(cancel_futures=True)

    def _new_pool(self) -> ProcessPoolExecutor:
        # The forkserver keeps the environment it started with: the workers get this
        # process's AWS_* variables (an s3:// image root) from here.
        return ProcessPoolExecutor(self.workers, mp_context=get_context("forkserver"),
                                   initializer=use_env, initargs=(aws_env(),))

    def _replace_pool(self, broken: ProcessPoolExecutor) -> None:
        """A worker died, so the pool is broken: start a fresh one (once per breakage)."""
        if broken is self.pool:
            broken.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()

    def submit(self, images: list, uris: list) -> Chunk:
        """Send a chunk of rows (image bytes, or image_uri under the root) to a worker."""
        pool = self.pool
        return (pool, pool.submit(decode_chunk, images, uris, self.image_root, self.forms),
                images, uris)

    def result(self, chunk: Chunk) -> Decoded:
        """A chunk's decoding; if its worker died, its rows again one by one in fresh workers,
        and the row that kills one gets an error instead of failing the batch."""
        pool, future, images, uris = chunk
        try:
            return future.result()
        except BrokenProcessPool:
            self._replace_pool(pool)
        arrays = empty(self.forms, len(images))
        errors: list[str | None] = [None] * len(images)
        cpu = 0.0
        for i, (data, uri) in enumerate(zip(images, uris, strict=True)):
            pool, future, _, _ = self.submit([data], [uri])
            try:
                one, error, seconds = future.result()
            except BrokenProcessPool:
                log.warning("a decoding process died on row %d of a chunk: %s", i, DIED)
                errors[i] = DIED
                self._replace_pool(pool)
                continue
            for array, row in zip(arrays, one, strict=True):
                array[i] = row[0]
            errors[i] = error[0]
            cpu += seconds
        return arrays, errors, cpu

    def decode(self, images: list, uris: list) -> tuple[tuple[np.ndarray, ...], list[str | None]]:
        """All rows, in order: one array per form (zeros where failed), per-row errors."""
        chunks = [self.submit(images[i:i + CHUNK_ROWS], uris[i:i + CHUNK_ROWS])
                  for i in range(0, len(images), CHUNK_ROWS)]
        return joined(self.forms, [self.result(chunk) for chunk in chunks])


def joined(forms: tuple[PhotoInput, ...], results: list[Decoded]
           ) -> tuple[tuple[np.ndarray, ...], list[str | None]]:
    """Decoded chunks as one array per form and one list of errors."""
    if not results:
        return empty(forms, 0), []
    arrays = tuple(np.concatenate([r[0][k] for r in results]) for k in range(len(forms)))
    return arrays, [e for r in results for e in r[1]]
