"""Quality metrics for a mixing set: is anything blank, how different are the pictures from each
other, how varied are the colours, how much structure is there."""

from __future__ import annotations


import numpy as np
from PIL import Image

THUMB = 32
NEAR_EMPTY_DOMINANT = 0.95
NEAR_EMPTY_GREY_STD = 8.0
HUE_BINS = 16
MIN_SATURATION = 0.25
MIN_VALUE = 0.15
EDGE_THRESHOLD = 32.0


def grey(rgb: np.ndarray) -> np.ndarray:
    """Luma (ITU-R 601 weights) as float64 in [0, 255]."""
    rgb = rgb.astype(np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def dominant_fraction(rgb: np.ndarray) -> float:
    """Share of the pixels held by the most common 4-bit-per-channel colour."""
    q = (rgb >> 4).astype(np.int32)
    codes = (q[..., 0] << 8) | (q[..., 1] << 4) | q[..., 2]
    return float(np.bincount(codes.ravel(), minlength=4096).max() / codes.size)


def is_near_empty(rgb: np.ndarray) -> bool:
    """One colour covers more than 95 % of the picture, or the grey levels barely vary."""
    return dominant_fraction(rgb) > NEAR_EMPTY_DOMINANT or float(grey(rgb).std()) < NEAR_EMPTY_GREY_STD


def thumbnail(rgb: np.ndarray, size: int = THUMB) -> np.ndarray:
    """Box-filtered size×size thumbnail as float32 RGB in [0, 1]."""
    h, w = rgb.shape[:2]
    if h % size == 0 and w % size == 0:
        t = rgb.reshape(size, h // size, size, w // size, 3).astype(np.float32).mean(axis=(1, 3))
    else:
        t = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BOX), dtype=np.float32)
    return t / 255.0


def pairwise_distances(thumbs: np.ndarray) -> np.ndarray:
    """RMS distance between every pair of thumbnails (condensed upper triangle)."""
    x = thumbs.reshape(len(thumbs), -1).astype(np.float64)
    sq = (x * x).sum(axis=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)) / x.shape[1]
    iu = np.triu_indices(len(x), k=1)
    return np.sqrt(np.maximum(d2[iu], 0.0))


def hue_histogram(rgb: np.ndarray, bins: int = HUE_BINS) -> np.ndarray:
    """Counts of hue over the saturated, not-too-dark pixels."""
    x = rgb.reshape(-1, 3).astype(np.float64) / 255.0
    mx, mn = x.max(axis=1), x.min(axis=1)
    chroma = mx - mn
    sat = np.where(mx > 0, chroma / np.maximum(mx, 1e-12), 0.0)
    keep = (sat >= MIN_SATURATION) & (mx >= MIN_VALUE) & (chroma > 0)
    r, g, b = x[keep, 0], x[keep, 1], x[keep, 2]
    c, m = chroma[keep], mx[keep]
    hue = np.where(m == r, ((g - b) / c) % 6.0, np.where(m == g, (b - r) / c + 2.0, (r - g) / c + 4.0)) / 6.0
    return np.bincount(np.minimum((hue * bins).astype(np.int64), bins - 1), minlength=bins)


def entropy_bits(counts: np.ndarray) -> float:
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def edge_density(rgb: np.ndarray) -> float:
    """Share of pixels whose grey-level gradient (central differences) exceeds 32 levels."""
    g = grey(rgb)
    gx = np.zeros_like(g)
    gy = np.zeros_like(g)
    gx[:, 1:-1] = (g[:, 2:] - g[:, :-2]) / 2.0
    gy[1:-1, :] = (g[2:, :] - g[:-2, :]) / 2.0
    return float((np.hypot(gx, gy) > EDGE_THRESHOLD).mean())


def grey_entropy(rgb: np.ndarray) -> float:
    g = np.clip(grey(rgb) + 0.5, 0, 255).astype(np.int64)
    return entropy_bits(np.bincount(g.ravel(), minlength=256))


def set_metrics(images) -> dict:
    """Metrics over a list of HxWx3 uint8 pictures (needs at least two)."""
    images = list(images)
    if len(images) < 2:
        raise ValueError("set metrics need at least two pictures")
    thumbs = np.stack([thumbnail(im) for im in images])
    dist = pairwise_distances(thumbs)
    hue = sum(hue_histogram(im) for im in images)
    return {
        "count": len(images),
        "near_empty_fraction": float(np.mean([is_near_empty(im) for im in images])),
        "mean_pairwise": float(dist.mean()),
        "min_pairwise": float(dist.min()),
        "hue_entropy_bits": entropy_bits(np.asarray(hue)),
        "edge_density": float(np.mean([edge_density(im) for im in images])),
        "grey_entropy_bits": float(np.mean([grey_entropy(im) for im in images])),
    }
