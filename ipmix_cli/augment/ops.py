"""Image-level ops with PIL's exact semantics on uint8 HxWx3 arrays, as Numba kernels.

Every kernel reads the whole source image `src` and writes `dst` only inside the region
rows [r0, r1) x columns [c0, c1) (a P chain needs an augmented partner only inside its
patch). `src` and `dst` must be different arrays.

`apply_op` at the bottom draws an op's level and applies it as its row of the policy table
(policy.py) says. The constant tables the kernels read travel together as one `Tables`.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import njit

from ipmix_cli.augment.policy import (AUTOCONTRAST, BRIGHTNESS, BYTE_TABLE, BYTE_TABLE_FORMS, BYTE_TABLES,
                                      COL_ARG_MAX,
                                      COL_ARG_MIN, COL_BASE, COL_BY_SIZE, COL_COEF, COL_DIV,
                                      COL_FIRST_TABLE, COL_INTEGER, COL_KERNEL, COL_SIGNED, COLOR,
                                      CONTRAST, EQUALIZE, MIRROR, ROTATE, SHEAR_X, SHEAR_Y, TABLE,
                                      TRANSLATE_X, TRANSLATE_Y)
from ipmix_cli.augment.rng import uniform

MAX_ROTATION = 30
_U1 = np.uint64(1)
_U2 = np.uint64(2)
_U3 = np.uint64(3)
_U4 = np.uint64(4)
_U5 = np.uint64(5)
_F64 = np.arange(256, dtype=np.float64)  # byte -> double, for the bilinear kernels
_NARROW = 8  # regions narrower than this skip the bilinear kernels' row set-up


def rotation_table(max_degrees: int = MAX_ROTATION) -> np.ndarray:
    """PIL's `Image.rotate` inverse matrix (a, b, d, e, rounded to 15 digits) per integer angle.

    Row `deg + max_degrees` holds the matrix for `deg` degrees; built in Python so the
    rounding is exactly `round(x, 15)`, as PIL computes it. The offsets depend on the size and
    are computed in the kernel (the same arithmetic PIL does in Python floats).
    """
    rows = []
    for deg in range(-max_degrees, max_degrees + 1):
        angle = -math.radians(deg % 360.0)
        rows.append([round(math.cos(angle), 15), round(math.sin(angle), 15),
                     round(-math.sin(angle), 15), round(math.cos(angle), 15)])
    return np.array(rows, dtype=np.float64)


ROTATION_TABLE = rotation_table()

# The constant tables of the ops: `rotation` (rotation_table); `bytes`, every table of the
# per-byte ops, uint8 [n, 3, 256], and `forms`, int64 [n, 2], each table's mask-and-flip form
# (policy.byte_tables and mask_flip_form).
Tables = namedtuple("Tables", ["rotation", "bytes", "forms"])
TABLES = Tables(ROTATION_TABLE, BYTE_TABLES, BYTE_TABLE_FORMS)

# ---------------------------------------------------------------- point ops: one loop over byte runs

# What `point_op` does to each byte (or pixel) of a run.
RUN_COPY, RUN_LUT3, RUN_MASK_FLIP, RUN_BLEND, RUN_COLOR = range(5)
NO_LUT = np.zeros((3, 256), np.uint8)  # the table argument of the kinds that take none
NO_FORM = np.array([-1, 0], np.int64)  # the form of a table made from the image (equalize, autocontrast)


@njit(cache=True)
def point_op(kind, src, dst, lut, k0, k1, alpha, r0, r1, c0, c1):
    """dst = kind(src) inside the region, walked as flat byte runs: one run when the region
    spans whole rows, else one a row. Each kind's loop runs over 1-D slices from index 0, a
    form Numba compiles without negative-index fix-ups, so LLVM vectorizes it.

    lut: uint8 [3, 256] per-channel table (RUN_LUT3); k0, k1: the mask and threshold
    (RUN_MASK_FLIP) or k0 the grey level blended with (RUN_BLEND); alpha: float32 blend factor
    (RUN_BLEND, RUN_COLOR).
    """
    W = src.shape[1]
    s1 = src.reshape(-1)
    d1 = dst.reshape(-1)
    if c0 == 0 and c1 == W:
        a, n, rows, step = r0 * W * 3, (r1 - r0) * W * 3, 1, 0
    else:
        a, n, rows, step = (r0 * W + c0) * 3, max(c1 - c0, 0) * 3, r1 - r0, W * 3
    for _ in range(rows):
        s = s1[a:a + n]
        d = d1[a:a + n]
        if kind == RUN_LUT3:
            _lut3_run(s, d, lut)
        elif kind == RUN_MASK_FLIP:
            _mask_flip_run(s, d, k0, k1)
        elif kind == RUN_BLEND:
            _blend_run(s, d, k0, alpha)
        elif kind == RUN_COLOR:
            _color_run(s, d, alpha)
        else:
            _copy(d, s)
        a += step


@njit(cache=True)
def _lut3_run(s, d, lut):
    """d[i] = lut[channel of i, s[i]]."""
    l0, l1, l2 = lut[0], lut[1], lut[2]
    for k in range(s.shape[0] // 3):
        i = np.uint64(3 * k)
        d[i] = l0[s[i]]
        d[i + _U1] = l1[s[i + _U1]]
        d[i + _U2] = l2[s[i + _U2]]


@njit(cache=True)
def _mask_flip_run(s, d, mask, threshold):
    """d[i] = s[i] & mask, inverted where s[i] >= threshold: a mask and a compare and select,
    which vectorize (a table lookup a byte does not)."""
    m = np.uint8(mask)
    if threshold > 255:
        for j in range(s.shape[0]):
            d[j] = s[j] & m
        return
    t = np.uint8(max(threshold, 0))
    for j in range(s.shape[0]):
        v = s[j]
        w = v & m
        d[j] = w if v < t else np.uint8(255) - w


@njit(cache=True)
def _blend_run(s, d, grey, alpha):
    for j in range(s.shape[0]):
        d[j] = _blend_px(grey, s[j], alpha)


@njit(cache=True)
def _color_run(s, d, alpha):
    """Each pixel blended with its own luminance."""
    for k in range(s.shape[0] // 3):
        i = np.uint64(3 * k)
        grey = luminance(s[i], s[i + _U1], s[i + _U2])
        d[i] = _blend_px(grey, s[i], alpha)
        d[i + _U1] = _blend_px(grey, s[i + _U1], alpha)
        d[i + _U2] = _blend_px(grey, s[i + _U2], alpha)


@njit(cache=True)
def apply_lut3(src, dst, lut, form, r0, r1, c0, c1):
    """dst[y, x, c] = lut[c, src[y, x, c]] inside the region; lut is uint8 [3, 256]. The one
    kernel of the table ops: equalize and autocontrast (tables made from the image) and the
    per-byte ops (posterize, solarize, invert: fixed tables, Tables.bytes).

    form: (mask, threshold) when every channel's table is `v & mask`, inverted for
    v >= threshold (policy.mask_flip_form), and the bytes are then computed so, in vectorized
    loops; (-1, 0) for any other table, looked up."""
    if form[0] < 0:
        point_op(RUN_LUT3, src, dst, lut, 0, 0, np.float32(0.0), r0, r1, c0, c1)
    else:
        point_op(RUN_MASK_FLIP, src, dst, lut, form[0], form[1], np.float32(0.0), r0, r1, c0, c1)


@njit(cache=True)
def histograms(src):
    """Per-channel counts [3, 256] in one flat pass. Two pixels per step go to two count sets,
    so runs of equal values (flat areas) do not serialize on one counter."""
    s1 = src.reshape(-1)
    h = np.zeros((6, 256), np.int32)
    h0, h1, h2, h3, h4, h5 = h[0], h[1], h[2], h[3], h[4], h[5]
    n = s1.shape[0] // 6
    for k in range(n):
        i = np.uint64(6 * k)
        h0[s1[i]] += 1
        h1[s1[i + _U1]] += 1
        h2[s1[i + _U2]] += 1
        h3[s1[i + _U3]] += 1
        h4[s1[i + _U4]] += 1
        h5[s1[i + _U5]] += 1
    if 6 * n < s1.shape[0]:  # an odd number of pixels
        h0[s1[6 * n]] += 1
        h1[s1[6 * n + 1]] += 1
        h2[s1[6 * n + 2]] += 1
    out = np.empty((3, 256), np.int64)
    for i in range(256):
        out[0, i] = h0[i] + h3[i]
        out[1, i] = h1[i] + h4[i]
        out[2, i] = h2[i] + h5[i]
    return out


@njit(cache=True)
def equalize_lut(h):
    """ImageOps.equalize's per-channel table from per-channel histograms."""
    lut = np.empty((3, 256), np.uint8)
    for c in range(3):
        nonzero = 0
        total = 0
        last = 0
        for i in range(256):
            if h[c, i] > 0:
                nonzero += 1
                total += h[c, i]
                last = h[c, i]
        step = (total - last) // 255 if nonzero > 1 else 0
        if step == 0:
            for i in range(256):
                lut[c, i] = i
        else:
            n = step // 2
            for i in range(256):
                lut[c, i] = min(n // step, 255)
                n += h[c, i]
    return lut


@njit(cache=True)
def equalize(src, dst, r0, r1, c0, c1):
    apply_lut3(src, dst, equalize_lut(histograms(src)), NO_FORM, r0, r1, c0, c1)


@njit(cache=True)
def mirror(src, dst, r0, r1, c0, c1):
    """dst[y, x] = src[y, W - 1 - x]: per row, pixel k of the run reads the mirrored run
    backwards (unsigned offsets)."""
    W = src.shape[1]
    s1 = src.reshape(-1)
    d1 = dst.reshape(-1)
    n = max(c1 - c0, 0)
    for y in range(r0, r1):
        d = d1[(y * W + c0) * 3:(y * W + c1) * 3]
        s = s1[(y * W + W - c1) * 3:(y * W + W - c0) * 3]
        for k in range(n):
            i = np.uint64(3 * k)
            m = np.uint64(3 * (n - 1 - k))
            d[i] = s[m]
            d[i + _U1] = s[m + _U1]
            d[i + _U2] = s[m + _U2]


@njit(cache=True)
def _py_floordiv_pos(v, w):
    """Python's float `v // w` for v >= 0, w > 0 (CPython's fmod-based algorithm)."""
    mod = np.fmod(v, w)
    div = (v - mod) / w
    if div == 0.0:
        return 0.0
    fl = math.floor(div)
    if div - fl > 0.5:
        fl += 1.0
    return fl


@njit(cache=True)
def autocontrast_lut(h, cutoff):
    """ImageOps.autocontrast(image, cutoff)'s per-channel table (cutoff in percent)."""
    lut = np.empty((3, 256), np.uint8)
    for c in range(3):
        hc = h[c].copy()
        if cutoff != 0.0:
            n = 0
            for i in range(256):
                n += hc[i]
            for side in range(2):
                cut = int(_py_floordiv_pos(n * cutoff, 100.0))
                for j in range(256):
                    i = j if side == 0 else 255 - j
                    if cut > hc[i]:
                        cut -= hc[i]
                        hc[i] = 0
                    else:
                        hc[i] -= cut
                        cut = 0
                    if cut <= 0:
                        break
        lo = 0
        while lo < 255 and hc[lo] == 0:
            lo += 1
        hi = 255
        while hi > 0 and hc[hi] == 0:
            hi -= 1
        if hi <= lo:
            for i in range(256):
                lut[c, i] = i
        else:
            scale = 255.0 / (hi - lo)
            offset = -lo * scale
            for i in range(256):
                v = int(i * scale + offset)
                lut[c, i] = 0 if v < 0 else (255 if v > 255 else v)
    return lut


@njit(cache=True)
def autocontrast(src, dst, cutoff, r0, r1, c0, c1):
    apply_lut3(src, dst, autocontrast_lut(histograms(src), cutoff), NO_FORM, r0, r1, c0, c1)


# ---------------------------------------------------------------- enhance ops (Image.blend)


@njit(cache=True)
def _blend_px(a, b, alpha):
    """PIL's ImagingBlend on one uint8 value: a + alpha * (b - a) in C float, truncated.

    PIL clamps only when alpha is outside [0, 1]; inside, the float result already lies
    between a and b, so clamping always gives the same bytes without a branch.
    """
    t = np.float32(a) + alpha * np.float32(np.int32(b) - np.int32(a))
    return np.uint8(np.int32(min(max(t, np.float32(0.0)), np.float32(255.0))))


@njit(cache=True)
def luminance(r, g, b):
    """PIL's RGB -> L conversion (ITU-R 601-2 weights in 16.16 fixed point)."""
    return (np.int64(r) * 19595 + np.int64(g) * 38470 + np.int64(b) * 7471 + 0x8000) >> 16


@njit(cache=True)
def color(src, dst, factor, r0, r1, c0, c1):
    point_op(RUN_COLOR, src, dst, NO_LUT, 0, 0, np.float32(factor), r0, r1, c0, c1)


@njit(cache=True)
def contrast(src, dst, factor, r0, r1, c0, c1):
    """ImageEnhance.Contrast: blend with the mean luminance (summed exactly as integers; PIL
    sums them in double, exact at these sizes)."""
    H, W = src.shape[0], src.shape[1]
    s1 = src.reshape(-1)
    total = 0
    for k in range(H * W):
        i = np.uint64(3 * k)
        total += luminance(s1[i], s1[i + _U1], s1[i + _U2])
    mean = int(np.float64(total) / (H * W) + 0.5)
    point_op(RUN_BLEND, src, dst, NO_LUT, mean, 0, np.float32(factor), r0, r1, c0, c1)


@njit(cache=True)
def brightness(src, dst, factor, r0, r1, c0, c1):
    point_op(RUN_BLEND, src, dst, NO_LUT, 0, 0, np.float32(factor), r0, r1, c0, c1)


_K_EDGE = np.float32(1.0) / np.float32(13.0)
_K_CENTRE = np.float32(5.0) / np.float32(13.0)


@njit(cache=True)
def _smooth_row(up, mid, dn, j):
    """ImageFilter.SMOOTH at byte j + 3 of three row slices (rows y + 1, y, y - 1), in C float
    as PIL's 3x3 filter sums it."""
    ss = np.float32(0.5)
    ss = ss + (np.float32(up[j]) * _K_EDGE + np.float32(up[j + 3]) * _K_EDGE
               + np.float32(up[j + 6]) * _K_EDGE)
    ss = ss + (np.float32(mid[j]) * _K_EDGE + np.float32(mid[j + 3]) * _K_CENTRE
               + np.float32(mid[j + 6]) * _K_EDGE)
    ss = ss + (np.float32(dn[j]) * _K_EDGE + np.float32(dn[j + 3]) * _K_EDGE
               + np.float32(dn[j + 6]) * _K_EDGE)
    return np.uint8(np.int32(min(max(ss, np.float32(0.0)), np.float32(255.0))))


@njit(cache=True)
def sharpness(src, dst, factor, r0, r1, c0, c1):
    """ImageEnhance.Sharpness: blend with SMOOTH, which leaves the border pixels alone (there
    the blend returns the source). Interior runs of each row are one vectorized loop."""
    H, W = src.shape[0], src.shape[1]
    s1 = src.reshape(-1)
    d1 = dst.reshape(-1)
    alpha = np.float32(factor)
    row = W * 3
    for y in range(r0, r1):
        o = y * row
        xa = min(max(c0, 1), c1)
        xb = max(min(c1, W - 1), xa)
        if y == 0 or y == H - 1:
            xa = xb = c1
        _copy(d1[o + c0 * 3:o + xa * 3], s1[o + c0 * 3:o + xa * 3])
        n = (xb - xa) * 3
        if n > 0:
            a = o + (xa - 1) * 3
            up = s1[a + row:a + row + n + 6]
            mid = s1[a:a + n + 6]
            dn = s1[a - row:a - row + n + 6]
            d = d1[o + xa * 3:o + xb * 3]
            for j in range(n):
                d[j] = _blend_px(_smooth_row(up, mid, dn, j), mid[j + 3], alpha)
        _copy(d1[o + xb * 3:o + c1 * 3], s1[o + xb * 3:o + c1 * 3])


# ---------------------------------------------------------------- geometric ops


@njit(cache=True)
def _coord(k, base, add, sub, x):
    """One sample coordinate as PIL computes it, `k * (x + 0.5) + base + add - sub` in double."""
    return k * (x + 0.5) + base + add - sub


@njit(cache=True)
def _first(k, base, add, sub, t, c0, c1):
    """Smallest x in [c0, c1] where `_coord >= t` becomes true (k > 0) or false (k < 0).

    The coordinate is monotone in x, so a real-arithmetic guess corrected by evaluating the
    exact expression on either side gives the exact boundary (the guess only sets the cost).
    """
    e = (t - base - add + sub) / k - 0.5
    x = c0
    if e > c0:
        x = c1 if e >= c1 else int(math.ceil(e))
    up = k > 0.0
    while x > c0 and (_coord(k, base, add, sub, x - 1) >= t) == up:
        x -= 1
    while x < c1 and (_coord(k, base, add, sub, x) >= t) != up:
        x += 1
    return x


@njit(cache=True)
def _span(k, base, add, sub, lo, hi, c0, c1):
    """The columns [a, b) of [c0, c1) where lo <= `_coord` < hi (exact, a == b when none)."""
    if k > 0.0:
        a = _first(k, base, add, sub, lo, c0, c1)
        b = _first(k, base, add, sub, hi, c0, c1)
    elif k < 0.0:
        a = _first(k, base, add, sub, hi, c0, c1)
        b = _first(k, base, add, sub, lo, c0, c1)
    else:
        v = _coord(k, base, add, sub, c0)
        a, b = (c0, c1) if lo <= v < hi else (c0, c0)
    return a, max(a, b)


@njit(cache=True)
def _zero(d1, a, b):
    d = d1[a:b]
    for j in range(d.shape[0]):
        d[j] = 0


@njit(cache=True)
def _bilinear_px(s1, d1, o, xx, yy, W, H):
    """PIL's bilinear sample of the source at (xx, yy) into d1[o:o+3], black outside."""
    if xx < 0.0 or xx >= W or yy < 0.0 or yy >= H:
        d1[o] = 0
        d1[o + _U1] = 0
        d1[o + _U2] = 0
        return
    row = W * 3
    xx -= 0.5
    yy -= 0.5
    xi = int(xx)
    if xi > xx:
        xi -= 1
    yi = int(yy)
    if yi > yy:
        yi -= 1
    dx = xx - xi
    dy = yy - yi
    x0 = xi * 3 if xi >= 0 else 0
    x1 = (xi + 1) * 3 if xi + 1 < W else (W - 1) * 3
    ra = (yi if yi >= 0 else 0) * row
    rb = (yi + 1) * row if yi + 1 < H else ra
    i00 = np.uint64(ra + x0)
    i01 = np.uint64(ra + x1)
    i10 = np.uint64(rb + x0)
    i11 = np.uint64(rb + x1)
    for c in range(3):
        cu = np.uint64(c)
        p0 = np.float64(s1[i00 + cu])
        v1 = p0 + (np.float64(s1[i01 + cu]) - p0) * dx
        q0 = np.float64(s1[i10 + cu])
        v2 = q0 + (np.float64(s1[i11 + cu]) - q0) * dx
        d1[o + cu] = np.uint8(int(v1 + (v2 - v1) * dy))


@njit(cache=True)
def _general_run(s1, d1, W, H, a0, bx, a2, a3, by, a5, base, xa, xb):
    """Pixels [xa, xb) of the output row at byte `base` through the general sampler, for
    the matrix (a0, ., a2, a3, ., a5) with the row's terms bx = a1 y', by = a4 y'."""
    for x in range(xa, xb):
        xc = x + 0.5
        _bilinear_px(s1, d1, np.uint64(base + x * 3), a0 * xc + bx + a2, a3 * xc + by + a5, W, H)


_AFFINE, _SHEAR_X, _SHEAR_Y = range(3)  # which interior sampler `_bilinear_rows` runs


@njit(cache=True)
def affine_bilinear(src, dst, a0, a1, a2, a3, a4, a5, r0, r1, c0, c1):
    """PIL's `Image.transform(AFFINE, (a0..a5), BILINEAR)` with black fill.

    Output pixel (x, y) samples the input at (a0 x' + a1 y' + a2, a3 x' + a4 y' + a5) with
    x' = x + 0.5: outside [0, W) x [0, H) it is black; inside, bilinear between pixel centres,
    edge columns clamped, a missing lower row replaced by the upper one, result truncated.
    The arithmetic (double, same order) is PIL's, so results are bit-identical.
    """
    _bilinear_rows(_AFFINE, src, dst, a0, a1, a2, a3, a4, a5, r0, r1, c0, c1)


@njit(cache=True)
def shear_x(src, dst, s, r0, r1, c0, c1):
    """affine_bilinear with (1, s, 0, 0, 1, 0): the sample row is exact, so only a horizontal
    interpolation remains (the same arithmetic, bit for bit)."""
    _bilinear_rows(_SHEAR_X, src, dst, 1.0, s, 0.0, 0.0, 1.0, 0.0, r0, r1, c0, c1)


@njit(cache=True)
def shear_y(src, dst, s, r0, r1, c0, c1):
    """affine_bilinear with (1, 0, 0, s, 1, 0): the sample column is exact, so only a vertical
    interpolation remains (the same arithmetic, bit for bit)."""
    _bilinear_rows(_SHEAR_Y, src, dst, 1.0, 0.0, 0.0, s, 1.0, 0.0, r0, r1, c0, c1)


@njit(cache=True, inline="always")
def _bilinear_rows(kind, src, dst, a0, a1, a2, a3, a4, a5, r0, r1, c0, c1):
    """The affine family, row by row. Each output row splits into exact column ranges (the
    coordinates are monotone in x): black outside the source, the general sampler near its
    edges, and an interior where every neighbour the sampler reads exists (all four for
    `_AFFINE`; for the shears, whose row or column is exact, two), sampled with no tests.
    Narrow regions (small patches) take the general sampler throughout. Inlined into each op,
    so the shears' constant matrix entries and `kind` fold away.
    """
    H, W = src.shape[0], src.shape[1]
    s1 = src.reshape(-1)
    d1 = dst.reshape(-1)
    if c1 - c0 < _NARROW:
        for y in range(r0, r1):
            yc = y + 0.5
            _general_run(s1, d1, W, H, a0, a1 * yc, a2, a3, a4 * yc, a5, y * W * 3, c0, c1)
        return
    idx = np.empty(W, np.uint64)
    fx = np.empty(3 * W, np.float64)
    fy = np.empty(W, np.float64)
    for y in range(r0, r1):
        yc = y + 0.5
        bx = a1 * yc
        by = a4 * yc
        base = y * W * 3
        # inside the source: [qa, qb); the sampler's neighbours present: [pa, pb) within it.
        # A shear samples each pixel's own row (shear_x) or column (shear_y): never outside.
        qa, qb = c0, c1
        if kind != _SHEAR_Y:
            qa, qb = _span(a0, bx, a2, 0.0, 0.0, W, qa, qb)
        if kind != _SHEAR_X:
            qa, qb = _span(a3, by, a5, 0.0, 0.0, H, qa, qb)
        pa, pb = qa, qb
        if kind != _SHEAR_Y:
            pa, pb = _span(a0, bx, a2, 0.5, 0.0, W - 1, pa, pb)
        if kind != _SHEAR_X:
            pa, pb = _span(a3, by, a5, 0.5, 0.0, H - 1, pa, pb)
        if pa == pb:
            pa = pb = qb
        _zero(d1, base + c0 * 3, base + qa * 3)
        _general_run(s1, d1, W, H, a0, bx, a2, a3, by, a5, base, qa, pa)
        if kind == _SHEAR_X:
            _shear_x_interior(s1, d1, W, H, bx, yc, base, pa, pb, fx)
        elif kind == _SHEAR_Y:
            _shear_y_interior(s1, d1, W, a3, by, base, pa, pb, idx, fy)
        else:
            _affine_interior(s1, d1, W, a0, bx, a2, a3, by, a5, base, pa, pb, idx, fx, fy)
        _general_run(s1, d1, W, H, a0, bx, a2, a3, by, a5, base, pb, qb)
        _zero(d1, base + qb * 3, base + c1 * 3)


@njit(cache=True, inline="always")
def _affine_interior(s1, d1, W, a0, bx, a2, a3, by, a5, base, pa, pb, idx, fx, fy):
    """Pixels [pa, pb) of a row, all four neighbours present, in two passes: coordinates
    (vectorized), then samples."""
    row = W * 3
    n = pb - pa
    for k in range(n):
        xc = (pa + k) + 0.5
        xx = a0 * xc + bx + a2 - 0.5
        yy = a3 * xc + by + a5 - 0.5
        xi = int(xx)  # floor: xx >= 0 here
        yi = int(yy)
        fx[k] = xx - xi
        fy[k] = yy - yi
        idx[k] = np.uint64(yi * row + xi * 3)
    _sample_pass(s1, d1[base + pa * 3:base + pb * 3], row, n, idx, fx, fy, True)


@njit(cache=True, inline="always")
def _shear_x_interior(s1, d1, W, H, t, yc, base, pa, pb, f):
    """Pixels [pa, pb) of a row of shear_x (offset t = s (y + 0.5)). The sample columns are
    x + K for one K (checked: PIL's rounding breaks it only when t lies within ~1e-13 below an
    integer, and such a row takes the general sampler), so the interpolation is one
    contiguous, vectorized loop over bytes."""
    n = pb - pa
    x0 = int(((pa + 0.5) + t) - 0.5) if n > 0 else 0
    moved = 0
    for k in range(n):
        xx = ((pa + k) + 0.5) + t - 0.5
        xi = int(xx)
        moved |= (xi - k) ^ x0
        dx = xx - xi
        f[3 * k] = dx
        f[3 * k + 1] = dx
        f[3 * k + 2] = dx
    if moved != 0:
        _general_run(s1, d1, W, H, 1.0, t, 0.0, 0.0, yc, 0.0, base, pa, pb)
        return
    a = base + x0 * 3
    p = s1[a:a + 3 * n]
    q = s1[a + 3:a + 3 * n + 3]
    d = d1[base + pa * 3:base + pb * 3]
    for j in range(d.shape[0]):
        p0 = np.float64(p[j])
        d[j] = np.uint8(int(p0 + (np.float64(q[j]) - p0) * f[j]))


@njit(cache=True, inline="always")
def _shear_y_interior(s1, d1, W, s, yc, base, pa, pb, idx, fy):
    """Pixels [pa, pb) of a row of shear_y: the sample column is the pixel's own."""
    row = W * 3
    n = pb - pa
    for k in range(n):
        yy = s * ((pa + k) + 0.5) + yc - 0.5
        yi = int(yy)
        fy[k] = yy - yi
        idx[k] = np.uint64(yi * row + (pa + k) * 3)
    _sample_pass(s1, d1[base + pa * 3:base + pb * 3], row, n, idx, fy, fy, False)


@njit(cache=True, inline="always")
def _sample_pass(s1, d, row, n, idx, fx, fy, horizontal):
    """d = the n samples whose top-left neighbour is at byte idx[k] with fractions (fx[k], fy[k]):
    bilinear, or only vertical (the pixel's own column) when `horizontal` is False, with no
    tests, unsigned offsets and bytes made double through a table (faster than a convert)."""
    T = _F64
    s2 = s1[row:]
    for k in range(n):
        i = idx[k]
        dx = fx[k]
        dy = fy[k]
        o = np.uint64(3 * k)
        for c in range(3):
            ic = i + np.uint64(c)
            v1 = T[s1[ic]]
            v2 = T[s2[ic]]
            if horizontal:
                v1 = v1 + (T[s1[ic + _U3]] - v1) * dx
                v2 = v2 + (T[s2[ic + _U3]] - v2) * dx
            d[o + np.uint64(c)] = np.uint8(int(v1 + (v2 - v1) * dy))


@njit(cache=True)
def _copy(d, s):
    for j in range(d.shape[0]):
        d[j] = s[j]


@njit(cache=True)
def translate(src, dst, tx, ty, r0, r1, c0, c1):
    """PIL's AFFINE (1, 0, tx, 0, 1, ty) BILINEAR for integer shifts: an exact pixel shift."""
    H, W = src.shape[0], src.shape[1]
    s1 = src.reshape(-1)
    d1 = dst.reshape(-1)
    for y in range(r0, r1):
        sy = y + ty
        # columns whose source x + tx lies inside [0, W); none when row sy is outside
        lo = min(max(c0, -tx), c1)
        hi = max(min(c1, W - tx), lo)
        if sy < 0 or sy >= H:
            lo = hi = c1
        o = y * W * 3
        _zero(d1, o + c0 * 3, o + lo * 3)
        a = (sy * W + lo + tx) * 3
        _copy(d1[o + lo * 3:o + hi * 3], s1[a:a + (hi - lo) * 3])
        _zero(d1, o + hi * 3, o + c1 * 3)


@njit(cache=True)
def copy_region(src, dst, r0, r1, c0, c1):
    point_op(RUN_COPY, src, dst, NO_LUT, 0, 0, np.float32(0.0), r0, r1, c0, c1)


@njit(cache=True)
def copy_all(src, dst):
    """dst = src for two C-contiguous arrays of one size (a loop: Numba's slice copy is slower)."""
    s1 = src.reshape(-1)
    d1 = dst.reshape(-1)
    for i in range(s1.shape[0]):
        d1[i] = s1[i]


@njit(cache=True)
def rotate(src, dst, degrees, rot_table, r0, r1, c0, c1):
    """PIL's `Image.rotate(degrees, BILINEAR)` about the centre, same size, black fill."""
    if degrees == 0:
        copy_region(src, dst, r0, r1, c0, c1)
        return
    H, W = src.shape[0], src.shape[1]
    row = degrees + (rot_table.shape[0] - 1) // 2
    a = rot_table[row, 0]
    b = rot_table[row, 1]
    d = rot_table[row, 2]
    e = rot_table[row, 3]
    cx = W / 2.0
    cy = H / 2.0
    c = a * -cx + b * -cy + 0.0 + cx
    f = d * -cx + e * -cy + 0.0 + cy
    affine_bilinear(src, dst, a, b, c, d, e, f, r0, r1, c0, c1)


# ---------------------------------------------------------------- one op with its level


@njit(cache=True)
def apply_op(op, st, severity, src, dst, tables, r0, r1, c0, c1):
    """Op `op` (a row of policy.TABLE) on src -> dst inside the region: draw its level (then its
    sign) from `st`, turn the level into its argument as the row says, run its kernel (a per-byte
    op: its table for the argument, clamped to the arguments that have one)."""
    row = TABLE[op]
    kernel = int(row[COL_KERNEL])
    level = 0.1 + uniform(st) * (severity - 0.1)
    m = row[COL_COEF]
    if row[COL_BY_SIZE] != 0.0:
        m = (src.shape[1] if kernel == TRANSLATE_X else src.shape[0]) / m
    mag = level * m / row[COL_DIV]
    if row[COL_INTEGER] != 0.0:
        mag = float(int(mag))
    if row[COL_SIGNED] != 0.0 and uniform(st) > 0.5:
        mag = -mag
    arg = row[COL_BASE] + mag
    if kernel == EQUALIZE:
        equalize(src, dst, r0, r1, c0, c1)
    elif kernel == BYTE_TABLE:
        lo = int(row[COL_ARG_MIN])
        i = int(row[COL_FIRST_TABLE]) + min(max(int(arg), lo), int(row[COL_ARG_MAX])) - lo
        apply_lut3(src, dst, tables.bytes[i], tables.forms[i], r0, r1, c0, c1)
    elif kernel == ROTATE:
        rotate(src, dst, int(arg), tables.rotation, r0, r1, c0, c1)
    elif kernel == SHEAR_X:
        shear_x(src, dst, arg, r0, r1, c0, c1)
    elif kernel == SHEAR_Y:
        shear_y(src, dst, arg, r0, r1, c0, c1)
    elif kernel == TRANSLATE_X:
        translate(src, dst, int(arg), 0, r0, r1, c0, c1)
    elif kernel == TRANSLATE_Y:
        translate(src, dst, 0, int(arg), r0, r1, c0, c1)
    elif kernel == MIRROR:
        mirror(src, dst, r0, r1, c0, c1)
    elif kernel == AUTOCONTRAST:
        autocontrast(src, dst, arg, r0, r1, c0, c1)
    elif kernel == COLOR:
        color(src, dst, arg, r0, r1, c0, c1)
    elif kernel == CONTRAST:
        contrast(src, dst, arg, r0, r1, c0, c1)
    elif kernel == BRIGHTNESS:
        brightness(src, dst, arg, r0, r1, c0, c1)
    else:
        sharpness(src, dst, arg, r0, r1, c0, c1)
