"""Builders the tests share: photos, catalogue partitions, registry copies, tree snapshots.

Paths come from tagging.catalogue.layout, as in the product.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from tagging import storage
from tagging.catalogue.layout import input_dir

# ---------------------------------------------------------------- photos


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    """An image as the bytes of a file in `fmt` (JPEG, PNG, ...)."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo(pixels: np.ndarray, fmt: str) -> bytes:
    """A Fashion-MNIST image as a product photo: negated, enlarged, on an off-white canvas."""
    product = Image.fromarray(255 - pixels).resize((200, 200), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (260, 300), 245)
    canvas.paste(product, (20, 60))
    return encode(canvas.convert("RGB"), fmt)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG of a few hundred bytes whose header claims width x height pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + png_chunk(b"IEND", b""))


# ---------------------------------------------------------------- catalogue partitions


def write_input(catalogue: Path, day: str, table: pa.Table, name: str = "part-0.parquet",
                **options) -> Path:
    """One input file of a day: incoming/dt=DAY/NAME (Parquet writer `options`)."""
    folder = input_dir(catalogue, day).path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    pq.write_table(table, path, **options)
    return path


def read_input(catalogue: Path, day: str) -> pa.Table:
    """Every input row of a day."""
    return pq.read_table(input_dir(catalogue, day).path)


# ---------------------------------------------------------------- registries and trees


def copy_registry(source: Path, dest: Path) -> Path:
    """A private copy of a registry (its files keep their read-only bits)."""
    shutil.copytree(source, dest, symlinks=True)
    return dest


def writable(path: Path) -> Path:
    """Undo the registry's read-only bits below `path`, so a test can tamper as a person would."""
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        item.chmod(item.stat().st_mode | stat.S_IWUSR)
    return path


def snapshot(folder: Path | storage.Root) -> dict[str, str]:
    """Every file and symlink under `folder` (a local folder or an S3 prefix; lock files
    aside): content hashes, link targets."""
    root = storage.as_root(folder)
    if root.is_remote:
        return {str(o.root): hashlib.sha256(storage.read_bytes(o.root)).hexdigest()
                for o in storage.list_objects(root)}
    folder = root.path
    state = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            state[key] = "-> " + os.readlink(path)
        elif path.is_file() and not path.name.endswith(".lock"):
            state[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state
