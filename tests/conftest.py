"""Shared fixtures: the Fashion-MNIST copy, and a registry holding a quickly trained champion."""

from __future__ import annotations

import csv
import os
import uuid
from pathlib import Path

import pytest
from helpers import photo

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def fmnist_dir() -> Path:
    """TAGGING_FASHION_MNIST_DIR (CI sets it), else the shared copy beside the repo."""
    path = Path(FMNIST_DIR)
    if not (path / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(f"Fashion-MNIST not found at {path}: set TAGGING_FASHION_MNIST_DIR")
    return path


@pytest.fixture(scope="session")
def fmnist(fmnist_dir):
    from tagging.model.data import load_fashion_mnist

    return load_fashion_mnist(fmnist_dir)


QUICK = {"train_subset": 12_000, "epochs": 4}
LOW_GATE = {"min_accuracy": 0.5, "min_class_recall": 0.0}
FMNIST_DIR = os.environ.get("TAGGING_FASHION_MNIST_DIR") or str(REPO.parent / "shared"
                                                                / "fashion-mnist")
# DAG runs in tests: tiny, fast training and floors it passes; demo days are small
# (5 broken rows in 50), so looser rate limits.
DAG_CONF = {"train": {"train_subset": 3000, "epochs": 2, "hidden_units": [64]},
            "gate": LOW_GATE, "max_error_rate": 0.2, "max_review_rate": 1.0}


@pytest.fixture(scope="session")
def champion_registry(tmp_path_factory, fmnist_dir) -> Path:
    """A registry whose champion is a real model trained for a few seconds on a subset."""
    from model_registry import GatePolicy
    from tagging.model.config import TrainConfig
    from tagging.pipeline.learn import train_and_promote

    root = tmp_path_factory.mktemp("registry")
    _, decision = train_and_promote(
        TrainConfig.from_dict(QUICK), registry_root=root, data_dir=fmnist_dir,
        created_by="tests", policy=GatePolicy(**LOW_GATE))
    assert decision is not None and decision.passed, decision
    return root


@pytest.fixture(scope="session")
def photo_set(tmp_path_factory, fmnist) -> Path:
    """40 labelled photos made from test images (2 sources, PNG and JPEG) and 1 broken one."""
    root = tmp_path_factory.mktemp("photos")
    (root / "images").mkdir()
    rows = []
    for i in range(40):
        label = int(fmnist.y_test[i])
        source, fmt = ("studio", "PNG") if i % 2 else ("shop", "JPEG")
        name = f"{label}_{source}_{i:03d}.{fmt.lower()}"
        (root / "images" / name).write_bytes(photo(fmnist.x_test[i], fmt))
        rows.append({"file": name, "label": label})
    (root / "images" / "3_shop_broken.jpg").write_bytes(b"not a photo")
    rows.append({"file": "3_shop_broken.jpg", "label": 3})
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["file", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (SeaweedFS) on free loopback ports for the whole session."""
    from tagging.ops.s3server import S3Server

    server = S3Server(tmp_path_factory.mktemp("s3")).start(buckets=("tagging",))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> dict[str, str]:
    """The AWS_* variables of the test server, set in this test's environment."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server.env()


def fresh_root(request, tmp_path: Path, name: str) -> Path | str:
    """tmp_path/name, or a fresh prefix on the S3 server (request.param "local" or "s3")."""
    if request.param == "local":
        return tmp_path / name
    request.getfixturevalue("s3_env")
    return f"s3://tagging/{name}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["local", "s3"])
def registry_root(request, tmp_path) -> Path | str:
    """An empty model registry's root: a local folder, or a fresh prefix on the S3 server."""
    return fresh_root(request, tmp_path, "registry")


@pytest.fixture(params=["local", "s3"])
def labels_root(request, tmp_path) -> Path | str:
    """An empty label store's root: a local folder, or a fresh prefix on the S3 server."""
    return fresh_root(request, tmp_path, "labels")


@pytest.fixture(params=["local", "s3"])
def place(request):
    """Where a test's catalogue lives: place(local_root) gives the root to use: the local
    folder itself, or a copy of its files under a fresh prefix of the test S3 server."""
    if request.param == "local":
        return lambda local: local
    request.getfixturevalue("s3_env")
    from tagging import storage

    def upload(local: Path):
        remote = storage.Root(f"s3://tagging/{local.name}-{uuid.uuid4().hex[:8]}")
        for path in sorted(local.rglob("*")):
            if path.is_file():
                storage.write_bytes(remote / str(path.relative_to(local)), path.read_bytes())
        return remote

    return upload
