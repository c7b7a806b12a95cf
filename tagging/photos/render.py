"""What the decoding workers make of a photo: the model's input, in one of two forms.

`PIXELS`: the 28x28 Fashion-MNIST-like silhouette (tagging.photos.segment). An encoder's
form: the whole photo as square RGB at the encoder's input size, padded in the median colour
of its border (a studio's white, a bed's grey), so a long dress or a pair of trousers is not
cut; the network scales the values itself. Both start from tagging.photos.decode (the
security boundary), and neither loads a model: this runs in worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from tagging.errors import ImageError
from tagging.photos.decode import decode_photo
from tagging.photos.segment import MIN_THRESHOLD, SIZE, colour_range, to_fashion_mnist

MIN_SIDE = 32  # a photo smaller than this on a side holds too little for an encoder


@dataclass(frozen=True)
class PhotoInput:
    """A form of model input: `pixels` (28x28 grey) or `encoder` (size x size RGB)."""

    kind: str
    size: int = SIZE

    @property
    def shape(self) -> tuple[int, ...]:
        return (SIZE, SIZE) if self.kind == "pixels" else (self.size, self.size, 3)

    def render(self, data: bytes | None) -> np.ndarray:
        """Photo bytes -> this form (uint8); any failure is an ImageError."""
        return render_forms(data, (self,))[0]


PIXELS = PhotoInput("pixels")


def render_forms(data: bytes | None, forms: tuple[PhotoInput, ...]) -> tuple[np.ndarray, ...]:
    """Every form asked for of one photo, decoded once; any failure is an ImageError."""
    try:
        image = decode_photo(data, long_edge=max(f.size for f in forms))
        return tuple(to_fashion_mnist(image) if form.kind == "pixels"
                     else encoder_input(image, form.size) for form in forms)
    except ImageError:
        raise
    except MemoryError as e:
        raise ImageError("image too large: out of memory while decoding") from e
    except Exception as e:  # Pillow raises many kinds of errors on hostile bytes
        raise ImageError(f"undecodable image: {type(e).__name__}: {e}") from e


def encoder_input(image: Image.Image, size: int) -> np.ndarray:
    """The whole photo, square, `size` px a side, padded in its border's median colour."""
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        if colour_range(np.asarray(image)) < MIN_THRESHOLD:
            raise ImageError("blank image: no product found")
        raise ImageError(f"image too small for the encoder: {width}x{height} px (needs at "
                         f"least {MIN_SIDE} px a side)")
    scale = size / max(width, height)
    fitted = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = np.asarray(image.resize(fitted, Image.Resampling.BILINEAR))
    if colour_range(resized) < MIN_THRESHOLD:
        raise ImageError("blank image: no product found")
    border = np.concatenate([resized[0], resized[-1], resized[:, 0], resized[:, -1]])
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = np.median(border, axis=0).astype(np.uint8)
    top, left = (size - fitted[1]) // 2, (size - fitted[0]) // 2
    canvas[top:top + fitted[1], left:left + fitted[0]] = resized
    return canvas
