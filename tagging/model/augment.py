"""Photo-like variants of Fashion-MNIST images, for training a classifier that meets real photos.

Each variant imitates what `tagging.photos.segment` makes of a real photo: the product seen at a
slightly different angle and a quite different aspect (photos are not all side views),
mirrored, sometimes with its sleeves swung out as garments lie when photographed flat, then
re-framed (longest edge 28, centred), with imperfect segmentation (a filled silhouette,
eroded or grown edges, stray background blobs), other lighting (gamma, contrast, texture
inverted inside the object), blur and noise, then re-normalised so the brightest object
pixels are white. NumPy / SciPy only, vectorised over chunks of images.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SIZE = 28
CHUNK = 8192
MAX_ROTATION = np.deg2rad(12)
SCALE_RANGE = (0.6, 1.4)  # per axis, so the aspect ratio changes too
MAX_SHEAR = 0.12
P_FLIP = 0.5
P_SPREAD = 0.25  # sleeves swung out, as garments lie when photographed flat
SPREAD_DEGREES = (15.0, 45.0)
SPREAD_SHRINK = 0.75
SPREAD_SHOULDER_ROW = 4.0
SPREAD_BODY_HALF_WIDTH = 9.0  # Fashion-MNIST tops: sleeves in the outer ~4 columns
P_FILL = 0.35  # interior raised to a floor: the segmenter's filled silhouette
P_EDGE = 0.3  # edges eroded or grown by a pixel
P_BLOBS = 0.3  # stray background pieces next to the product
P_INVERT = 0.15  # texture inverted inside the object (light product, dark surroundings)
GAMMA_RANGE = (0.5, 1.8)
BLUR_SIGMAS = (0.0, 0.0, 0.5, 0.8)
MAX_NOISE = 0.08


def augment_training_set(x: np.ndarray, seed: int) -> np.ndarray:
    """uint8 (n, 28, 28) -> photo-like uint8 (n, 28, 28) variants, same order, seeded."""
    if x.ndim != 3 or x.shape[1:] != (SIZE, SIZE):
        raise ValueError(f"expected images of shape (n, {SIZE}, {SIZE}), got {x.shape}")
    rng = np.random.default_rng(seed)
    out = np.empty_like(x, dtype=np.uint8)
    for start in range(0, len(x), CHUNK):
        chunk = x[start:start + CHUNK].astype(np.float32) / 255
        out[start:start + CHUNK] = _to_uint8(_augment(chunk, rng))
    return out


def _augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    images = _warp(images, rng)
    spread = rng.random(len(images)) < P_SPREAD
    if spread.any():
        images[spread] = _reframe(_spread_sides(images[spread], rng))
    mask = images > 0.05
    images = _segmentation_errors(images, mask, rng)
    mask = images > 0.05
    images = _lighting(images, mask, rng)
    images = _blur(images, rng)
    noise = rng.normal(0, 1, images.shape) * rng.uniform(0, MAX_NOISE, (len(images), 1, 1))
    images = np.where(images > 0.02, images + noise.astype(np.float32), 0)
    return _normalise(images)


def _warp(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random rotation, per-axis scale, shear and mirror, re-framed to fill the 28 px box."""
    n = len(images)
    angle = rng.uniform(-MAX_ROTATION, MAX_ROTATION, n)
    scale = rng.uniform(*SCALE_RANGE, (n, 2))
    shear = rng.uniform(-MAX_SHEAR, MAX_SHEAR, n)
    flip = np.where(rng.random(n) < P_FLIP, -1.0, 1.0)
    cos, sin = np.cos(angle), np.sin(angle)
    # forward map of (row, col) offsets from the object's centre: rotate @ shear @ scale @ flip
    forward = np.empty((n, 2, 2))
    forward[:, 0, 0] = cos * scale[:, 0]
    forward[:, 0, 1] = (-sin + cos * shear) * scale[:, 1] * flip
    forward[:, 1, 0] = sin * scale[:, 0]
    forward[:, 1, 1] = (cos + sin * shear) * scale[:, 1] * flip
    top, bottom, left, right = _boxes(images > 0.02)
    centre = np.stack([(top + bottom) / 2, (left + right) / 2], axis=1)
    corners = np.stack([np.stack([r, c], axis=1) for r in (top, bottom) for c in (left, right)],
                       axis=1) - centre[:, None]  # (n, 4, 2)
    moved = np.einsum("nij,nkj->nki", forward, corners)
    extent = (moved.max(axis=1) - moved.min(axis=1)).max(axis=1)  # long edge after the warp
    fit = (SIZE - 1) / np.maximum(extent, 1.0)
    inverse = np.linalg.inv(forward * fit[:, None, None])
    grid = np.stack(np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij"), -1)
    offsets = grid.reshape(-1, 2) - (SIZE - 1) / 2  # (784, 2)
    source = np.einsum("nij,pj->npi", inverse, offsets) + centre[:, None]
    return _bilinear(images, source[..., 0], source[..., 1]).reshape(images.shape)


def _spread_sides(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Swing the outer parts (sleeves) out and up about the shoulders: a garment laid flat.

    The image is first shrunk by SPREAD_SHRINK about its centre to leave room.
    """
    n = len(images)
    angle = np.deg2rad(rng.uniform(*SPREAD_DEGREES, n))[:, None, None]
    rows, cols = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    centre = (SIZE - 1) / 2
    side = np.sign(cols - centre)[None]
    pivot_row = centre + (SPREAD_SHOULDER_ROW - centre) * SPREAD_SHRINK
    pivot_col = centre + side * SPREAD_BODY_HALF_WIDTH * SPREAD_SHRINK
    dr, dc = rows[None] - pivot_row, cols[None] - pivot_col
    turn = -side * angle  # the left side turns clockwise, the right side counter-clockwise
    src_r = pivot_row + np.cos(turn) * dr - np.sin(turn) * dc
    src_c = pivot_col + np.sin(turn) * dr + np.cos(turn) * dc
    outer = np.abs(cols - centre)[None] > SPREAD_BODY_HALF_WIDTH * SPREAD_SHRINK
    src_r = np.where(outer, src_r, rows[None])
    src_c = np.where(outer, src_c, cols[None])
    src_r = centre + (src_r - centre) / SPREAD_SHRINK  # undo the shrink: sample the original
    src_c = centre + (src_c - centre) / SPREAD_SHRINK
    # a swung sleeve only carries sleeve pixels, never the body it swung away from
    body = outer & (np.abs(src_c - centre) < SPREAD_BODY_HALF_WIDTH - 0.5)
    src_c = np.where(body, -10.0, src_c)  # far outside: samples zero
    return _bilinear(images, src_r.reshape(n, -1), src_c.reshape(n, -1)).reshape(images.shape)


def _reframe(images: np.ndarray) -> np.ndarray:
    """Scale and move each object so that its longest edge spans the box, centred."""
    top, bottom, left, right = _boxes(images > 0.02)
    extent = np.maximum(bottom - top, right - left).astype(np.float64) + 1
    fit = SIZE / np.maximum(extent, 1.0)
    centre = np.stack([(top + bottom) / 2, (left + right) / 2], axis=1)
    grid = np.stack(np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij"), -1)
    offsets = grid.reshape(-1, 2) - (SIZE - 1) / 2
    source = offsets[None] / fit[:, None, None] + centre[:, None]
    return _bilinear(images, source[..., 0], source[..., 1]).reshape(images.shape)


def _boxes(mask: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per image: first and last row / column holding the object (whole image if empty)."""
    rows, cols = mask.any(axis=2), mask.any(axis=1)
    empty = ~rows.any(axis=1)
    top = np.where(empty, 0, rows.argmax(axis=1))
    bottom = np.where(empty, SIZE - 1, SIZE - 1 - rows[:, ::-1].argmax(axis=1))
    left = np.where(empty, 0, cols.argmax(axis=1))
    right = np.where(empty, SIZE - 1, SIZE - 1 - cols[:, ::-1].argmax(axis=1))
    return top, bottom, left, right


def _bilinear(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample each image at (rows, cols) (n, p), zero outside the image."""
    n, pad = len(images), 2
    width = SIZE + 2 * pad
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad))).reshape(n, -1)
    r = np.clip(rows + pad, 0, width - 2)  # far outside lands in the zero padding
    c = np.clip(cols + pad, 0, width - 2)
    r0, c0 = np.floor(r).astype(np.int64), np.floor(c).astype(np.int64)
    fr, fc = (r - r0).astype(np.float32), (c - c0).astype(np.float32)

    def at(dr: int, dc: int) -> np.ndarray:
        return np.take_along_axis(padded, (r0 + dr) * width + c0 + dc, axis=1)

    top = at(0, 0) * (1 - fc) + at(0, 1) * fc
    bottom = at(1, 0) * (1 - fc) + at(1, 1) * fc
    return top * (1 - fr) + bottom * fr


def _segmentation_errors(images: np.ndarray, mask: np.ndarray, rng: np.random.Generator
                         ) -> np.ndarray:
    n = len(images)
    filled = ndimage.binary_fill_holes(mask, structure=np.ones((1, 3, 3), bool))
    floor = np.where(rng.random(n) < P_FILL, rng.uniform(0.2, 0.6, n), 0.0)[:, None, None]
    images = np.where(filled, np.maximum(images, floor.astype(np.float32)), images)
    edge = rng.random(n)
    grow = edge < P_EDGE / 2
    shrink = (edge >= P_EDGE / 2) & (edge < P_EDGE)
    cross = ndimage.generate_binary_structure(2, 1)[None]
    if grow.any():
        grown = ndimage.grey_dilation(images[grow], footprint=cross)
        images[grow] = np.where(filled[grow], images[grow], grown * 0.8)
    if shrink.any():
        images[shrink] *= ndimage.binary_erosion(filled[shrink], cross)
    return images + _blobs(filled, rng)


def _blobs(filled: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Faint pieces of background stuck to the object (segmentation leaks)."""
    n = len(filled)
    blobs = np.zeros(filled.shape, np.float32)
    chosen = np.nonzero(rng.random(n) < P_BLOBS)[0]
    if not len(chosen):
        return blobs
    rows = rng.integers(0, SIZE, len(chosen))
    cols = rng.integers(0, SIZE, len(chosen))
    blobs[chosen, rows, cols] = rng.uniform(3, 12, len(chosen))
    blobs[chosen] = ndimage.gaussian_filter(blobs[chosen], (0, 1.2, 1.2))
    near = ndimage.binary_dilation(filled[chosen], iterations=3)
    blobs[chosen] = np.where(near & ~filled[chosen], np.minimum(blobs[chosen], 0.6), 0)
    return blobs


def _lighting(images: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(images)
    gamma = np.exp(rng.uniform(*np.log(GAMMA_RANGE), n)).astype(np.float32)[:, None, None]
    images = np.power(np.clip(images, 0, None), gamma)
    invert = (rng.random(n) < P_INVERT)[:, None, None]
    return np.where(invert & mask, np.clip(1.15 - images, 0.15, 1), images)


def _blur(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = rng.choice(BLUR_SIGMAS, len(images))
    for value in np.unique(sigma[sigma > 0]):
        chosen = sigma == value
        images[chosen] = ndimage.gaussian_filter(images[chosen], (0, value, value))
    return images


def _normalise(images: np.ndarray) -> np.ndarray:
    """Brightest pixels (top 0.5 %) to white, as the photo preprocessing does."""
    white = np.percentile(images.reshape(len(images), -1), 99.5, axis=1)
    return images / np.maximum(white, 0.05)[:, None, None].astype(np.float32)


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)
