"""Small inputs for the augmentation tests: photo-like random images and a mixing folder."""

from __future__ import annotations

import numpy as np
from PIL import Image


def smooth_image(rs: np.random.Generator, height: int, width: int | None = None) -> np.ndarray:
    """A smooth random colour pattern with noise: varied histograms, edges and flat areas."""
    width = width or height
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    y /= height
    x /= width
    fx, fy, ph = rs.uniform(1, 9, 3), rs.uniform(1, 9, 3), rs.uniform(0, 6.3, 3)
    base = 128 + 110 * np.sin(fx * x[..., None] + fy * y[..., None] + ph)
    return np.clip(base + rs.normal(0, 15, base.shape), 0, 255).astype(np.uint8)


def sample_images(seed: int, n: int, size: int) -> np.ndarray:
    """Half smooth patterns, half uniform noise (extreme histograms)."""
    rs = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        out[i] = smooth_image(rs, size) if i % 2 == 0 else rs.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return out


def make_mixing_folder(path, n: int = 4, size: int = 48, seed: int = 0):
    """A folder of n small PNG pictures (one of them not square)."""
    path.mkdir(parents=True, exist_ok=True)
    rs = np.random.default_rng(seed)
    for i in range(n):
        w = size + (12 if i == 1 else 0)
        Image.fromarray(smooth_image(rs, size, w)).save(path / f"pic-{i:02d}.png")
    return path


def views_in_worker(cfg_dict, bank, images, seed, epoch, indices):
    """What a shard-building worker does: rebuild the config, augment a batch."""
    from ipmix_cli.augment import AugmentConfig, Augmenter

    return Augmenter(AugmentConfig.from_dict(cfg_dict), bank).make_views(images, seed, epoch, indices)
