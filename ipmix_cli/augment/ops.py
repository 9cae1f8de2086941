"""Image-level ops with PIL's exact semantics on uint8 HxWx3 arrays, as Numba kernels.

Every kernel reads the whole source image `src` and writes `dst` only inside the region
rows [r0, r1) x columns [c0, c1) (a P chain needs an augmented partner only inside its
patch). `src` and `dst` must be different arrays.

The tables at the bottom are the policy, in the style of timm's auto_augment: op name to id,
and each op's level-to-argument rule (`level ~ U(0.1, severity)`, as AugMix/IPMix draw it).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ipmix_cli.augment.rng import uniform

# ---------------------------------------------------------------- op ids and lists
EQUALIZE, POSTERIZE, ROTATE, SOLARIZE, SHEAR_X, SHEAR_Y, TRANSLATE_X, TRANSLATE_Y = range(8)
MIRROR, INVERT, AUTOCONTRAST, COLOR, CONTRAST, BRIGHTNESS, SHARPNESS = range(8, 15)

OP_IDS = {
    "equalize": EQUALIZE, "posterize": POSTERIZE, "rotate": ROTATE, "solarize": SOLARIZE,
    "shear_x": SHEAR_X, "shear_y": SHEAR_Y, "translate_x": TRANSLATE_X, "translate_y": TRANSLATE_Y,
    "mirror": MIRROR, "invert": INVERT, "autocontrast": AUTOCONTRAST, "color": COLOR,
    "contrast": CONTRAST, "brightness": BRIGHTNESS, "sharpness": SHARPNESS,
}
OP_NAMES = {v: k for k, v in OP_IDS.items()}

# IPMix's default list: AugMix's list without autocontrast, plus mirror and invert.
IPMIX_OPS = ("equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y",
             "translate_x", "translate_y", "mirror", "invert")
# AugMix's list.
AUGMIX_OPS = ("autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y",
              "translate_x", "translate_y")
# The "all ops" additions.
EXTRA_OPS = ("autocontrast", "color", "contrast", "brightness", "sharpness")
ALL_OPS = IPMIX_OPS + EXTRA_OPS

# Level-to-argument rules (level is a float in [0.1, severity)); M/10 scaling as AugMix does it.
LEVEL_RULES = {
    "equalize": "none",
    "posterize": "bits = 4 - int(level * 4 / 10)",
    "rotate": "degrees = +-int(level * 30 / 10)",
    "solarize": "threshold = 256 - int(level * 256 / 10)",
    "shear_x": "shear = +-level * 0.3 / 10",
    "shear_y": "shear = +-level * 0.3 / 10",
    "translate_x": "pixels = +-int(level * (size / 3) / 10)",
    "translate_y": "pixels = +-int(level * (size / 3) / 10)",
    "mirror": "none",
    "invert": "none",
    "autocontrast": "cutoff = 10 - level (percent)",
    "color": "factor = level * 1.8 / 10 + 0.1",
    "contrast": "factor = level * 1.8 / 10 + 0.1",
    "brightness": "factor = level * 1.8 / 10 + 0.1",
    "sharpness": "factor = level * 1.8 / 10 + 0.1",
}

MAX_ROTATION = 30
_U1 = np.uint64(1)
_U2 = np.uint64(2)
_U3 = np.uint64(3)


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

# ---------------------------------------------------------------- point ops (look-up tables)


@njit(cache=True)
def apply_lut3(src, dst, lut, r0, r1, c0, c1):
    """dst[y, x, c] = lut[c, src[y, x, c]] inside the region; lut is uint8 [3, 256]."""
    W = src.shape[1]
    s1 = src.reshape(-1)
    d1 = dst.reshape(-1)
    l0, l1, l2 = lut[0], lut[1], lut[2]
    for y in range(r0, r1):
        for i in range((y * W + c0) * 3, (y * W + c1) * 3, 3):
            d1[i] = l0[s1[i]]
            d1[i + 1] = l1[s1[i + 1]]
            d1[i + 2] = l2[s1[i + 2]]


@njit(cache=True)
def apply_lut1(src, dst, lut, r0, r1, c0, c1):
    W = src.shape[1]
    s1 = src.reshape(-1)
    d1 = dst.reshape(-1)
    for y in range(r0, r1):
        for i in range((y * W + c0) * 3, (y * W + c1) * 3):
            d1[i] = lut[s1[i]]


@njit(cache=True)
def histograms(src):
    h = np.zeros((3, 256), np.int64)
    H, W = src.shape[0], src.shape[1]
    for y in range(H):
        for x in range(W):
            for c in range(3):
                h[c, src[y, x, c]] += 1
    return h


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
    apply_lut3(src, dst, equalize_lut(histograms(src)), r0, r1, c0, c1)


@njit(cache=True)
def posterize(src, dst, bits, r0, r1, c0, c1):
    mask = (~((1 << (8 - bits)) - 1)) & 0xFF
    lut = np.empty(256, np.uint8)
    for i in range(256):
        lut[i] = i & mask
    apply_lut1(src, dst, lut, r0, r1, c0, c1)


@njit(cache=True)
def solarize(src, dst, threshold, r0, r1, c0, c1):
    lut = np.empty(256, np.uint8)
    for i in range(256):
        lut[i] = i if i < threshold else 255 - i
    apply_lut1(src, dst, lut, r0, r1, c0, c1)


@njit(cache=True)
def invert(src, dst, r0, r1, c0, c1):
    W = src.shape[1]
    s1 = src.reshape(-1)
    d1 = dst.reshape(-1)
    for y in range(r0, r1):
        for i in range((y * W + c0) * 3, (y * W + c1) * 3):
            d1[i] = 255 - s1[i]


@njit(cache=True)
def mirror(src, dst, r0, r1, c0, c1):
    W = src.shape[1]
    for y in range(r0, r1):
        for x in range(c0, c1):
            for c in range(3):
                dst[y, x, c] = src[y, W - 1 - x, c]


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
    apply_lut3(src, dst, autocontrast_lut(histograms(src), cutoff), r0, r1, c0, c1)


# ---------------------------------------------------------------- enhance ops (Image.blend)


@njit(cache=True)
def _blend_px(a, b, alpha):
    """PIL's ImagingBlend on one uint8 value: a + alpha * (b - a) in C float, truncated."""
    t = np.float32(a) + alpha * np.float32(np.int32(b) - np.int32(a))
    if alpha >= np.float32(0.0) and alpha <= np.float32(1.0):
        return np.uint8(int(t))
    if t <= np.float32(0.0):
        return np.uint8(0)
    if t >= np.float32(255.0):
        return np.uint8(255)
    return np.uint8(int(t))


@njit(cache=True)
def luminance(r, g, b):
    """PIL's RGB -> L conversion (ITU-R 601-2 weights in 16.16 fixed point)."""
    return (np.int64(r) * 19595 + np.int64(g) * 38470 + np.int64(b) * 7471 + 0x8000) >> 16


@njit(cache=True)
def color(src, dst, factor, r0, r1, c0, c1):
    alpha = np.float32(factor)
    for y in range(r0, r1):
        for x in range(c0, c1):
            grey = luminance(src[y, x, 0], src[y, x, 1], src[y, x, 2])
            for c in range(3):
                dst[y, x, c] = _blend_px(grey, src[y, x, c], alpha)


@njit(cache=True)
def contrast(src, dst, factor, r0, r1, c0, c1):
    H, W = src.shape[0], src.shape[1]
    total = 0.0
    for y in range(H):
        for x in range(W):
            total += luminance(src[y, x, 0], src[y, x, 1], src[y, x, 2])
    mean = int(total / (H * W) + 0.5)
    alpha = np.float32(factor)
    for y in range(r0, r1):
        for x in range(c0, c1):
            for c in range(3):
                dst[y, x, c] = _blend_px(mean, src[y, x, c], alpha)


@njit(cache=True)
def brightness(src, dst, factor, r0, r1, c0, c1):
    alpha = np.float32(factor)
    for y in range(r0, r1):
        for x in range(c0, c1):
            for c in range(3):
                dst[y, x, c] = _blend_px(0, src[y, x, c], alpha)


_K_EDGE = np.float32(1.0) / np.float32(13.0)
_K_CENTRE = np.float32(5.0) / np.float32(13.0)


@njit(cache=True)
def _smooth_px(src, y, x, c):
    """ImageFilter.SMOOTH at an interior pixel, in C float as PIL's 3x3 filter sums it."""
    ss = np.float32(0.5)
    for dy in (1, 0, -1):
        k1 = _K_CENTRE if dy == 0 else _K_EDGE
        row = (np.float32(src[y + dy, x - 1, c]) * _K_EDGE + np.float32(src[y + dy, x, c]) * k1
               + np.float32(src[y + dy, x + 1, c]) * _K_EDGE)
        ss = ss + row
    if ss < np.float32(0.0):
        ss = np.float32(0.0)
    if ss > np.float32(255.0):
        ss = np.float32(255.0)
    return np.uint8(int(ss))


@njit(cache=True)
def sharpness(src, dst, factor, r0, r1, c0, c1):
    H, W = src.shape[0], src.shape[1]
    alpha = np.float32(factor)
    for y in range(r0, r1):
        for x in range(c0, c1):
            border = y == 0 or x == 0 or y == H - 1 or x == W - 1
            for c in range(3):
                smooth = src[y, x, c] if border else _smooth_px(src, y, x, c)
                dst[y, x, c] = _blend_px(smooth, src[y, x, c], alpha)


# ---------------------------------------------------------------- geometric ops


@njit(cache=True)
def affine_bilinear(src, dst, a0, a1, a2, a3, a4, a5, r0, r1, c0, c1):
    """PIL's `Image.transform(AFFINE, (a0..a5), BILINEAR)` with black fill.

    Output pixel (x, y) samples the input at (a0 x' + a1 y' + a2, a3 x' + a4 y' + a5) with
    x' = x + 0.5: outside [0, W) x [0, H) it is black; inside, bilinear between pixel centres,
    edge columns clamped, a missing lower row replaced by the upper one, result truncated.
    The arithmetic (double, same order) is PIL's, so results are bit-identical.
    src and dst are C-contiguous; they are indexed flat with unsigned offsets (no negative-index
    wrap-around code in the inner loop).
    """
    H, W = src.shape[0], src.shape[1]
    s1 = src.reshape(-1)
    d1 = dst.reshape(-1)
    Wf = np.float64(W)
    Hf = np.float64(H)
    row = W * 3
    for y in range(r0, r1):
        yc = y + 0.5
        by = a1 * yc
        ey = a4 * yc
        o = np.uint64((y * W + c0) * 3)
        for x in range(c0, c1):
            xc = x + 0.5
            xx = a0 * xc + by + a2
            yy = a3 * xc + ey + a5
            if xx < 0.0 or xx >= Wf or yy < 0.0 or yy >= Hf:
                d1[o] = 0
                d1[o + _U1] = 0
                d1[o + _U2] = 0
            else:
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
            o += _U3


@njit(cache=True)
def shear_x(src, dst, s, r0, r1, c0, c1):
    """affine_bilinear with (1, s, 0, 0, 1, 0): the sample row is exact, so only a horizontal
    interpolation remains (the same arithmetic, bit for bit)."""
    H, W = src.shape[0], src.shape[1]
    s1 = src.reshape(-1)
    d1 = dst.reshape(-1)
    Wf = np.float64(W)
    for y in range(r0, r1):
        t = s * (y + 0.5)
        ra = y * W * 3
        o = np.uint64((y * W + c0) * 3)
        for x in range(c0, c1):
            xx = (x + 0.5) + t
            if xx < 0.0 or xx >= Wf:
                d1[o] = 0
                d1[o + _U1] = 0
                d1[o + _U2] = 0
            else:
                xx -= 0.5
                xi = int(xx)
                if xi > xx:
                    xi -= 1
                dx = xx - xi
                i0 = np.uint64(ra + (xi * 3 if xi >= 0 else 0))
                i1 = np.uint64(ra + ((xi + 1) * 3 if xi + 1 < W else (W - 1) * 3))
                for c in range(3):
                    cu = np.uint64(c)
                    p0 = np.float64(s1[i0 + cu])
                    d1[o + cu] = np.uint8(int(p0 + (np.float64(s1[i1 + cu]) - p0) * dx))
            o += _U3


@njit(cache=True)
def shear_y(src, dst, s, r0, r1, c0, c1):
    """affine_bilinear with (1, 0, 0, s, 1, 0): the sample column is exact, so only a vertical
    interpolation remains (the same arithmetic, bit for bit)."""
    H, W = src.shape[0], src.shape[1]
    s1 = src.reshape(-1)
    d1 = dst.reshape(-1)
    Hf = np.float64(H)
    row = W * 3
    for y in range(r0, r1):
        yc = y + 0.5
        o = np.uint64((y * W + c0) * 3)
        for x in range(c0, c1):
            yy = s * (x + 0.5) + yc
            if yy < 0.0 or yy >= Hf:
                d1[o] = 0
                d1[o + _U1] = 0
                d1[o + _U2] = 0
            else:
                yy -= 0.5
                yi = int(yy)
                if yi > yy:
                    yi -= 1
                dy = yy - yi
                ya = yi if yi >= 0 else 0
                yb = yi + 1 if yi + 1 < H else ya
                ia = np.uint64(ya * row + x * 3)
                ib = np.uint64(yb * row + x * 3)
                for c in range(3):
                    cu = np.uint64(c)
                    v1 = np.float64(s1[ia + cu])
                    d1[o + cu] = np.uint8(int(v1 + (np.float64(s1[ib + cu]) - v1) * dy))
            o += _U3


@njit(cache=True)
def translate(src, dst, tx, ty, r0, r1, c0, c1):
    """PIL's AFFINE (1, 0, tx, 0, 1, ty) BILINEAR for integer shifts: an exact pixel shift."""
    H, W = src.shape[0], src.shape[1]
    s1 = src.reshape(-1)
    d1 = dst.reshape(-1)
    for y in range(r0, r1):
        sy = y + ty
        # columns whose source x + tx lies inside [0, W)
        lo = max(c0, -tx)
        hi = min(c1, W - tx)
        o = (y * W) * 3
        if sy < 0 or sy >= H or hi <= lo:
            for i in range(o + c0 * 3, o + c1 * 3):
                d1[i] = 0
            continue
        for i in range(o + c0 * 3, o + lo * 3):
            d1[i] = 0
        shift = (sy * W + tx) * 3 - o
        for i in range(o + lo * 3, o + hi * 3):
            d1[i] = s1[i + shift]
        for i in range(o + max(hi, lo) * 3, o + c1 * 3):
            d1[i] = 0


@njit(cache=True)
def copy_region(src, dst, r0, r1, c0, c1):
    W = src.shape[1]
    s1 = src.reshape(-1)
    d1 = dst.reshape(-1)
    for y in range(r0, r1):
        for i in range((y * W + c0) * 3, (y * W + c1) * 3):
            d1[i] = s1[i]


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
def apply_op(op, st, severity, src, dst, rot_table, r0, r1, c0, c1):
    """Draw the op's level (and sign) from `st` and apply it: src -> dst inside the region."""
    level = 0.1 + uniform(st) * (severity - 0.1)
    if op == EQUALIZE:
        equalize(src, dst, r0, r1, c0, c1)
    elif op == POSTERIZE:
        posterize(src, dst, 4 - int(level * 4 / 10), r0, r1, c0, c1)
    elif op == ROTATE:
        deg = int(level * 30 / 10)
        if uniform(st) > 0.5:
            deg = -deg
        rotate(src, dst, deg, rot_table, r0, r1, c0, c1)
    elif op == SOLARIZE:
        solarize(src, dst, 256 - int(level * 256 / 10), r0, r1, c0, c1)
    elif op == SHEAR_X or op == SHEAR_Y:
        s = level * 0.3 / 10
        if uniform(st) > 0.5:
            s = -s
        if op == SHEAR_X:
            shear_x(src, dst, s, r0, r1, c0, c1)
        else:
            shear_y(src, dst, s, r0, r1, c0, c1)
    elif op == TRANSLATE_X or op == TRANSLATE_Y:
        size = src.shape[1] if op == TRANSLATE_X else src.shape[0]
        t = int(level * (size / 3) / 10)
        if uniform(st) > 0.5:
            t = -t
        if op == TRANSLATE_X:
            translate(src, dst, t, 0, r0, r1, c0, c1)
        else:
            translate(src, dst, 0, t, r0, r1, c0, c1)
    elif op == MIRROR:
        mirror(src, dst, r0, r1, c0, c1)
    elif op == INVERT:
        invert(src, dst, r0, r1, c0, c1)
    elif op == AUTOCONTRAST:
        autocontrast(src, dst, 10.0 - level, r0, r1, c0, c1)
    else:
        factor = level * 1.8 / 10 + 0.1
        if op == COLOR:
            color(src, dst, factor, r0, r1, c0, c1)
        elif op == CONTRAST:
            contrast(src, dst, factor, r0, r1, c0, c1)
        elif op == BRIGHTNESS:
            brightness(src, dst, factor, r0, r1, c0, c1)
        else:
            sharpness(src, dst, factor, r0, r1, c0, c1)
