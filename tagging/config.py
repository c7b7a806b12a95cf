"""Where things live by default: every path can be overridden by an option or env var."""

import os
from pathlib import Path

HOME_ENV = "TAGGING_HOME"
DATA_ENV = "TAGGING_FASHION_MNIST_DIR"
REGISTRY_ENV = "TAGGING_REGISTRY"
CATALOGUE_ENV = "TAGGING_CATALOGUE"
IMAGE_ROOT_ENV = "TAGGING_IMAGE_ROOT"
REAL_PHOTOS_ENV = "TAGGING_REAL_PHOTOS"


def home() -> Path:
    """Working directory for local runs (default ./var)."""
    return Path(os.environ.get(HOME_ENV, "var"))


def registry_root() -> Path:
    return Path(os.environ.get(REGISTRY_ENV) or home() / "registry")


def catalogue_root() -> Path:
    return Path(os.environ.get(CATALOGUE_ENV) or home() / "catalogue")


def image_root(catalogue: Path) -> Path:
    """Root that `image_uri` values are resolved under (never escaped)."""
    return Path(os.environ.get(IMAGE_ROOT_ENV) or catalogue / "images")


def real_photos() -> str | None:
    """Labelled real photos to train and calibrate on (folder with manifest.csv + images/)."""
    return os.environ.get(REAL_PHOTOS_ENV) or None
