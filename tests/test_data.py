"""Fashion-MNIST loading: the real files, broken files, and the checksum-verified download."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import shutil
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from tagging.model.data import OFFICIAL_MD5, DataError, download, fingerprint, load_fashion_mnist

NAMES = list(OFFICIAL_MD5)


def test_loads_all_70000_images(fmnist):
    assert fmnist.x_train.shape == (60_000, 28, 28) and fmnist.x_train.dtype == np.uint8
    assert fmnist.x_test.shape == (10_000, 28, 28)
    assert np.array_equal(np.bincount(fmnist.y_train), [6000] * 10)
    assert np.array_equal(np.bincount(fmnist.y_test), [1000] * 10)
    assert fingerprint(fmnist.x_train, fmnist.y_train) != fmnist.test_fingerprint
    assert len(fmnist.test_fingerprint) == 64


def test_fingerprint_is_content_hash(fmnist_dir, tmp_path):
    """Recompressing the files changes their bytes but not the fingerprint."""
    for name in NAMES:
        with gzip.open(fmnist_dir / name) as src, gzip.open(tmp_path / name, "wb", 1) as dst:
            shutil.copyfileobj(src, dst)
    a, b = load_fashion_mnist(fmnist_dir), load_fashion_mnist(tmp_path)
    assert a.test_fingerprint == b.test_fingerprint
    assert fingerprint(a.x_train, a.y_train) == fingerprint(b.x_train, b.y_train)


def copy_with(tmp_path: Path, fmnist_dir: Path, name: str, raw: bytes | None) -> Path:
    for n in NAMES:
        shutil.copy(fmnist_dir / n, tmp_path / n)
    if raw is None:
        (tmp_path / name).unlink()
    else:
        (tmp_path / name).write_bytes(raw)
    return tmp_path


def labels_raw(fmnist_dir: Path) -> bytes:
    return gzip.decompress((fmnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())


@pytest.mark.parametrize("damage, message", [
    ("missing", "file is missing"),
    ("not gzip", "not a readable gzip file"),
    ("truncated", "truncated or padded"),
    ("bad magic", "magic number 2051, expected 2049"),
    ("wrong count", "9999 records, expected 10000"),
    ("bad label", "out of range"),
])
def test_bad_files_name_the_file(tmp_path, fmnist_dir, damage, message):
    name = "t10k-labels-idx1-ubyte.gz"
    raw = labels_raw(fmnist_dir)
    broken = {
        "missing": None,
        "not gzip": b"plain bytes",
        "truncated": gzip.compress(raw[:-100]),
        "bad magic": gzip.compress(struct.pack(">II", 2051, 10_000) + raw[8:]),
        "wrong count": gzip.compress(struct.pack(">II", 2049, 9_999) + raw[8:]),
        "bad label": gzip.compress(raw[:8] + bytes([12]) + raw[9:]),
    }[damage]
    with pytest.raises(DataError, match=message) as err:
        load_fashion_mnist(copy_with(tmp_path, fmnist_dir, name, broken))
    assert name in str(err.value)


@pytest.fixture
def mirror(fmnist_dir):
    """A real HTTP server on loopback serving the local copy as if it were a mirror."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=fmnist_dir)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def md5s(directory: Path) -> dict[str, str]:
    return {n: hashlib.md5((directory / n).read_bytes()).hexdigest() for n in NAMES}


def test_download_verifies_checksums(tmp_path, fmnist_dir, mirror):
    target = tmp_path / "cache"
    download(target, mirrors=("http://127.0.0.1:9/", mirror), checksums=md5s(fmnist_dir))
    assert load_fashion_mnist(target).x_test.shape == (10_000, 28, 28)


def test_download_rejects_wrong_checksum(tmp_path, mirror):
    """The local copy is a re-split: the official MD5s must reject it, and nothing is kept."""
    target = tmp_path / "cache"
    with pytest.raises(DataError, match="MD5"):
        download(target, mirrors=(mirror,))
    assert not list(target.glob("*.gz"))
