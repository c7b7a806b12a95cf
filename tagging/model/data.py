"""Fashion-MNIST: load the four IDX .gz files, check them, download them when missing."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import struct
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagging.errors import DataError
from tagging.settings import Settings

log = logging.getLogger(__name__)

# The official mirror, then the copy Keras itself downloads from; the MD5 check decides.
MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
)
# Official MD5 sums of the files the official mirror serves.
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
SPLITS = {"train": 60_000, "t10k": 10_000}


@dataclass(frozen=True)
class FashionMNIST:
    x_train: np.ndarray  # uint8 (60000, 28, 28)
    y_train: np.ndarray  # uint8 (60000,)
    x_test: np.ndarray  # uint8 (10000, 28, 28)
    y_test: np.ndarray
    test_fingerprint: str  # content hash of the evaluation split (the gate compares on it)


def fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """Content hash of a labelled image set (independent of file compression)."""
    digest = hashlib.sha256()
    digest.update(str(images.shape).encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    return digest.hexdigest()


def read_idx(path: Path, magic: int, count: int) -> np.ndarray:
    """Read one gzipped IDX file, checking magic number, shape and length."""
    if not path.is_file():
        raise DataError(f"{path}: file is missing")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable gzip file ({e})") from e
    header_len = 16 if magic == IMAGES_MAGIC else 8
    if len(raw) < header_len:
        raise DataError(f"{path}: truncated header ({len(raw)} bytes)")
    found_magic, n = struct.unpack(">II", raw[:8])
    if found_magic != magic:
        raise DataError(f"{path}: magic number {found_magic}, expected {magic}")
    if n != count:
        raise DataError(f"{path}: {n} records, expected {count}")
    shape: tuple[int, ...] = (n,)
    if magic == IMAGES_MAGIC:
        rows, cols = struct.unpack(">II", raw[8:16])
        if (rows, cols) != (28, 28):
            raise DataError(f"{path}: images are {rows}x{cols}, expected 28x28")
        shape = (n, 28, 28)
    expected = header_len + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(f"{path}: {len(raw)} bytes, expected {expected} (truncated or padded)")
    data = np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)
    if magic == LABELS_MAGIC and data.max(initial=0) > 9:
        raise DataError(f"{path}: label {int(data.max())} out of range 0-9")
    return data


def resolve_data_dir(data_dir: Path | str | None = None) -> Path:
    """The directory to read: the argument, else $TAGGING_FASHION_MNIST_DIR, else the cache."""
    return Path(data_dir) if data_dir is not None else Settings.from_env().fashion_mnist_dir


def download(
    target: Path, mirrors: tuple[str, ...] = MIRRORS, checksums: dict[str, str] = OFFICIAL_MD5
) -> None:
    """Download the missing files into `target`, trying each mirror, verifying every MD5."""
    target.mkdir(parents=True, exist_ok=True)
    for name, md5 in checksums.items():
        if (target / name).exists():
            continue
        errors = []
        for base_url in mirrors:
            try:
                log.info("downloading %s%s", base_url, name)
                with urllib.request.urlopen(base_url + name, timeout=60) as response:
                    body = response.read()
            except OSError as e:
                errors.append(f"{base_url}{name}: {e}")
                continue
            actual = hashlib.md5(body).hexdigest()
            if actual != md5:
                errors.append(f"{base_url}{name}: MD5 {actual}, expected {md5}")
                continue
            with tempfile.NamedTemporaryFile(dir=target, delete=False) as tmp:
                tmp.write(body)
            os.replace(tmp.name, target / name)
            break
        else:
            raise DataError(f"could not download {name}: " + "; ".join(errors))


def load_fashion_mnist(data_dir: Path | str | None = None) -> FashionMNIST:
    """Load all 70,000 images; downloads the official files when no local copy exists."""
    source = resolve_data_dir(data_dir)
    if not any((source / name).exists() for name in OFFICIAL_MD5):
        log.info("no Fashion-MNIST copy in %s: downloading the official files", source)
        download(source)
    arrays = {}
    for split, count in SPLITS.items():
        arrays[split] = (
            read_idx(source / f"{split}-images-idx3-ubyte.gz", IMAGES_MAGIC, count),
            read_idx(source / f"{split}-labels-idx1-ubyte.gz", LABELS_MAGIC, count),
        )
    (x_train, y_train), (x_test, y_test) = arrays["train"], arrays["t10k"]
    log.info("loaded Fashion-MNIST from %s", source)
    return FashionMNIST(
        x_train, y_train, x_test, y_test, test_fingerprint=fingerprint(x_test, y_test),
    )
