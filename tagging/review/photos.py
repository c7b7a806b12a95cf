"""Photos for the review page: only the bytes of a queued catalogue row, with a type sniffed
from those bytes.

A queued row's photo is its `image` bytes (copied into the store when the queue was
filled) or its `image_uri`, read through the tagger's own resolver
(tagging.photos.imaging.load_image_uri: no URL, no path out of the image root, no FIFO).
The content type comes from the bytes' signature, never from a name or the catalogue:
anything that is not a JPEG, PNG, GIF, WebP or BMP is refused, so the catalogue cannot
make the browser render HTML or SVG from the app's origin.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tagging.errors import ImageError
from tagging.photos.decode import load_image_uri
from tagging.review.store import ReviewStore

SIGNATURES = [
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
]


class PhotoUnavailable(Exception):
    """The photo is not served: `status` is the HTTP answer, the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Photo:
    data: bytes
    content_type: str


def sniff(data: bytes) -> str | None:
    """The image type of `data` from its first bytes, or None when it is not one we serve."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in SIGNATURES if data.startswith(magic)), None)


def load_photo(store: ReviewStore, partition: str, product_id: str, *, image_root: Path,
               max_bytes: int) -> Photo:
    """The photo of a queued row (PhotoUnavailable: 404 unknown or missing, 403 a path out
    of the image root or a URL, 413 over the size cap, 415 not an image we serve)."""
    item = store.item(partition, product_id)
    if item is None:
        raise PhotoUnavailable(404, "not a product in the review queue")
    if item.image_uri is None:
        data = store.photo(partition, product_id)
        if data is None:
            raise PhotoUnavailable(404, "this row has no photo")
    else:
        try:
            data = load_image_uri(item.image_uri, image_root)
        except ImageError as e:
            text = str(e)
            refused = "escapes the image root" in text or "is a URL" in text
            raise PhotoUnavailable(403 if refused else 404, text) from None
    if len(data) > max_bytes:
        raise PhotoUnavailable(413, f"photo of {len(data)} bytes is over the limit of "
                                    f"{max_bytes} bytes")
    kind = sniff(data)
    if kind is None:
        raise PhotoUnavailable(415, "not a JPEG, PNG, GIF, WebP or BMP photo")
    return Photo(data, kind)
