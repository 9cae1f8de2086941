"""A straightforward per-image implementation of the same recipes with PIL and NumPy.

It is the benchmark's baseline (what per-image augmentation costs when each op is a PIL call
and each mix a NumPy expression, as in the authors' code) and the tests' oracle: it draws from
the same counter-based streams in the same order as the kernels, so for the same
(seed, epoch, index) it produces the same views (up to float rounding in the final mix).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ipmix_cli.augment import rng
from ipmix_cli.augment.config import AugmentConfig
from ipmix_cli.augment.pixel_ops import MIX_NAMES, TINY
from ipmix_cli.augment.policy import ROWS, TRANSLATE_X, argument, row_id
from ipmix_cli.augment.presets import RECIPES
from ipmix_cli.augment.views import PAD, fitted_picture, imagenet_crop


def pil_op(op: int, img: Image.Image, st, severity: float) -> Image.Image:
    """Op `op` (a row of the policy table) with its level drawn from `st` (level first, then
    the sign), as the row's Pillow call."""
    row = ROWS[op]
    level = 0.1 + rng.uniform(st) * (severity - 0.1)
    negate = row.signed and rng.uniform(st) > 0.5
    size = img.size[0] if row.kernel == TRANSLATE_X else img.size[1]
    return row.pillow(img, argument(row, level, size, negate))


def random_op(img: Image.Image, st, cfg: AugmentConfig) -> Image.Image:
    name = cfg.ops[rng.randint(st, len(cfg.ops))]
    return pil_op(row_id(cfg.recipe, name), img, st, cfg.severity)


def to_uint8(q: np.ndarray, overflow: str) -> np.ndarray:
    if overflow == "clip":
        return (np.clip(q, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    with np.errstate(invalid="ignore", over="ignore"):
        t = np.trunc(q * 255.0)
        t = np.where(np.isfinite(t), np.fmod(t, 256.0), 0.0)
    return np.where(t < 0, t + 256.0, t).astype(np.uint8)


def mix_values(name: str, p1: np.ndarray, p2: np.ndarray, a: float, b: float) -> np.ndarray:
    """The add and multiply formulas on [0, 1] floats."""
    if name == "add":
        return (a * (2.0 * p1 - 1.0) + b * (2.0 * p2 - 1.0) + 1.0) / 2.0
    return ((2.0 * p1) ** a) * (np.maximum(2.0 * p2, TINY) ** b) / 2.0


def p_step(img: np.ndarray, x: np.ndarray, f: np.ndarray, st, cfg: AugmentConfig) -> np.ndarray:
    """One patch-mixing step of a P chain (returns a new array)."""
    S = img.shape[0]
    s = cfg.patch_sizes[rng.randint(st, len(cfg.patch_sizes))]
    left = rng.randint(st, S - s + 1)
    top = rng.randint(st, S - s + 1)
    if rng.uniform(st) < 0.5:
        h = w = s
    else:
        w = 2 + rng.randint(st, s - 1)
        h = 2 + rng.randint(st, s - 1)
    name = MIX_NAMES[rng.randint(st, 4)]
    partner = f
    if cfg.partner == "mixed" and rng.uniform(st) < 0.5:
        partner = np.asarray(random_op(Image.fromarray(x), st, cfg))
    box = (slice(top, top + h), slice(left, left + w))
    p1, p2 = img[box], partner[box]
    out = img.copy()
    if name in ("add", "multiply"):
        a, b = rng.get_ab(st, cfg.beta)
        out[box] = to_uint8(mix_values(name, p1 / 255.0, p2 / 255.0, a, b), cfg.overflow)
    else:
        p = rng.uniform(st)
        shape = (h, w, 1) if name == "random_pixels" else (h, w, 3)
        keep = rng.uniform_array(st, int(np.prod(shape))).reshape(shape) < p
        out[box] = np.where(keep, p1, p2)
    return out


def chain_view(x: np.ndarray, f: np.ndarray, st, cfg: AugmentConfig) -> np.ndarray:
    """IPMix / AugMix: (1 - m) x + m sum_i w_i chain_i."""
    k = cfg.width
    w = np.empty(k)
    rng.dirichlet(st, 1.0, k, w)
    m = rng.beta(st, 1.0, 1.0)
    p_chain = RECIPES[cfg.recipe]["p_chain"]
    mix = np.zeros(x.shape)
    for i in range(k):
        is_p = rng.uniform(st) < p_chain
        n = cfg.min_ops + rng.randint(st, cfg.depth - cfg.min_ops + 1)
        img = x
        for _ in range(n):
            if is_p:
                img = p_step(img, x, f, st, cfg)
            else:
                img = np.asarray(random_op(Image.fromarray(img), st, cfg))
        mix += w[i] * img
    out = (1.0 - m) * x + m * mix
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def pixmix_view(x: np.ndarray, f: np.ndarray, st, cfg: AugmentConfig) -> np.ndarray:
    pil = Image.fromarray(x)
    start = np.asarray(random_op(pil, st, cfg)) if rng.uniform(st) < 0.5 else x
    mixed = start / 255.0
    for _ in range(rng.randint(st, cfg.width + 1)):
        partner = f
        if rng.uniform(st) < 0.5:
            partner = np.asarray(random_op(pil, st, cfg))
        name = "add" if rng.randint(st, 2) == 0 else "multiply"
        a, b = rng.get_ab(st, cfg.beta)
        mixed = np.clip(mix_values(name, mixed, partner / 255.0, a, b), 0.0, 1.0)
    return (mixed * 255.0 + 0.5).astype(np.uint8)


def reference_view(x: np.ndarray, f: np.ndarray, st, cfg: AugmentConfig) -> np.ndarray:
    if cfg.recipe == "pixmix":
        return pixmix_view(x, f, st, cfg)
    if cfg.recipe == "none":
        return x.copy()
    return chain_view(x, f, st, cfg)


def reference_crop(image: np.ndarray, cfg: AugmentConfig, seed: int, epoch: int, index: int) -> np.ndarray:
    S = cfg.image_size
    if cfg.crop == "random-resized":
        return imagenet_crop(image, S, seed, epoch, index, cfg.flip)
    st = rng.new_state(seed, epoch, index, rng.STREAM_CROP)
    if cfg.crop == "pad":
        oy, ox = rng.randint(st, 2 * PAD + 1), rng.randint(st, 2 * PAD + 1)
        padded = np.pad(image, ((PAD, PAD), (PAD, PAD), (0, 0)))
        out = padded[oy:oy + S, ox:ox + S]
    else:
        out = fitted_picture(image, S, cfg.crop)
    flip = rng.uniform(st) < 0.5 and cfg.flip
    return np.ascontiguousarray(out[:, ::-1] if flip else out)


def reference_mixing_picture(bank_pixels: np.ndarray, S: int, seed: int, epoch: int, index: int) -> np.ndarray:
    st = rng.new_state(seed, epoch, index, rng.STREAM_MIX)
    j = rng.randint(st, bank_pixels.shape[0])
    oy = rng.randint(st, bank_pixels.shape[1] - S + 1)
    ox = rng.randint(st, bank_pixels.shape[2] - S + 1)
    return np.array(bank_pixels[j, oy:oy + S, ox:ox + S])


def reference_sample(cfg: AugmentConfig, bank_pixels: np.ndarray, image: np.ndarray, seed: int,
                     epoch: int, index: int) -> np.ndarray:
    """The views of one sample, [V, S, S, 3], as `Augmenter.make_views` makes them."""
    x = reference_crop(image, cfg, seed, epoch, index)
    if cfg.recipe == "none":
        return x[None]
    f = reference_mixing_picture(bank_pixels, cfg.image_size, seed, epoch, index)
    views = [x] if cfg.views == 3 else []
    for v in range(2 if cfg.views == 3 else 1):
        st = rng.new_state(seed, epoch, index, rng.STREAM_VIEW + v)
        views.append(reference_view(x, f, st, cfg))
    return np.stack(views)


def reference_make_views(cfg, bank_pixels, images, seed: int, epoch: int, indices) -> np.ndarray:
    return np.stack([reference_sample(cfg, bank_pixels, np.asarray(im), seed, epoch, int(i))
                     for im, i in zip(images, indices)])
