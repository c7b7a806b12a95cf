"""The ten Fashion-MNIST categories, in label order (category_id 0-9), and reading a label."""

from __future__ import annotations

from numbers import Integral
from typing import Any

CATEGORY_NAMES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CATEGORY_SLUGS: tuple[str, ...] = (
    "t-shirt-top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)
CATEGORY_SHORT: tuple[str, ...] = (  # for plots with little room
    "tee", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "boot",
)
NUM_CLASSES = len(CATEGORY_SLUGS)


def parse_label(value: Any) -> int | None:
    """A class id from a category slug ("ankle-boot"), a name ("Ankle boot") or an id (9)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Integral):  # Python and NumPy integers
        return int(value) if 0 <= value < NUM_CLASSES else None
    text = str(value).strip()
    if text.isdigit():
        return int(text) if int(text) < NUM_CLASSES else None
    slug = text.lower().replace("/", "-").replace(" ", "-")
    return CATEGORY_SLUGS.index(slug) if slug in CATEGORY_SLUGS else None
