"""Encoder features of Fashion-MNIST, computed once per machine and cached.

A 28x28 Fashion-MNIST image is shown to the encoder as the photo it stands for: negated
(dark product on a white background), grey as RGB, enlarged to the encoder's input size.
Features are cached in blocks of BLOCK images under `<cache>/features/<encoder key>/`, each
named by a hash of the encoder key and the block's own pixels (so any subset that shares
blocks shares their cache, and other data can never be served stale); a block is written
whole (temporary file, then rename), so concurrent trainers at most compute one twice.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from rich.progress import Progress

from model_registry.files import atomic_write_bytes
from tagging.errors import ModelError
from tagging.model.data import FashionMNIST
from tagging.model.inputs import ModelInput
from tagging.settings import Settings

if TYPE_CHECKING:
    from tagging.model.config import TrainConfig

log = logging.getLogger(__name__)

BLOCK = 2000
RENDERING = "fashion-mnist-as-photo-v1"  # change it when fashion_mnist_as_photo changes


@dataclass(frozen=True)
class FashionInputs:
    """Fashion-MNIST (the training subset, the test split) in the model's input."""

    x_train: np.ndarray  # uint8 images (pixels) or float32 features
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def fashion_inputs(config: TrainConfig, data: FashionMNIST, *, progress: bool = False
                   ) -> FashionInputs:
    """The training subset and the test split in `config`'s input (features: cached)."""
    x, y = fashion_mnist_training_set(config, data)
    return FashionInputs(as_input(config.input, x, progress=progress), y,
                         as_input(config.input, data.x_test, progress=progress), data.y_test)


def as_input(model_input: ModelInput, images: np.ndarray, *, progress: bool = False
             ) -> np.ndarray:
    """Fashion-MNIST images as `model_input` takes them: themselves, or features."""
    if model_input.is_pixels:
        return images
    from tagging.encoder import Encoder

    return fashion_mnist_features(Encoder.load(model_input.name), images, progress=progress)


def fashion_mnist_training_set(config: TrainConfig, data: FashionMNIST
                               ) -> tuple[np.ndarray, np.ndarray]:
    if config.train_subset:
        return data.x_train[: config.train_subset], data.y_train[: config.train_subset]
    return data.x_train, data.y_train


def fashion_mnist_as_photo(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (n, 28, 28) bright on black -> uint8 (n, size, size, 3) dark on white."""
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, image in enumerate(images):
        grey = Image.fromarray(255 - image).resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(grey)[:, :, None]
    return out


def fashion_mnist_features(encoder, images: np.ndarray, *, cache_dir: Path | None = None,
                           progress: bool = False) -> np.ndarray:
    """Features (n, d) float32 of Fashion-MNIST images, from the cache where it has them."""
    key = ModelInput(encoder.spec.name).key
    folder = (cache_dir or Settings.from_env().cache_dir) / "features" / key.replace(":", "-")
    starts = range(0, len(images), BLOCK)
    paths = [folder / f"{block_hash(key, images[s:s + BLOCK])}.npy" for s in starts]
    missing = [i for i, path in enumerate(paths) if not path.is_file()]
    if missing:
        log.info("encoding %d Fashion-MNIST images with %s (once; cached in %s)",
                 sum(len(images[starts[i]:starts[i] + BLOCK]) for i in missing),
                 encoder.spec.name, folder)
    with Progress(disable=not (progress and missing)) as bar:
        task = bar.add_task(f"{encoder.spec.name} features", total=len(missing))
        for i in missing:
            block = images[starts[i]:starts[i] + BLOCK]
            features = encoder.features(fashion_mnist_as_photo(block, encoder.spec.input_size))
            _save(paths[i], features.astype(np.float16))
            bar.advance(task)
    out = np.empty((len(images), encoder.spec.feature_dim), np.float32)
    for start, path in zip(starts, paths, strict=True):
        block = np.load(path, allow_pickle=False)
        if block.shape != (len(images[start:start + BLOCK]), encoder.spec.feature_dim):
            raise ModelError(f"feature cache {path} holds {block.shape}, not this block: "
                             "delete it")
        out[start:start + len(block)] = block
    return out


def block_hash(key: str, block: np.ndarray) -> str:
    digest = hashlib.sha256(f"{key}|{RENDERING}|{block.shape}".encode())
    digest.update(np.ascontiguousarray(block).tobytes())
    return digest.hexdigest()[:32]


def _save(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())
