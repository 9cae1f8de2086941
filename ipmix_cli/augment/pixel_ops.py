"""P-level mixing ops: mix a patch of the image with the aligned patch of a partner image.

Values are taken to [0, 1] floats, combined, and written back to uint8 either clipped and
rounded (OVERFLOW_CLIP, the default) or as the reference converts them: truncated toward zero
and wrapped modulo 256 (OVERFLOW_WRAP).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ipmix_cli.augment.rng import get_ab, randint, uniform

ADD, MULTIPLY, RANDOM_PIXELS, RANDOM_ELEMENTS = range(4)
MIX_NAMES = ("add", "multiply", "random_pixels", "random_elements")
OVERFLOW_CLIP, OVERFLOW_WRAP = 0, 1
OVERFLOWS = ("clip", "wrap")
TINY = 1e-37  # the floor on the partner before a negative power (PixMix's `clip(1e-37)`)


@njit(cache=True)
def to_uint8(v, overflow):
    """A [0, 1] float back to uint8: clip + round, or the reference's truncate + wrap."""
    if overflow == OVERFLOW_CLIP:
        if v <= 0.0:
            return np.uint8(0)
        if v >= 1.0:
            return np.uint8(255)
        return np.uint8(int(v * 255.0 + 0.5))
    t = v * 255.0
    if not math.isfinite(t):
        return np.uint8(0)
    t = np.fmod(np.trunc(t), 256.0)
    if t < 0.0:
        t += 256.0
    return np.uint8(int(t))


@njit(cache=True)
def mix_patch(img, partner, op, st, beta_param, overflow, top, left, h, w):
    """Mix img[top:top+h, left:left+w] with the same rectangle of `partner`, in place."""
    if op == ADD or op == MULTIPLY:
        a, b = get_ab(st, beta_param)
        n = h * w * 3
        if n > 512:
            # Tabulate per input value: 512 evaluations instead of n (pow is the cost).
            t1 = np.empty(256)
            t2 = np.empty(256)
            for v in range(256):
                p = v / 255.0
                if op == ADD:
                    t1[v] = a * (2.0 * p - 1.0)
                    t2[v] = b * (2.0 * p - 1.0)
                else:
                    t1[v] = (2.0 * p) ** a
                    t2[v] = max(2.0 * p, TINY) ** b
            for y in range(top, top + h):
                for x in range(left, left + w):
                    for c in range(3):
                        if op == ADD:
                            q = (t1[img[y, x, c]] + t2[partner[y, x, c]] + 1.0) / 2.0
                        else:
                            q = t1[img[y, x, c]] * t2[partner[y, x, c]] / 2.0
                        img[y, x, c] = to_uint8(q, overflow)
        else:
            for y in range(top, top + h):
                for x in range(left, left + w):
                    for c in range(3):
                        p1 = img[y, x, c] / 255.0
                        p2 = partner[y, x, c] / 255.0
                        if op == ADD:
                            q = (a * (2.0 * p1 - 1.0) + b * (2.0 * p2 - 1.0) + 1.0) / 2.0
                        else:
                            q = ((2.0 * p1) ** a) * (max(2.0 * p2, TINY) ** b) / 2.0
                        img[y, x, c] = to_uint8(q, overflow)
    elif op == RANDOM_PIXELS:
        p = uniform(st)
        for y in range(top, top + h):
            for x in range(left, left + w):
                if not uniform(st) < p:
                    img[y, x, 0] = partner[y, x, 0]
                    img[y, x, 1] = partner[y, x, 1]
                    img[y, x, 2] = partner[y, x, 2]
    else:
        p = uniform(st)
        for y in range(top, top + h):
            for x in range(left, left + w):
                for c in range(3):
                    if not uniform(st) < p:
                        img[y, x, c] = partner[y, x, c]


@njit(cache=True)
def draw_patch(st, size, s):
    """Position and shape of one patch of nominal size s in a size x size image.

    left, top uniform in [0, size - s]; a square s x s with probability 1/2, otherwise a
    'scar' whose width and height are independent uniform integers in [2, s].
    Returns (top, left, h, w).
    """
    left = randint(st, size - s + 1)
    top = randint(st, size - s + 1)
    if uniform(st) < 0.5:
        return top, left, s, s
    w = 2 + randint(st, s - 1)
    h = 2 + randint(st, s - 1)
    return top, left, h, w
