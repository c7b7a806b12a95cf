"""The project's model registry: model_registry.Registry, told what the models predict."""

from __future__ import annotations

from pathlib import Path

from model_registry import Registry
from tagging.labels import CATEGORY_SLUGS
from tagging.settings import Settings


def open_registry(root: Path | str | None = None) -> Registry:
    """The registry at `root` (default: the configured one), versions predicting the ten classes."""
    return Registry(root or Settings.from_env().registry_root, class_names=CATEGORY_SLUGS)
