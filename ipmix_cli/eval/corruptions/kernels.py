"""Compiled loop of glass blur (the published code swaps pixels one by one in Python)."""

from __future__ import annotations

import numba


@numba.njit(cache=True, nogil=True)
def shuffle_pixels(img, offsets, delta):  # pragma: no cover - compiled
    """Give every pixel (rows and columns from side-delta down to delta+1, bottom-right first)
    the value of the one at its offset (dy, dx) = offsets[it, row, col, ::-1], `iterations`
    times. The published code meant a swap, but its tuple assignment of two NumPy views
    copies one way only (the second pixel keeps its value); that is what CIFAR-10-C and
    ImageNet-C hold, so it is what this does."""
    h, w, c = img.shape
    for it in range(offsets.shape[0]):
        for i in range(offsets.shape[1]):
            y = h - delta - i
            for j in range(offsets.shape[2]):
                x = w - delta - j
                y2 = y + offsets[it, i, j, 1]
                x2 = x + offsets[it, i, j, 0]
                for ch in range(c):
                    img[y, x, ch] = img[y2, x2, ch]
    return img
