"""The security boundary: photo bytes or an image_uri -> an upright RGB image, within limits.

Everything that reads catalogue bytes goes through here: image_uri resolved only under the
image root (no URL, no escape, no FIFO, a size cap), an allow-list of decoders, a
decompression-bomb pixel limit and a memory bound per image checked before decoding,
JPEGs decoded at reduced scale. Every failure is an ImageError whose message becomes the
row's tag_error. tagging.photos.segment turns the decoded image into the model's input.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tagging.errors import ImageError

MAX_PIXELS = 80_000_000  # decompression-bomb limit (below Pillow's own warning level)
MAX_FILE_BYTES = 64 * 1024 * 1024
# Memory one photo may take while decoded and turned into RGB (see decode_bytes): the pixel
# limit alone lets a tiny 16-bit or RGBA file cost gigabytes.
MAX_DECODE_BYTES = 512 * 1024 * 1024
# Only these decoders ever see catalogue bytes: Pillow knows ~40 formats, some of which
# run external programs (EPS: Ghostscript) or are rarely audited. (The JPEG decoder also
# opens camera JPEGs as MPO.)
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
DRAFT_LONG_EDGE = 224  # JPEGs are decoded at the smallest scale keeping this many pixels
BACKGROUND = (255, 255, 255)  # transparent areas are composited onto white


def load_image_uri(uri: str, image_root: Path | str) -> bytes:
    """Read the bytes of `uri`, a relative path that must stay inside `image_root` (a
    folder, or an s3:// prefix)."""
    if not uri:
        raise ImageError("missing image")
    shown = uri if len(uri) <= 200 else uri[:200] + "..."
    if _URL.match(uri):
        raise ImageError(f"image_uri is a URL, not a path under the image root: {shown}")
    if str(image_root).startswith("s3://"):
        return _load_remote(uri, str(image_root), shown)
    try:
        root = Path(image_root).resolve()
        path = (root / uri).resolve()
    except (OSError, ValueError) as e:
        raise ImageError(f"invalid image_uri: {shown}") from e
    if not path.is_relative_to(root):
        raise ImageError(f"image_uri escapes the image root: {shown}")
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise ImageError(f"image_uri is not a file: {shown}")
        if size > MAX_FILE_BYTES:
            raise ImageError(f"image file too large: {size} bytes (limit {MAX_FILE_BYTES})")
        return path.read_bytes()
    except FileNotFoundError as e:
        raise ImageError(f"image_uri not found: {shown}") from e
    except OSError as e:
        raise ImageError(f"image_uri unreadable: {shown}: {e.strerror or e}") from e


def _load_remote(uri: str, image_root: str, shown: str) -> bytes:
    """load_image_uri under an s3:// image root: the same refusals as on disk (an object
    store has no symlinks, so the key's own `..` and absolute paths are what escapes)."""
    import posixpath

    from tagging import storage
    from tagging.errors import StorageError

    if "\0" in uri:
        raise ImageError(f"invalid image_uri: {shown}")
    key = posixpath.normpath(uri)
    if uri.startswith("/") or key == ".." or key.startswith("../") or key == ".":
        raise ImageError(f"image_uri escapes the image root: {shown}")
    obj = storage.Root(image_root) / key
    try:
        size = storage.identity(obj)[1]
        if size > MAX_FILE_BYTES:
            raise ImageError(f"image file too large: {size} bytes (limit {MAX_FILE_BYTES})")
        return storage.read_bytes(obj)
    except StorageError as e:
        if str(e).endswith(": not found"):
            raise ImageError(f"image_uri not found: {shown}") from None
        raise


def decode_photo(data: bytes | None, long_edge: int = DRAFT_LONG_EDGE) -> Image.Image:
    """Decode photo bytes into an upright RGB image (JPEGs at reduced scale, keeping at
    least `long_edge` pixels on the long edge)."""
    if data is None:
        raise ImageError("missing image")
    if len(data) == 0:
        raise ImageError("empty image")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            _check_size(image)
            image.seek(0)  # first frame of a GIF / animated WebP
            if image.format in ("JPEG", "MPO"):
                _draft(image, max(long_edge, DRAFT_LONG_EDGE))
            _check_memory(image)
            image.load()
            image = ImageOps.exif_transpose(image)
        except ImageError:
            raise
        except UnidentifiedImageError as e:
            refused = _other_format(data)
            if refused:
                raise ImageError(f"image format {refused} is not allowed "
                                 f"(only {', '.join(ALLOWED_FORMATS)})") from e
            raise ImageError("undecodable image: cannot identify image file") from e
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            found = re.search(r"\((\d+) pixels\)", str(e))
            size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
            raise ImageError(
                f"image too large: {size} (decompression bomb limit {MAX_PIXELS:,} pixels)"
            ) from e
        except OSError as e:
            if "truncated" in str(e).lower() or "broken data stream" in str(e):
                raise ImageError("truncated image") from e
            raise ImageError(f"undecodable image: {e}") from e
    return _to_rgb(image)


def _check_size(image: Image.Image) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError("empty image: zero pixels")
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"image too large: {width}x{height} pixels "
            f"(decompression bomb limit {MAX_PIXELS:,} pixels)"
        )


def _other_format(data: bytes) -> str | None:
    """The name of a format outside the allow-list that `data` starts like, if any.

    Only each plugin's magic-byte test runs (no parser): enough to name what was refused.
    """
    Image.init()
    prefix = data[:16]
    for name, (_, accept) in Image.OPEN.items():
        if name not in (*ALLOWED_FORMATS, "MPO") and accept is not None and accept(prefix):
            return name
    return None


# Bytes per pixel a decoded photo costs on its way to RGB (Pillow stores 3 bands in 4 bytes):
# the decoded image, then _to_rgb's copies (16/32-bit: a NumPy copy, an integer / float32
# work array, the 8-bit grey; alpha: RGBA, a white canvas and their composite), then RGB.
_DECODE_COST = {"1": 5, "L": 5, "P": 5, "RGB": 4, "I;16": 14, "I;16B": 14, "I;16L": 14,
                "I;16N": 14, "I": 18, "F": 18}
_ALPHA_COST = 20
_OTHER_COST = 8  # CMYK, YCbCr, LAB, HSV: 4 bytes, then RGB


def decode_bytes(image: Image.Image) -> int:
    """Memory (bytes) decoding `image` and converting it to RGB takes, before doing it."""
    width, height = image.size
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        cost = _ALPHA_COST
    else:
        cost = _DECODE_COST.get(image.mode, _OTHER_COST)
    return width * height * cost


def _check_memory(image: Image.Image) -> None:
    needed = decode_bytes(image)
    if needed > MAX_DECODE_BYTES:
        width, height = image.size
        raise ImageError(
            f"image too large: {width}x{height} {image.mode} pixels need {needed:,} bytes "
            f"to decode (limit {MAX_DECODE_BYTES:,} bytes)")


def _draft(image: Image.Image, long_edge: int) -> None:
    """Ask the JPEG decoder for the smallest DCT scale that keeps `long_edge` pixels."""
    width, height = image.size
    scale = long_edge / max(width, height)
    if scale < 0.5:
        image.draft(image.mode, (max(1, int(width * scale)), max(1, int(height * scale))))


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, whatever the mode: alpha onto white, palette, CMYK, 16-bit and 1-bit grey."""
    mode = image.mode
    if mode.startswith("I;16"):  # integers in place: no float64 copies of a large photo
        work = np.asarray(image).astype(np.uint32)
        work *= 255
        work += 32767
        work //= 65535
        return Image.fromarray(work.astype(np.uint8), "L").convert("RGB")
    if mode in ("I", "F"):
        work = np.asarray(image).astype(np.float32)
        work *= np.float32(255.0 / (65535.0 if work.max(initial=0) > 255 else 255.0))
        np.clip(work, 0, 255, out=work)
        np.rint(work, out=work)
        return Image.fromarray(work.astype(np.uint8), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image if mode == "RGB" else image.convert("RGB")
