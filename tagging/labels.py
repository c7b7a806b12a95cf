"""The ten Fashion-MNIST categories, in label order (category_id 0-9), reading a label, and
which products are held out (the label store's split, and what live quality grades on)."""

from __future__ import annotations

import hashlib
from numbers import Integral
from typing import Any

import numpy as np

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


HOLDOUT_FRACTION = 0.2  # fixed: changing it would move products between the two sides
SPLIT_SALT = b"catalogue-tagging holdout v1:"


def is_holdout(product_ids: list[str] | np.ndarray) -> np.ndarray:
    """True for the ~20 % of products held out: a salted SHA-256 of the id, nothing else, so
    a product never changes side as the label store grows."""
    limit = int(HOLDOUT_FRACTION * 2**64)
    return np.array([int.from_bytes(hashlib.sha256(SPLIT_SALT + str(p).encode()).digest()[:8],
                                    "big") < limit for p in product_ids], bool)
