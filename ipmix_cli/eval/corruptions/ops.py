"""The 19 corruptions of Hendrycks & Dietterich (CIFAR-10-C / ImageNet-C), one small function
each: `op(x, p, rng, table)` takes a uint8 image [H, W, 3], the severity's parameters `p` (a row
of `tables.CIFAR` or `tables.IMAGENET`), a NumPy generator and the whole table, and returns
the corrupted image as floats in [0, 255] (uint8 for the Pillow-based ones); the caller
truncates to uint8 as the published sets were made.

Where the published code calls OpenCV or ImageMagick, the same arithmetic is written here with
SciPy / scikit-image / NumPy (OpenCV is not a dependency): motion blur follows ImageMagick's
kernel as the `imagecorruptions` package reimplements it, frost's 0.2 downscale is OpenCV's
bilinear at exact pixel centres (every fifth pixel from the third), Canny and histogram
equalisation follow OpenCV's definitions. Glass blur's pixel shuffle is a compiled loop.
"""

from __future__ import annotations

import io
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage, signal
from skimage import color as skcolor

from ipmix_cli.eval.corruptions.kernels import shuffle_pixels
from ipmix_cli.common.errors import IpmixError


def _unit(x):
    return np.asarray(x, dtype=np.float64) / 255.0


def _to255(y):
    return np.clip(y, 0, 1) * 255


def gaussian_smooth(x, sigma, mode="nearest", truncate=4.0):
    """scikit-image's `filters.gaussian` on [H, W] or [H, W, C] (channels kept apart)."""
    sigmas = (sigma, sigma) + (0,) * (x.ndim - 2)
    return ndimage.gaussian_filter(x, sigmas, mode=mode, truncate=truncate)


# ------------------------------------------------------------------ noise
def gaussian_noise(x, c, rng, table):
    x = _unit(x)
    return _to255(x + rng.normal(size=x.shape, scale=c))


def shot_noise(x, c, rng, table):
    return _to255(rng.poisson(_unit(x) * c) / c)


def impulse_noise(x, c, rng, table):
    """Salt and pepper on a fraction `c` of the values, half of them white."""
    x = _unit(x)
    hit = rng.random(x.shape) < c
    salt = rng.random(x.shape) < 0.5
    return _to255(np.where(hit, salt.astype(np.float64), x))


def speckle_noise(x, c, rng, table):
    x = _unit(x)
    return _to255(x + x * rng.normal(size=x.shape, scale=c))


# ------------------------------------------------------------------ blur
def gaussian_blur(x, c, rng, table):
    return _to255(gaussian_smooth(_unit(x), c))


def glass_blur(x, p, rng, table):
    """Blur, move pixels locally (each takes a random neighbour's value, bottom-right to
    top-left), blur again."""
    sigma, delta, iterations = p
    blurred = np.uint8(gaussian_smooth(_unit(x), sigma) * 255)
    h, w = blurred.shape[:2]
    rows, cols = max(0, h - 2 * delta), max(0, w - 2 * delta)
    offsets = rng.integers(-delta, delta, size=(iterations, rows, cols, 2))
    shuffle_pixels(blurred, offsets, delta)
    return _to255(gaussian_smooth(blurred / 255.0, sigma))


def disk_kernel(radius, alias_sigma):
    """The published defocus kernel: a normalised disk on a grid of at least 17 x 17, smoothed by
    a 3 x 3 (5 x 5 above radius 8) Gaussian with mirrored borders, in float32."""
    half = 8 if radius <= 8 else int(radius)
    grid = np.arange(-half, half + 1)
    yy, xx = np.meshgrid(grid, grid)
    disk = (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.float32)
    disk /= disk.sum()
    k = 3 if radius <= 8 else 5
    taps = np.exp(-((np.arange(k) - (k - 1) / 2) ** 2) / (2 * alias_sigma ** 2))
    taps = (taps / taps.sum()).astype(np.float32)
    smooth = ndimage.correlate1d(disk, taps, axis=0, mode="mirror")
    return ndimage.correlate1d(smooth, taps, axis=1, mode="mirror")


def defocus_blur(x, p, rng, table):
    """The disk kernel over mirrored borders, by FFT as OpenCV's filter2D does for large kernels."""
    kernel = disk_kernel(*p).astype(np.float64)
    r = kernel.shape[0] // 2
    padded = np.pad(_unit(x), ((r, r), (r, r), (0, 0)), mode="reflect")  # reflect-101, OpenCV's default
    return _to255(signal.fftconvolve(padded, kernel[::-1, ::-1, None], mode="valid", axes=(0, 1)))


def motion_kernel(radius, sigma, angle_deg):
    """(weights, row shifts, column shifts) of ImageMagick's motion blur: 2·radius+1 taps,
    Gaussian weights, stepping one pixel at a time along the angle."""
    width = 2 * int(radius) + 1
    weights = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2))
    weights /= weights.sum()
    py, px = width * math.sin(math.radians(angle_deg)), width * math.cos(math.radians(angle_deg))
    hyp = math.hypot(py, px)
    dy = [-math.ceil(i * py / hyp - 0.5) for i in range(width)]
    dx = [-math.ceil(i * px / hyp - 0.5) for i in range(width)]
    return weights, dy, dx


def motion_smear(x, radius, sigma, angle_deg):
    """Sum of edge-clamped shifted copies of x weighted by `motion_kernel` (float64)."""
    h, w = x.shape[:2]
    taps = []
    for tap in zip(*motion_kernel(radius, sigma, angle_deg)):
        if abs(tap[1]) >= h or abs(tap[2]) >= w:
            break  # the smear left the image
        taps.append(tap)
    # Edge padding by the longest shift turns each clamped shift into a plain slice.
    pad = max(max(abs(dy), abs(dx)) for _, dy, dx in taps)
    padded = np.pad(x, ((pad, pad), (pad, pad)) + ((0, 0),) * (x.ndim - 2), mode="edge")
    out = np.zeros(x.shape, np.float64)
    for weight, dy, dx in taps:
        out += weight * padded[pad - dy:pad - dy + h, pad - dx:pad - dx + w]
    return out


def motion_blur(x, p, rng, table):
    radius, sigma = p
    return np.clip(motion_smear(np.asarray(x), radius, sigma, rng.uniform(-45, 45)), 0, 255)


def clipped_zoom(img, factor):
    """Zoom the central part of a square [S, S, C] image by `factor` (bilinear), trimmed to S."""
    side = img.shape[0]
    crop = int(np.ceil(side / factor))
    top = (side - crop) // 2
    zoomed = ndimage.zoom(img[top:top + crop, top:top + crop], (factor, factor, 1), order=1)
    trim = (zoomed.shape[0] - side) // 2
    return zoomed[trim:trim + side, trim:trim + side]


def zoom_blur(x, factors, rng, table):
    x = (np.asarray(x) / 255.0).astype(np.float32)
    acc = np.zeros_like(x)
    for factor in factors:
        acc += clipped_zoom(x, factor)
    return _to255((x + acc) / (len(factors) + 1))


# ------------------------------------------------------------------ weather
def snow(x, p, rng, table):
    loc, scale, zoom, threshold, radius, sigma, blend = p
    x = np.asarray(x, dtype=np.float32) / 255.0
    flakes = rng.normal(size=x.shape[:2], loc=loc, scale=scale)
    flakes = clipped_zoom(flakes[..., None], zoom)[..., 0]
    flakes[flakes < threshold] = 0
    flakes = (np.clip(flakes, 0, 1) * 255).astype(np.uint8)  # the published code's 8-bit layer
    flakes = motion_smear(flakes, radius, sigma, rng.uniform(-135, -45))
    flakes = (np.round(flakes) / 255.0)[..., None]
    grey = (x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114)[..., None]
    x = blend * x + (1 - blend) * np.maximum(x, grey * 1.5 + 0.5)
    return _to255(x + flakes + np.rot90(flakes, k=2))


FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")


def frost_folder() -> Path:
    """The frost pictures of the installed `imagecorruptions` package (never substituted)."""
    import importlib.util

    spec = importlib.util.find_spec("imagecorruptions")
    folder = Path(spec.origin).parent / "frost" if spec and spec.origin else None
    if folder is None or not all((folder / name).is_file() for name in FROST_FILES):
        raise IpmixError("frost needs the frost pictures of the imagecorruptions package: "
                         "pip install imagecorruptions (or choose other --corruptions)")
    return folder


@lru_cache(maxsize=16)
def frost_texture(index: int, scale: float) -> np.ndarray:
    img = np.asarray(Image.open(frost_folder() / FROST_FILES[index]).convert("RGB"))
    if scale == 0.2:  # OpenCV's bilinear 0.2x samples every fifth pixel from the third exactly
        h, w = round(img.shape[0] * 0.2), round(img.shape[1] * 0.2)
        return np.ascontiguousarray(img[2::5, 2::5][:h, :w])
    if scale != 1.0:
        size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
        return np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR))
    return img


def frost(x, p, rng, table):
    weight, texture_weight = p
    side = x.shape[0]
    # The published code draws from the first five pictures only; kept.
    scale = table["frost_texture_scale"] * side / table["side"]
    texture = frost_texture(int(rng.integers(5)), round(scale, 6))
    th, tw = texture.shape[:2]
    if th <= side or tw <= x.shape[1]:
        raise IpmixError(f"frost: the texture is {tw}x{th} px, too small for {x.shape[1]}x{side} images")
    top, left = int(rng.integers(0, th - side)), int(rng.integers(0, tw - x.shape[1]))
    crop = texture[top:top + side, left:left + x.shape[1]]
    return np.clip(weight * np.asarray(x, dtype=np.float64) + texture_weight * crop, 0, 255)


def plasma_fractal(size, decay, rng):
    """Diamond-square height map [size, size] in [0, 1] (size a power of two), as the published
    fog draws it: random amplitude 100² at the first step, divided by `decay` at each."""
    heights = np.zeros((size, size))
    step, wibble = size, 100.0

    def jitter(total):
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = heights[0:size:step, 0:size:step]
        squares = corners + np.roll(corners, -1, axis=0)
        squares = squares + np.roll(squares, -1, axis=1)
        heights[half:size:step, half:size:step] = jitter(squares)
        centres = heights[half:size:step, half:size:step]
        corners = heights[0:size:step, 0:size:step]
        across = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        heights[0:size:step, half:size:step] = jitter(across)
        down = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        heights[half:size:step, 0:size:step] = jitter(down)
        step //= 2
        wibble /= decay
    heights -= heights.min()
    return heights / heights.max()


def fog(x, p, rng, table):
    strength, decay = p
    x = _unit(x)
    h, w = x.shape[:2]
    top = x.max()
    size = 1 << max(1, (max(h, w) - 1).bit_length())
    x = x + strength * plasma_fractal(size, decay, rng)[:h, :w][..., None]
    return _to255(x * top / (top + strength))


def _canny(gray, low, high):
    """OpenCV's Canny on uint8: 3x3 Sobel, L1 magnitude, non-maximum suppression, hysteresis."""
    g = gray.astype(np.float64)
    gx = ndimage.sobel(g, axis=1, mode="mirror")
    gy = ndimage.sobel(g, axis=0, mode="mirror")
    mag = np.abs(gx) + np.abs(gy)
    padded = np.pad(mag, 1)
    h, w = mag.shape
    ang = np.rad2deg(np.arctan2(gy, gx)) % 180
    nbr = {0: ((0, 1), (0, -1)), 45: ((1, 1), (-1, -1)), 90: ((1, 0), (-1, 0)), 135: ((1, -1), (-1, 1))}
    sector = (np.round(ang / 45) % 4 * 45).astype(int)
    keep = np.zeros_like(mag, dtype=bool)
    for s, ((ay, ax), (by, bx)) in nbr.items():
        a = padded[1 + ay:1 + ay + h, 1 + ax:1 + ax + w]
        b = padded[1 + by:1 + by + h, 1 + bx:1 + bx + w]
        keep |= (sector == s) & (mag > a) & (mag >= b)
    weak = keep & (mag > low)
    labels, n = ndimage.label(weak, structure=np.ones((3, 3)))
    strong = np.unique(labels[keep & (mag > high)])
    return np.isin(labels, strong[strong > 0])


def _equalize(img):
    """OpenCV's equalizeHist on uint8."""
    hist = np.bincount(img.ravel(), minlength=256)
    first = int(np.flatnonzero(hist)[0])
    if hist[first] == img.size:
        return np.full_like(img, first)
    lut = np.clip(np.rint((np.cumsum(hist) - hist[first]) * 255.0 / (img.size - hist[first])), 0, 255)
    lut[:first] = 0
    return lut.astype(np.uint8)[img]


def _box3(img):
    return ndimage.uniform_filter(img.astype(np.float64), 3, mode="mirror")


def spatter(x, p, rng, table):
    loc, scale, sigma, threshold, strength, mud = p
    x = np.asarray(x, dtype=np.float32) / 255.0
    liquid = gaussian_smooth(rng.normal(size=x.shape[:2], loc=loc, scale=scale), sigma)
    liquid[liquid < threshold] = 0
    if not mud:  # water: bright streaks along the edges of the drops
        liquid8 = np.clip(liquid * 255, 0, 255).astype(np.uint8)
        edges = _canny(liquid8, 50, 150)
        dist = np.full(edges.shape, 20.0) if not edges.any() else ndimage.distance_transform_edt(~edges)
        dist = _equalize(_box3(np.minimum(dist, 20)).astype(np.uint8))
        relief = ndimage.correlate(dist.astype(np.float64), np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]),
                                   mode="mirror")
        dist = _box3(np.clip(np.rint(relief), 0, 255)).astype(np.float32)
        m = liquid8 * dist
        m = m / m.max() * strength if m.max() > 0 else m
        tint = np.array([175, 238, 238], np.float32) / 255.0
        return _to255(x + m[..., None] * tint)
    m = gaussian_smooth((liquid > threshold).astype(np.float32), strength)
    m[m < 0.8] = 0
    mud_colour = np.array([63, 42, 20], np.float32) / 255.0
    return _to255(x * (1 - m[..., None]) + mud_colour * m[..., None])


# ------------------------------------------------------------------ digital
def brightness(x, c, rng, table):
    hsv = skcolor.rgb2hsv(_unit(x))
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return _to255(skcolor.hsv2rgb(hsv))


def saturate(x, p, rng, table):
    factor, shift = p
    hsv = skcolor.rgb2hsv(_unit(x))
    hsv[..., 1] = np.clip(hsv[..., 1] * factor + shift, 0, 1)
    return _to255(skcolor.hsv2rgb(hsv))


def contrast(x, c, rng, table):
    x = _unit(x)
    means = x.mean(axis=(0, 1), keepdims=True)
    return _to255((x - means) * c + means)


def jpeg_compression(x, quality, rng, table):
    buf = io.BytesIO()
    Image.fromarray(np.asarray(x, dtype=np.uint8)).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf))  # an RGB JPEG decodes to RGB


def pixelate(x, c, rng, table):
    img = Image.fromarray(np.asarray(x, dtype=np.uint8))
    w, h = img.size
    small = img.resize((int(w * c), int(h * c)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BOX))


def elastic_transform(x, p, rng, table):
    """A random affine warp of three points, then a smooth random displacement field."""
    alpha, sigma, jitter = (v * x.shape[0] for v in p)
    img = np.asarray(x, dtype=np.float32) / 255.0
    h, w = img.shape[:2]
    centre = np.float32((h, w)) // 2
    third = min(h, w) // 3
    src = np.float32([centre + third, [centre[0] + third, centre[1] - third], centre - third])
    dst = src + rng.uniform(-jitter, jitter, size=src.shape).astype(np.float32)
    # The 2x3 map taking src to dst (points are (x, y)), then its inverse for sampling.
    forward = np.linalg.solve(np.c_[src.astype(np.float64), np.ones(3)], dst.astype(np.float64)).T
    inverse = np.linalg.inv(np.vstack([forward, [0, 0, 1]]))[:2]
    matrix = np.array([[inverse[1, 1], inverse[1, 0]], [inverse[0, 1], inverse[0, 0]]])
    offset = np.array([inverse[1, 2], inverse[0, 2]])
    warped = np.stack([ndimage.affine_transform(img[..., ch], matrix, offset, order=1, mode="mirror")
                       for ch in range(img.shape[2])], axis=2)
    dx = (gaussian_smooth(rng.uniform(-1, 1, size=(h, w)), sigma, "reflect", 3) * alpha).astype(np.float32)
    dy = (gaussian_smooth(rng.uniform(-1, 1, size=(h, w)), sigma, "reflect", 3) * alpha).astype(np.float32)
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    coords = np.array([yy + dy, xx + dx])
    out = np.stack([ndimage.map_coordinates(warped[..., ch], coords, order=1, mode="reflect")
                    for ch in range(img.shape[2])], axis=2)
    return _to255(out)


OPS = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur, "glass_blur": glass_blur, "motion_blur": motion_blur, "zoom_blur": zoom_blur,
    "snow": snow, "frost": frost, "fog": fog,
    "brightness": brightness, "contrast": contrast, "elastic_transform": elastic_transform,
    "pixelate": pixelate, "jpeg_compression": jpeg_compression,
    "speckle_noise": speckle_noise, "gaussian_blur": gaussian_blur, "spatter": spatter, "saturate": saturate,
}
