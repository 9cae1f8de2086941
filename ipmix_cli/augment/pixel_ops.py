"""P-level mixing ops: mix a patch of the image with the aligned patch of a partner image.

Values are taken to [0, 1] floats, combined, and written back to uint8 either clipped and
rounded (OVERFLOW_CLIP, the default) or as the reference converts them: truncated toward zero
and wrapped modulo 256 (OVERFLOW_WRAP).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ipmix_cli.augment.rng import _INV53, _S11, GOLDEN, get_ab, mix64, randint, uniform

ADD, MULTIPLY, RANDOM_PIXELS, RANDOM_ELEMENTS = range(4)
MIX_NAMES = ("add", "multiply", "random_pixels", "random_elements")
OVERFLOW_CLIP, OVERFLOW_WRAP = 0, 1  # their names: presets.OVERFLOWS
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


# Above this many values an add/multiply patch goes through a 256 x 256 table of results:
# building it costs about as much as mixing this many values one by one.
PAIR_TABLE_MIN = 16384


@njit(cache=True)
def _value_tables(op, a, b):
    """Per input byte, each image's term of the add/multiply formula (512 evaluations of pow)."""
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
    return t1, t2


@njit(cache=True, inline="always")
def _combine(op, v1, v2):
    return (v1 + v2 + 1.0) / 2.0 if op == ADD else v1 * v2 / 2.0


@njit(cache=True)
def _mix_formula(img, partner, op, a, b, overflow, top, left, h, w):
    """add/multiply, one row of the patch at a time (rows are flat slices: the loops vectorise)."""
    W = img.shape[1]
    i1 = img.reshape(-1)
    p1 = partner.reshape(-1)
    n = w * 3
    total = h * n
    if total >= PAIR_TABLE_MIN:
        # The result depends only on the two input bytes: tabulate all 65,536 pairs.
        t1, t2 = _value_tables(op, a, b)
        pair = np.empty(65536, np.uint8)
        for u in range(256):
            row = pair[u * 256:(u + 1) * 256]
            v1 = t1[u]
            for v in range(256):
                row[v] = to_uint8(_combine(op, v1, t2[v]), overflow)
        for y in range(top, top + h):
            o = (y * W + left) * 3
            r = i1[o:o + n]
            q = p1[o:o + n]
            for j in range(n):
                r[j] = pair[(np.int64(r[j]) << 8) | np.int64(q[j])]
    elif total > 512:
        t1, t2 = _value_tables(op, a, b)
        for y in range(top, top + h):
            o = (y * W + left) * 3
            r = i1[o:o + n]
            q = p1[o:o + n]
            for j in range(n):
                r[j] = to_uint8(_combine(op, t1[r[j]], t2[q[j]]), overflow)
    else:
        for y in range(top, top + h):
            o = (y * W + left) * 3
            r = i1[o:o + n]
            q = p1[o:o + n]
            for j in range(n):
                v1 = r[j] / 255.0
                v2 = q[j] / 255.0
                if op == ADD:
                    t = (a * (2.0 * v1 - 1.0) + b * (2.0 * v2 - 1.0) + 1.0) / 2.0
                else:
                    t = ((2.0 * v1) ** a) * (max(2.0 * v2, TINY) ** b) / 2.0
                r[j] = to_uint8(t, overflow)


@njit(cache=True)
def _mix_random(img, partner, per_element, st, top, left, h, w):
    """Keep img where a uniform draw is below p, else take the partner: one draw per pixel or
    per element, in row-major order. The stream is advanced in a local variable (the same
    draws as `uniform`; through the array it is stored and reloaded every value), and the
    choice is a mask, not a branch (it is a coin flip: a branch mispredicts half the time)."""
    p = uniform(st)
    s = st[0]
    W = img.shape[1]
    i1 = img.reshape(-1)
    p1 = partner.reshape(-1)
    n = w * 3 if per_element else w
    take = np.empty(n, np.uint8)
    for y in range(top, top + h):
        o = (y * W + left) * 3
        r = i1[o:o + w * 3]
        q = p1[o:o + w * 3]
        for j in range(n):
            s += GOLDEN
            take[j] = 0 if np.float64(mix64(s) >> _S11) * _INV53 < p else 255
        if per_element:
            for j in range(n):
                r[j] = (r[j] & ~take[j]) | (q[j] & take[j])
        else:
            for j in range(w):
                k = take[j]
                for c in range(3):
                    r[3 * j + c] = (r[3 * j + c] & ~k) | (q[3 * j + c] & k)
    st[0] = s


@njit(cache=True)
def mix_patch(img, partner, op, st, beta_param, overflow, top, left, h, w):
    """Mix img[top:top+h, left:left+w] with the same rectangle of `partner`, in place."""
    if op == ADD or op == MULTIPLY:
        a, b = get_ab(st, beta_param)
        _mix_formula(img, partner, op, a, b, overflow, top, left, h, w)
    else:
        _mix_random(img, partner, op == RANDOM_ELEMENTS, st, top, left, h, w)


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
