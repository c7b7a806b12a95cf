"""Photo decoding and Fashion-MNIST-style preprocessing: bad inputs, modes, formats, fidelity."""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import encode, png_claiming
from PIL import Image, ImageDraw
from scipy import ndimage

from tagging.errors import ImageError
from tagging.photos import segment
from tagging.photos.decode import MAX_PIXELS, decode_photo, load_image_uri
from tagging.photos.render import PIXELS
from tagging.photos.segment import to_fashion_mnist


def trouser_photo(size: tuple[int, int] = (300, 400), product=(40, 40, 60),
                  background=(245, 243, 238)) -> Image.Image:
    """A dark, tall, two-legged product on an off-white background, with margins."""
    width, height = size
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 0.35 * width, 0.65 * width, 0.1 * height, 0.9 * height
    draw.rectangle([left, top, right, top + 0.15 * height], fill=product)
    draw.rectangle([left, top, left + 0.12 * width, bottom], fill=product)
    draw.rectangle([right - 0.12 * width, top, right, bottom], fill=product)
    return image


def foreground_box(pixels: np.ndarray, level: int = 40) -> tuple[int, int]:
    """Height and width of the bright (product) part of a preprocessed image."""
    rows, cols = np.nonzero(pixels > level)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return PIXELS.render(encode(trouser_photo(), "PNG"))


def test_output_is_fashion_mnist_form(reference):
    assert reference.shape == (28, 28) and reference.dtype == np.uint8
    height, width = foreground_box(reference)
    assert height == 28 and 8 <= width <= 14  # long edge 28, proportions kept, centred
    assert reference[:, :6].max() == 0 and reference[:, -6:].max() == 0  # black background
    assert np.median(reference[reference > 0]) > 200  # the dark product became bright
    assert reference[14:, 12:16].min(axis=1).max() < 128  # the gap between the legs is dark


def test_same_bytes_same_output():
    data = encode(trouser_photo(), "JPEG", quality=80)
    assert np.array_equal(PIXELS.render(data), PIXELS.render(data))


@pytest.mark.parametrize(("data", "message"), [
    (None, "missing image"),
    (b"", "empty image"),
    (b"this is not an image", "undecodable image: cannot identify image file"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "undecodable image"),
    (b"GIF89a" + b"\xff" * 40, "undecodable image"),
])
def test_bad_bytes_give_clear_errors(data, message):
    with pytest.raises(ImageError, match=f"^{re.escape(message)}"):
        PIXELS.render(data)


def test_truncated_jpeg():
    data = encode(trouser_photo(), "JPEG", quality=90)
    with pytest.raises(ImageError, match=r"^truncated image"):
        PIXELS.render(data[: len(data) // 2])


def test_truncated_png():
    data = encode(trouser_photo(), "PNG")
    with pytest.raises(ImageError, match=r"^(truncated|undecodable) image"):
        PIXELS.render(data[: len(data) // 2])


@pytest.mark.parametrize(("width", "height"), [(50_000, 50_000), (10_000, 8_500)])
def test_decompression_bomb_is_refused_before_decoding(width, height):
    """Far beyond Pillow's own limit, and just beyond ours (but under Pillow's)."""
    data = png_claiming(width, height)
    assert len(data) < 1000
    with pytest.raises(ImageError, match=r"^image too large.*decompression bomb"):
        PIXELS.render(data)


def test_just_under_the_pixel_limit_is_not_a_bomb():
    side = int(MAX_PIXELS**0.5) - 1
    with pytest.raises(ImageError) as caught:  # the header passes; the fake pixel data does not
        PIXELS.render(png_claiming(side, side))
    assert "too large" not in str(caught.value)


def test_blank_photo_has_no_product():
    with pytest.raises(ImageError, match=r"^blank image"):
        PIXELS.render(encode(Image.new("RGB", (200, 300), (250, 250, 250)), "PNG"))


def test_exif_rotation_is_applied():
    lying = trouser_photo((300, 400)).transpose(Image.Transpose.ROTATE_90)  # legs point right
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view: stands up again
    data = encode(lying, "JPEG", quality=90, exif=exif)
    assert decode_photo(data).size == (300, 400)
    height, width = foreground_box(PIXELS.render(data))
    assert height == 28 and width < 16


def as_mode(image: Image.Image, mode: str) -> tuple[Image.Image, str]:
    """The test photo converted to `mode`, and a format that stores that mode."""
    if mode == "RGBA":  # product opaque, background fully transparent (and black underneath)
        alpha = Image.fromarray(((np.asarray(image.convert("L")) < 128) * 255).astype(np.uint8))
        black = Image.new("RGB", image.size, (0, 0, 0))
        rgba = Image.composite(image, black, alpha).convert("RGBA")
        rgba.putalpha(alpha)
        return rgba, "PNG"
    if mode == "LA":
        grey = image.convert("L")
        grey_alpha = Image.merge("LA", (grey, Image.new("L", image.size, 255)))
        return grey_alpha, "PNG"
    if mode == "P-transparent":
        palette = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
        background_index = palette.getpixel((0, 0))
        palette.info["transparency"] = background_index
        return palette, "PNG"
    if mode == "I;16":
        grey = np.asarray(image.convert("L"), dtype=np.uint16) * 257
        return Image.fromarray(grey), "PNG"
    if mode == "CMYK":
        return image.convert("CMYK"), "JPEG"
    if mode == "1":
        return image.convert("L").point(lambda v: 255 if v > 128 else 0).convert("1"), "PNG"
    return image.convert(mode), "PNG"


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "P-transparent", "CMYK", "I;16", "L", "1"])
def test_image_modes_give_the_same_product(mode, reference):
    image, fmt = as_mode(trouser_photo(), mode)
    data = encode(image, fmt)
    decoded = decode_photo(data)
    assert decoded.mode == "RGB"
    pixels = PIXELS.render(data)
    assert np.abs(pixels.astype(int) - reference).mean() < 12, mode


def test_sixteen_bit_values_are_scaled_not_clipped():
    grey = np.full((120, 90), 60000, np.uint16)
    grey[20:100, 30:60] = 5000  # dark product on a light (16-bit) background
    decoded = decode_photo(encode(Image.fromarray(grey), "PNG"))
    values = np.asarray(decoded)
    assert abs(int(values[0, 0, 0]) - 60000 // 257) <= 1
    assert abs(int(values[50, 45, 0]) - 5000 // 257) <= 1


def test_transparent_areas_are_background():
    image, _ = as_mode(trouser_photo(), "RGBA")
    pixels = PIXELS.render(encode(image, "PNG"))
    assert pixels[:, :6].max() == 0 and foreground_box(pixels)[0] == 28


@pytest.mark.parametrize(("fmt", "options"), [
    ("JPEG", {"quality": 70}), ("PNG", {}), ("WEBP", {"quality": 80}), ("GIF", {}),
])
def test_formats(fmt, options, reference):
    pixels = PIXELS.render(encode(trouser_photo(), fmt, **options))
    assert np.abs(pixels.astype(int) - reference).mean() < 12


def test_animated_gif_uses_the_first_frame(reference):
    first = trouser_photo().convert("P")
    second = Image.new("RGB", (300, 400), (0, 0, 0)).convert("P")
    data = encode(first, "GIF", save_all=True, append_images=[second], duration=100)
    assert np.abs(PIXELS.render(data).astype(int) - reference).mean() < 12


@pytest.mark.parametrize("width", [28, 64, 400, 1500, 4000])
def test_photo_sizes(width, reference):
    photo = trouser_photo((width, width * 4 // 3))
    pixels = PIXELS.render(encode(photo, "JPEG", quality=90))
    assert np.abs(pixels.astype(int) - reference).mean() < (25 if width < 64 else 12)


def test_large_jpeg_is_decoded_at_reduced_scale():
    decoded = decode_photo(encode(trouser_photo((4000, 3000)), "JPEG", quality=85))
    assert 224 <= max(decoded.size) <= 1000  # 1/8 DCT scale, still >= 8x the 28 px output


def test_light_product_on_light_background():
    photo = trouser_photo(product=(225, 226, 230), background=(248, 247, 245))
    height, width = foreground_box(PIXELS.render(encode(photo, "PNG")))
    assert height == 28 and width < 16


def test_product_on_a_textured_background():
    rng = np.random.default_rng(0)
    floor = rng.integers(150, 200, (400, 300, 1)) * np.array([[[1.0, 0.8, 0.6]]])
    photo = np.asarray(trouser_photo(product=(30, 30, 90)), dtype=np.float64)
    is_product = photo[..., 2] < 100
    photo = np.where(is_product[..., None], photo, floor).astype(np.uint8)
    height, width = foreground_box(PIXELS.render(encode(Image.fromarray(photo), "JPEG")))
    assert height == 28 and width < 16


def render_demo_photo(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    """A Fashion-MNIST image as a shop photo: negated, upscaled, tinted, off-centre, JPEG."""
    width, height = 762, 1000
    side = int(rng.uniform(0.55, 0.85) * width)
    product = Image.fromarray(pixels).resize((side, side), Image.Resampling.BICUBIC)
    alpha = np.asarray(product, dtype=np.float64)[..., None] / 255
    background = rng.uniform(235, 252, size=3)
    tint = rng.uniform(20, 140, size=3)
    canvas = np.empty((height, width, 3))
    canvas[:] = background
    left, top = rng.integers(0, width - side), rng.integers(0, height - side)
    region = canvas[top:top + side, left:left + side]
    region[:] = region * (1 - alpha) + tint * alpha
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    return encode(image, "JPEG", quality=int(rng.integers(60, 96)))


def test_rendered_fashion_mnist_photos_come_back(fmnist):
    rng = np.random.default_rng(0)
    originals = fmnist.x_test[:60]
    restored = np.stack([PIXELS.render(render_demo_photo(x, rng)) for x in originals])
    diff = np.abs(restored.astype(int) - originals.astype(int)).mean(axis=(1, 2))
    assert diff.mean() < 18, diff
    correlation = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(
        restored.astype(float), originals.astype(float), strict=True)]
    assert np.median(correlation) > 0.9 and min(correlation) > 0.6


def test_to_fashion_mnist_accepts_any_mode(reference):
    pixels = to_fashion_mnist(trouser_photo().convert("L"))
    assert np.abs(pixels.astype(int) - reference).mean() < 12


def test_image_uri_inside_the_root(tmp_path):
    (tmp_path / "a").mkdir()
    data = encode(trouser_photo(), "PNG")
    (tmp_path / "a" / "b.png").write_bytes(data)
    assert load_image_uri("a/b.png", tmp_path) == data


@pytest.mark.parametrize(("uri", "message"), [
    ("../../etc/passwd", "image_uri escapes the image root: ../../etc/passwd"),
    ("/etc/passwd", "image_uri escapes the image root: /etc/passwd"),
    ("a/../../outside.png", "image_uri escapes the image root"),
    ("a/missing.jpg", "image_uri not found: a/missing.jpg"),
    ("a", "image_uri is not a file: a"),
    ("", "missing image"),
    ("bad\x00name", "invalid image_uri"),
])
def test_bad_image_uris(uri, message, tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(ImageError, match=f"^{re.escape(message)}"):
        load_image_uri(uri, tmp_path)


def test_symlink_out_of_the_root_is_refused(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "secret.png"
    root.mkdir()
    outside.write_bytes(encode(trouser_photo(), "PNG"))
    (root / "link.png").symlink_to(outside)
    with pytest.raises(ImageError, match=r"^image_uri escapes the image root"):
        load_image_uri("link.png", root)


# The segmentation's OpenCV kernels must give exactly the masks of the scipy.ndimage
# operations they replaced (cross structuring element, outside = background, 4-connectivity).
@pytest.fixture(scope="module")
def blobs() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [ndimage.gaussian_filter(rng.random((90, 70)), 2.0) > t for t in (0.5, 0.52, 0.55)]


def test_morphology_matches_scipy(blobs):
    cross = ndimage.generate_binary_structure(2, 1)
    for mask in blobs:
        assert np.array_equal(segment._close(mask, 2),
                              ndimage.binary_closing(mask, cross, iterations=2, border_value=0))
        assert np.array_equal(segment._open(mask, 2), ndimage.binary_opening(mask, iterations=2))
        assert np.array_equal(segment._dilate(mask, 3), ndimage.binary_dilation(mask, iterations=3))
        assert np.array_equal(segment._fill_holes(mask), ndimage.binary_fill_holes(mask))
        count, labels, sizes = segment._components(mask)
        expected, n = ndimage.label(mask)
        assert count == n > 1 and np.array_equal(labels, expected)
        assert np.array_equal(sizes, np.bincount(expected.ravel())[1:])


def test_blur_matches_scipy():
    values = np.random.default_rng(2).random((60, 50)).astype(np.float32) * 255
    for sigma in (1.0, 2.4):
        assert np.allclose(segment._blur(values, sigma), ndimage.gaussian_filter(values, sigma),
                           atol=1e-3)


def test_kmeans_centres_are_the_means_of_their_pixels():
    rng = np.random.default_rng(3)
    pixels = np.concatenate([rng.normal(c, 12, (300, 3)) for c in (40, 128, 220)])
    pixels = np.clip(pixels, 0, 255).round().astype(np.float32)
    centres = segment._kmeans(pixels, 3)
    nearest = segment._squared_distances(pixels, centres).argmin(axis=1)
    assert sorted(np.bincount(nearest)) == [300, 300, 300]
    for k, centre in enumerate(centres):  # converged: each centre is its cluster's exact mean
        assert np.array_equal(centre, pixels[nearest == k].astype(np.float64).mean(axis=0)
                              .astype(np.float32))
