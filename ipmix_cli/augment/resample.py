"""Pillow's bilinear `Image.resize` (libImaging/Resample.c, Pillow 13) as Numba kernels, bit for bit.

PIL resizes in two separable passes. Each pass uses a triangle filter whose support widens by
the downscale factor; the weights of one output sample are normalised, turned into 22-bit fixed
point, and the sum (started at half a unit) is shifted back and clamped to uint8 after each
pass. The horizontal pass runs first unless the height shrinks by more than twice as many
pixels as the width (Pillow >= 11's rule, to make the horizontal pass cheaper).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

PRECISION_BITS = 32 - 8 - 2
_HALF = np.int32(1 << (PRECISION_BITS - 1))
_U1 = np.uint64(1)
_U2 = np.uint64(2)
_U3 = np.uint64(3)


@njit(cache=True)
def coefficients(in_size, out_size):
    """(first input index [out], taps [out], fixed-point weights [out, ksize]) for one axis."""
    scale = in_size / out_size
    filterscale = scale if scale > 1.0 else 1.0
    support = 1.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    first = np.zeros(out_size, np.int64)
    taps = np.zeros(out_size, np.int64)
    kk = np.zeros((out_size, ksize), np.int32)  # PIL's INT32 weights; sums stay below 2**31
    k = np.zeros(ksize, np.float64)
    one = np.float64(1 << PRECISION_BITS)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ww = 0.0
        ss = 1.0 / filterscale
        xmin = int(center - support + 0.5)
        if xmin < 0:
            xmin = 0
        xmax = int(center + support + 0.5)
        if xmax > in_size:
            xmax = in_size
        xmax -= xmin
        for x in range(xmax):
            t = ((x + xmin) - center + 0.5) * ss
            if t < 0.0:
                t = -t
            w = 1.0 - t if t < 1.0 else 0.0
            k[x] = w
            ww += w
        for x in range(xmax):
            if ww != 0.0:
                k[x] = k[x] / ww
        for x in range(xmax):
            v = k[x]
            kk[xx, x] = int(-0.5 + v * one) if v < 0 else int(0.5 + v * one)
        first[xx] = xmin
        taps[xx] = xmax
    return first, taps, kk


@njit(cache=True, inline="always")
def _clip8(ss):
    v = ss >> PRECISION_BITS
    return np.uint8(0 if v < 0 else (255 if v > 255 else v))


@njit(cache=True)
def _horizontal(src, top, left, rows, width, out_w):
    """Rows [top, top + rows) of the column window [left, left + width) resized to out_w.

    src may hold 3 or 4 bytes per pixel (RGB, or Pillow's own RGBX layout); out is RGB."""
    first, taps, kk = coefficients(width, out_w)
    out = np.empty((rows, out_w, 3), np.uint8)
    o1 = out.reshape(-1)
    W = src.shape[1]
    cpp = src.shape[2]
    s1 = src.reshape(-1)
    step = np.uint64(cpp)
    o = np.uint64(0)
    for y in range(rows):
        base = ((top + y) * W + left) * cpp
        for xx in range(out_w):
            s0 = _HALF
            s_1 = _HALF
            s2 = _HALF
            i = np.uint64(base + first[xx] * cpp)
            for t in range(taps[xx]):
                k = kk[xx, t]
                s0 += np.int32(s1[i]) * k
                s_1 += np.int32(s1[i + _U1]) * k
                s2 += np.int32(s1[i + _U2]) * k
                i += step
            o1[o] = _clip8(s0)
            o1[o + _U1] = _clip8(s_1)
            o1[o + _U2] = _clip8(s2)
            o += _U3
    return out


@njit(cache=True)
def _vertical(src, top, left, height, width, out_h, out):
    """The window [top, top + height) x [left, left + width) resized to out_h rows, into out
    (src with 3 or 4 bytes per pixel, out RGB)."""
    first, taps, kk = coefficients(height, out_h)
    cpp = src.shape[2]
    n = width * cpp
    W = src.shape[1]
    s1 = src.reshape(-1)
    # int32 sums as PIL's (they cannot overflow); a whole row at a time, so the loops vectorise
    acc = np.empty(n, np.int32)
    for yy in range(out_h):
        for j in range(n):
            acc[j] = _HALF
        for t in range(taps[yy]):
            k = kk[yy, t]
            o = ((top + first[yy] + t) * W + left) * cpp
            row = s1[o:o + n]
            for j in range(n):
                acc[j] += np.int32(row[j]) * k
        o = out[yy].reshape(-1)
        if cpp == 3:
            for j in range(n):
                o[j] = _clip8(acc[j])
        else:
            for x in range(width):
                for c in range(3):
                    o[3 * x + c] = _clip8(acc[cpp * x + c])


@njit(cache=True)
def resized_window(src, top, left, h, w, out_h, out_w, out):
    """out = PIL `Image.fromarray(src[top:top+h, left:left+w]).resize((out_w, out_h), BILINEAR)`.

    src: HxWx3, or HxWx4 of which the first three bytes of each pixel are read."""
    need_h = w != out_w
    need_v = h != out_h
    horizontal_first = not (h - out_h > 0 and h - out_h > (w - out_w) * 2)
    if not need_h and not need_v:
        for y in range(h):
            for x in range(w):
                for c in range(3):
                    out[y, x, c] = src[top + y, left + x, c]
    elif not need_v:
        out[:] = _horizontal(src, top, left, h, w, out_w)
    elif not need_h:
        _vertical(src, top, left, h, w, out_h, out)
    elif horizontal_first:
        # only the rows the vertical pass reads go through the horizontal pass
        first, taps, _ = coefficients(h, out_h)
        y0 = first[0]
        y1 = first[out_h - 1] + taps[out_h - 1]
        tmp = _horizontal(src, top + y0, left, y1 - y0, w, out_w)
        _vertical(tmp, -y0, 0, h, out_w, out_h, out)  # tmp row 0 is source row y0
    else:
        tmp = np.empty((out_h, w, 3), np.uint8)
        _vertical(src, top, left, h, w, out_h, tmp)
        out[:] = _horizontal(tmp, 0, 0, out_h, w, out_w)


def resize_bilinear(src: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """PIL's bilinear resize of a whole HxWx3 uint8 array."""
    src = np.ascontiguousarray(src, dtype=np.uint8)
    out = np.empty((out_h, out_w, 3), np.uint8)
    resized_window(src, 0, 0, src.shape[0], src.shape[1], out_h, out_w, out)
    return out
