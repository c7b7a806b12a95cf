"""A decoded photo -> 28x28 Fashion-MNIST-style input: segmentation and normalisation.

Follows how Fashion-MNIST was made (trim the background, longest edge to 28, centre, negate,
8-bit grey), generalised to real photos: the background colour(s) are estimated from the
border; the foreground is segmented (colour distance and outlines on plain backgrounds, an
iterated colour model on cluttered ones), not only trimmed to a rectangle; the main object is
kept; a garment worn by a model is separated from the head, skin and the other garment; the
object's contrast is normalised (faint, light products lifted). The whole path from bytes
(tagging.photos.decode, the security boundary) to pixels is tagging.photos.render's
`PIXELS.render`. No TensorFlow here: this runs in decoding worker processes.

Over 400 lines on purpose: one algorithm, its parameters and the OpenCV primitives it runs on
(each equal to the SciPy operation it replaced, see tests/test_imaging.py), read in order.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage

from tagging.errors import ImageError

# Decoding runs in one worker process per core: OpenCV's own threads would oversubscribe them.
cv2.setNumThreads(1)

SIZE = 28
WORK_LONG_EDGE = 160  # segmentation resolution (>= 4x the 28 px output)

# Segmentation parameters (fractions are of the working image's long edge).
BORDER_FRACTION = 0.02
BG_CLUSTERS = 6
SUPPORT_DISTANCE = 12.0  # border pixels this close to a colour support it as background
BG_MIN_SHARE = 0.25
BG_SIDE_SHARE = 0.1
NOISE_PERCENTILE = 80
MIN_THRESHOLD = 14.0  # colour distance (0-255 grey scale) that always counts as foreground
NOISE_FACTOR = 2.5  # threshold = max(MIN_THRESHOLD, NOISE_FACTOR * border distance percentile)
EDGE_THRESHOLD = 10.0  # gradient magnitude marking an object outline on a plain background
PLAIN_BORDER_NOISE = 6.0  # border noise below which the background counts as plain
MIN_OBJECT, MAX_OBJECT = 0.03, 0.85  # plausible object area (share of the photo) for a seed
COLOUR_BINS = 8
REFINE_ITERATIONS = 5
SMOOTH_SIGMA = 0.015
PERSON_MIN_ASPECT = 1.2  # a model wearing the product: taller than wide, ...
PERSON_HEAD_SKIN = 0.2  # ... with skin over this share of the top fifth, centred, ...
PERSON_HEAD_WIDTH = 0.5  # ... the head narrower than the shoulders, ...
PERSON_MAX_SKIN = 0.4  # ... and not a skin-coloured product
PERSON_MIN_GARMENT = 0.2
PERSON_MIN_PART = 0.1  # a top / bottom split needs both parts this big (share of garment)
KEEP_NEAR_FRACTION = 0.04  # other blobs within this distance of the main object are kept
FILL_FLOOR = 0.2  # minimum intensity inside the object (a filled silhouette, like Fashion-MNIST)
MIN_MEDIAN = 0.45  # faint (light) objects are lifted to this median intensity
WHITE_POINT_PERCENTILE = 99.0
TRIM_FRACTION = 0.05


def to_fashion_mnist(image: Image.Image) -> np.ndarray:
    """Segment the product and render it like Fashion-MNIST: bright on black, centred, 28 px."""
    pixels = _working_pixels(image)
    if colour_range(pixels) < MIN_THRESHOLD:
        raise ImageError("blank image: no product found")
    strength, mask = segment(pixels.astype(np.float32))
    if not mask.any():
        mask = _central_ellipse(mask.shape)
    top, bottom, left, right = _trim_box(strength, mask)
    crop = np.where(mask, strength, 0.0)[top:bottom, left:right]
    return _render(_normalise(crop, mask[top:bottom, left:right]))


def _trim_box(strength: np.ndarray, mask: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box of the object's pixels above TRIM_FRACTION of its peak (as Fashion-MNIST)."""
    inside = strength[mask]
    solid = mask & (strength > TRIM_FRACTION * float(np.percentile(inside, 99)))
    left, top, width, height = cv2.boundingRect(
        (solid if solid.sum() >= 0.5 * mask.sum() else mask).view(np.uint8))
    return top, top + height, left, left + width


def _working_pixels(image: Image.Image) -> np.ndarray:
    """The photo as uint8 RGB with its long edge WORK_LONG_EDGE."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    width, height = image.size
    scale = WORK_LONG_EDGE / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size != image.size:
        resample = Image.Resampling.BILINEAR if scale > 1 else Image.Resampling.BOX
        image = image.resize(size, resample, reducing_gap=None if scale > 1 else 2.0)
    return np.asarray(image)


def colour_range(pixels: np.ndarray) -> int:
    """The largest per-channel range (max - min) of a uint8 RGB image."""
    return max(int(high) - int(low) for low, high, *_ in map(cv2.minMaxLoc, cv2.split(pixels)))


def segment(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Foreground strength (0-255) and the object mask.

    Plain backgrounds: the distance to the border's colours, thresholded above the border's
    own noise, plus object outlines. Cluttered backgrounds: that mask (or a central ellipse)
    refined by iterated colour models of object and background (a light-weight GrabCut).
    """
    band = max(1, round(BORDER_FRACTION * max(rgb.shape[:2])))
    sides = _border_sides(rgb, band)
    border = np.concatenate(sides)
    centres = _kmeans(border, BG_CLUSTERS)
    to_centres = _squared_distances(border, centres).T  # (k, border pixels)
    keep = _background_colours(to_centres, [len(side) for side in sides])
    centres = centres[keep]
    strength = _distance_to(rgb, centres)
    noise = float(np.percentile(np.sqrt(to_centres[keep].min(axis=0) / 3.0), NOISE_PERCENTILE))
    mask = _blur(strength, 1.0) > max(MIN_THRESHOLD, NOISE_FACTOR * noise)
    if noise < PLAIN_BORDER_NOISE:  # plain background: outlines also delimit light objects
        mask = _clean_mask(mask | (_gradient(rgb) > EDGE_THRESHOLD))
    else:
        mask = _clean_mask(mask)
        if not MIN_OBJECT < mask.mean() < MAX_OBJECT:
            mask = _central_ellipse(mask.shape)
        mask = _refine_by_colour(rgb, mask, band)
        strength = _cluttered_strength(rgb)
    if mask.any() and _worn_by_a_person(rgb, mask):
        mask = _garment_of(rgb, mask)
    return strength, mask


def _skin(rgb: np.ndarray) -> np.ndarray:
    """Skin-coloured pixels (Chai & Ngan's YCbCr box)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return (cb >= 77) & (cb <= 127) & (cr >= 133) & (cr <= 173) & (luma > 40)


def _worn_by_a_person(rgb: np.ndarray, mask: np.ndarray) -> bool:
    """A tall object with a face-like skin patch centred at its top: a model wearing it."""
    left, top, width, height = cv2.boundingRect(mask.view(np.uint8))
    if height < PERSON_MIN_ASPECT * width:
        return False
    skin = _skin(rgb) & mask
    head = slice(top, top + max(1, height // 5))
    head_skin = skin[head, left:left + width]
    if not head_skin.any() or skin.sum() > PERSON_MAX_SKIN * mask.sum():
        return False
    head_cols = np.nonzero(mask[head].any(axis=0))[0]
    narrow_head = head_cols.max() + 1 - head_cols.min() < PERSON_HEAD_WIDTH * width
    centre = np.nonzero(head_skin)[1].mean() / width
    return (narrow_head and head_skin.sum() > PERSON_HEAD_SKIN * mask[head].sum()
            and 1 / 3 < centre < 2 / 3)


def _garment_of(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The garment on show: head and skin removed, then the larger of a top / bottom split."""
    skin = _dilate(_open(_skin(rgb) & mask, 1), 1)
    rows = np.nonzero(mask)[0]
    head_zone = np.zeros_like(mask)
    head_zone[rows.min():rows.min() + max(1, (rows.max() + 1 - rows.min()) // 5)] = True
    face = _largest(skin & head_zone)
    below_face = np.arange(mask.shape[0])[:, None] > np.nonzero(face)[0].max()
    garment = _fill_holes(_largest(_open(mask & ~skin & below_face, 2)))
    if garment.sum() < PERSON_MIN_GARMENT * mask.sum():
        return mask
    colours = rgb[garment]
    centres = _kmeans(colours, 2)
    which = _squared_distances(colours, centres).argmin(axis=1)
    rows = np.nonzero(garment)[0]
    sizes = np.bincount(which, minlength=2)
    if sizes.min() < PERSON_MIN_PART * len(which):
        return garment
    row_means = np.bincount(which, rows, 2) / sizes
    if abs(row_means[0] - row_means[1]) < 0.3 * (rows.max() + 1 - rows.min()):
        return garment  # not a top / bottom split (a print, a pattern)
    part = np.zeros_like(garment)
    part[garment] = which == np.argmax(sizes)
    return _largest(_fill_holes(_close(part, 2)))


# Binary morphology on bool masks with OpenCV's kernels (viewed as 0/1 uint8, no copy): a
# 3x3 cross iterated, pixels outside the image counted as background, and 4-connected
# components, as scipy.ndimage's defaults (which this module used before: same masks).
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    return cv2.dilate(mask.view(np.uint8), _CROSS, iterations=iterations,
                      borderType=cv2.BORDER_CONSTANT, borderValue=0).view(bool)


def _erode(mask: np.ndarray, iterations: int) -> np.ndarray:
    return cv2.erode(mask.view(np.uint8), _CROSS, iterations=iterations,
                     borderType=cv2.BORDER_CONSTANT, borderValue=0).view(bool)


def _open(mask: np.ndarray, iterations: int) -> np.ndarray:
    return _dilate(_erode(mask, iterations), iterations)


def _close(mask: np.ndarray, iterations: int) -> np.ndarray:
    return _erode(_dilate(mask, iterations), iterations)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask plus the background not 4-connected to the image's edge."""
    outside = np.pad(mask.view(np.uint8), 1)
    cv2.floodFill(outside, None, (0, 0), 2, flags=4)  # the background reached from the edge
    return outside[1:-1, 1:-1] != 2


def _components(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Count, label image (0 = background) and pixel count of each 4-connected component."""
    count, labels = cv2.connectedComponents(mask.view(np.uint8), connectivity=4)
    return count - 1, labels, np.bincount(labels.ravel(), minlength=count)[1:]


def _largest(mask: np.ndarray) -> np.ndarray:
    count, labels, sizes = _components(mask)
    if count <= 1:
        return mask
    return labels == (np.argmax(sizes) + 1)


def _central_ellipse(shape: tuple[int, int]) -> np.ndarray:
    rows, cols = np.ogrid[:shape[0], :shape[1]]
    dy = (rows - (shape[0] - 1) / 2) / (0.35 * shape[0])
    dx = (cols - (shape[1] - 1) / 2) / (0.35 * shape[1])
    return dy**2 + dx**2 <= 1


def _blur(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing as scipy.ndimage.gaussian_filter's defaults (4 sigma, mirrored edge)."""
    size = 2 * int(4 * sigma + 0.5) + 1
    return cv2.GaussianBlur(values, (size, size), sigma, borderType=cv2.BORDER_REFLECT)


def _refine_by_colour(rgb: np.ndarray, mask: np.ndarray, band: int) -> np.ndarray:
    """Re-label pixels by object/background colour histograms, smoothed in space; iterate."""
    bins = COLOUR_BINS
    quantised = (np.minimum(rgb, 255) * (bins / 256)).astype(np.int32)
    index = quantised @ np.array([bins * bins, bins, 1], np.int32)
    everything = _smoothed_histogram(index.ravel())
    border = np.ones(mask.shape, bool)
    border[band:-band, band:-band] = False
    for _ in range(REFINE_ITERATIONS):
        if not mask.any() or mask.all():
            break
        inside = _smoothed_histogram(index[mask])
        # log p(colour | object) - log p(colour | background); smoothing is linear, so the
        # background's histogram is the whole image's minus the object's
        log_ratio = (_log_density(inside) - _log_density(everything - inside)).astype(np.float32)
        new = _clean_mask((_blur(log_ratio[index], SMOOTH_SIGMA * max(mask.shape)) > 0)
                          & ~border)
        if np.array_equal(new, mask):
            break
        mask = new
    return mask


# Smoothing of a colour histogram along one axis (sigma 0.7 bins, mirrored edges), as a matrix.
_HISTOGRAM_SMOOTHING = ndimage.gaussian_filter1d(np.eye(COLOUR_BINS), 0.7, axis=0)


def _smoothed_histogram(colour_index: np.ndarray) -> np.ndarray:
    """Counts of each quantised colour, smoothed over neighbouring colours (flat, float64)."""
    bins = COLOUR_BINS
    counts = np.bincount(colour_index, minlength=bins**3).reshape(bins, bins, bins)
    counts = counts.astype(np.float64)
    for _ in range(3):  # each pass smooths the last axis and moves it to the front
        counts = np.tensordot(_HISTOGRAM_SMOOTHING, counts, axes=(1, 2))
    return counts.ravel()


def _log_density(counts: np.ndarray) -> np.ndarray:
    counts = counts + 0.1
    return np.log(counts / counts.sum())


def _cluttered_strength(rgb: np.ndarray) -> np.ndarray:
    """Object intensity on a cluttered background: its negated grey, as if shot on white."""
    grey = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.maximum(255.0 - grey, 1.0)


def _border_sides(rgb: np.ndarray, width: int) -> list[np.ndarray]:
    """The pixels of the top, bottom, left and right border bands."""
    return [rgb[:width].reshape(-1, 3), rgb[-width:].reshape(-1, 3),
            rgb[:, :width].reshape(-1, 3), rgb[:, -width:].reshape(-1, 3)]


def _background_colours(to_centres: np.ndarray, side_lengths: list[int]) -> np.ndarray:
    """Which border colours are background: widespread, not a product touching an edge or two.

    to_centres: squared distances (clusters, border pixels), the border's four sides in a row.
    A colour counts when the pixels near it make up BG_MIN_SHARE of the whole border, or
    BG_SIDE_SHARE of at least three of the four sides; the most common one always counts.
    """
    near = to_centres < 3 * SUPPORT_DISTANCE**2
    ends = np.cumsum([0, *side_lengths])
    side_share = np.stack([near[:, a:b].mean(axis=1) for a, b in itertools.pairwise(ends)])
    total = near.mean(axis=1)
    keep = (total >= BG_MIN_SHARE) | ((side_share >= BG_SIDE_SHARE).sum(axis=0) >= 3)
    keep[np.argmax(total)] = True
    return keep


def _kmeans(pixels: np.ndarray, k: int, iterations: int = 8) -> np.ndarray:
    """Deterministic k-means of colours (initialised at luminance quantiles).

    Iterates over the distinct colours weighted by their counts (a photo repeats its colours
    a lot). They are whole numbers (uint8 values as floats): the float64 sums are exact, so
    the centres are the exact means of the pixels, as if each pixel were visited.
    """
    order = np.argsort(pixels.sum(axis=1), kind="stable")
    centres = pixels[order[((np.arange(k) + 0.5) * len(order) / k).astype(int)]].copy()
    keys, counts = np.unique(pixels.astype(np.int32) @ np.array([65536, 256, 1], np.int32),
                             return_counts=True)
    colours = np.stack([keys >> 16, (keys >> 8) & 255, keys & 255], axis=1)
    weighted = (colours * counts[:, None]).T.astype(np.float64)
    colours = colours.astype(np.float32)
    previous = None
    for _ in range(iterations):
        nearest = _squared_distances(colours, centres).argmin(axis=1)
        if previous is not None and np.array_equal(nearest, previous):
            break  # assignments settled: the centres would not move
        previous = nearest
        members = np.bincount(nearest, counts, k)
        sums = np.stack([np.bincount(nearest, channel, k) for channel in weighted], axis=1)
        used = members > 0
        centres[used] = sums[used] / members[used, None]
    return centres


def _squared_distances(pixels: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(n, k) squared colour distances of pixels (n, 3) to centres (k, 3), channels summed
    in order."""
    planes = pixels.T[:, :, None] - centres.T[:, None, :]  # (3, n, k): a contiguous plane each
    planes *= planes
    return planes[0] + planes[1] + planes[2]


def _distance_to(rgb: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Distance of each pixel to the nearest background colour, on a 0-255 grey scale."""
    channels = cv2.split(rgb)  # contiguous planes: far faster than strided channel views
    nearest = None
    for centre in centres:  # one centre at a time: no (h, w, k) temporary
        squared = channels[0] - centre[0]
        squared *= squared
        for channel, value in zip(channels[1:], centre[1:], strict=True):
            diff = channel - value
            diff *= diff
            squared += diff
        nearest = squared if nearest is None else np.minimum(nearest, squared, out=nearest)
    return np.sqrt(nearest / 3.0)


def _gradient(rgb: np.ndarray) -> np.ndarray:
    grey = _blur(rgb @ np.full(3, 1 / 3, np.float32), 1.0)
    dx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT)
    dy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT)
    return cv2.magnitude(dx, dy) / 8.0


def _clean_mask(mask: np.ndarray) -> np.ndarray:
    """Close gaps, fill holes, keep the largest object and any sizeable blob next to it."""
    radius = max(1, round(0.01 * max(mask.shape)))
    count, labels, sizes = _components(_fill_holes(_close(mask, radius)))
    if count <= 1:
        return labels > 0
    main = labels == (np.argmax(sizes) + 1)
    near = _dilate(main, max(1, round(KEEP_NEAR_FRACTION * max(mask.shape))))
    keep = np.zeros(count + 1, bool)
    keep[labels[near]] = True
    keep[1:] &= sizes >= 0.02 * sizes.max()
    keep[0] = False
    return keep[labels]


def _normalise(crop: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Object intensities to 0-1 like Fashion-MNIST's: white point, lifted if faint, a floor.

    A light product barely differs from its background, so its pixels are faint; a gamma
    lifts the object's median to MIN_MEDIAN (Fashion-MNIST's 20th percentile), which
    leaves ordinary products (and rendered Fashion-MNIST images) unchanged.
    """
    white = float(np.percentile(crop[mask], WHITE_POINT_PERCENTILE))
    scaled = np.clip(crop / max(white, 1.0), 0.0, 1.0)
    median = float(np.median(scaled[mask]))
    if 0.0 < median < MIN_MEDIAN:
        scaled = scaled ** (np.log(MIN_MEDIAN) / np.log(median))
    return np.where(mask, np.maximum(scaled, FILL_FLOOR), 0.0) * 255.0


def _render(values: np.ndarray) -> np.ndarray:
    """Longest edge to 28, centre on black (Fashion-MNIST's own last steps).

    Fashion-MNIST also sharpens after resizing; the Lanczos filter already does, and an
    extra sharpening step lowered accuracy on both rendered and real photos (measured).
    """
    height, width = values.shape
    scale = SIZE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = Image.fromarray(values.astype(np.uint8), "L").resize(size, Image.Resampling.LANCZOS)
    canvas = Image.new("L", (SIZE, SIZE), 0)  # odd margins: the extra pixel goes left / top
    canvas.paste(small, ((SIZE - size[0] + 1) // 2, (SIZE - size[1] + 1) // 2))
    return np.asarray(canvas, dtype=np.uint8).copy()

