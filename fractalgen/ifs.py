"""Iterated function system (IFS) fractals after Anderson & Farrell, "Improving Fractal
Pre-training" (WACV 2022): 2–4 contractive affine maps built from singular values whose sum is
held in the "σ-factor" band, a chaos game splatted into a density histogram, density-to-hue
colour composited over a random plasma background.

Kernels (Numba, cached on disk) first; the parameter sampling below them.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import njit

from fractalgen.palettes import palette_lut, random_palette
from fractalgen.splitmix import next_uniform as _next

POINTS = 100_000
BBOX_POINTS = 4096
SIGMA_MAX = 0.98  # every singular value stays below 1: each map is a strict contraction

# The part of the attractor shown: its bounding box made square, scaled by `scale` and shifted by
# (shift_x, shift_y) (fractions of its side), then flipped and transposed (bools).
Window = namedtuple("Window", ["scale", "shift_x", "shift_y", "flip_x", "flip_y", "transpose"])
# The colouring: the density's hue runs from `hue` over `span` at `saturation`, its value from
# `value` up to 1 and its opacity from 0.35 up by `gain`; `level` dims the background palette.
Colour = namedtuple("Colour", ["hue", "span", "saturation", "value", "gain", "level"])


# --------------------------------------------------------------------------- kernels


@njit(cache=True)
def plasma(n, roughness, seed):
    """Diamond-square height field on an n×n grid (n = 2^k + 1), scaled to [0, 1]."""
    f = np.zeros((n, n), np.float32)
    state = np.uint64(seed)
    for r in (0, n - 1):
        for c in (0, n - 1):
            state, u = _next(state)
            f[r, c] = u
    step = n - 1
    amp = 1.0
    while step > 1:
        half = step // 2
        for r in range(half, n, step):  # diamond: centres of squares
            for c in range(half, n, step):
                state, u = _next(state)
                avg = 0.25 * (f[r - half, c - half] + f[r - half, c + half] + f[r + half, c - half]
                              + f[r + half, c + half])
                f[r, c] = avg + (u - 0.5) * amp
        for r in range(0, n, half):  # square: edge midpoints
            for c in range((r + half) % step, n, step):
                s = 0.0
                k = 0
                if r >= half:
                    s += f[r - half, c]
                    k += 1
                if r + half < n:
                    s += f[r + half, c]
                    k += 1
                if c >= half:
                    s += f[r, c - half]
                    k += 1
                if c + half < n:
                    s += f[r, c + half]
                    k += 1
                state, u = _next(state)
                f[r, c] = s / k + (u - 0.5) * amp
        step = half
        amp *= roughness
    lo = f.min()
    hi = f.max()
    scale = 1.0 / max(hi - lo, 1e-9)
    for r in range(n):
        for c in range(n):
            f[r, c] = (f[r, c] - lo) * scale
    return f


@njit(cache=True, inline="always")
def _step(maps, c0, c1, c2, x, y, state):
    """One chaos-game step. The map index is computed without branches (a random choice
    would mispredict about every other step): cum is padded with 2.0 past the last map."""
    state, u = _next(state)
    k = int(u >= c0) + int(u >= c1) + int(u >= c2)
    nx = maps[k, 0] * x + maps[k, 1] * y + maps[k, 4]
    ny = maps[k, 2] * x + maps[k, 3] * y + maps[k, 5]
    return nx, ny, state


@njit(cache=True)
def chaos_game(maps, cum, npts, seed, bbox_points, window, size):
    """Chaos game splatted into a size×size histogram of point counts.

    maps: [m ≤ 4, 6] rows (a, b, c, d, e, f) for x' = a·x + b·y + e, y' = c·x + d·y + f; map k is
    picked with probability cum[k] - cum[k-1]. The orbit starts at the fixed point of map 0
    (on the attractor, so there is no transient). A first run of `bbox_points` steps finds the
    bounding box, from which the Window is taken."""
    a, b, c, d, e, f = maps[0, 0], maps[0, 1], maps[0, 2], maps[0, 3], maps[0, 4], maps[0, 5]
    det = (1.0 - a) * (1.0 - d) - b * c
    fx0 = ((1.0 - d) * e + b * f) / det
    fy0 = (c * e + (1.0 - a) * f) / det
    cp = np.full(3, 2.0)
    for k in range(min(3, maps.shape[0] - 1)):
        cp[k] = cum[k]
    c0, c1, c2 = cp[0], cp[1], cp[2]
    x, y = fx0, fy0
    x0 = x1 = x
    y0 = y1 = y
    state = np.uint64(seed) ^ np.uint64(0x5DEECE66D)
    for i in range(bbox_points):
        x, y, state = _step(maps, c0, c1, c2, x, y, state)
        x0 = min(x0, x)
        x1 = max(x1, x)
        y0 = min(y0, y)
        y1 = max(y1, y)
    side = max(max(x1 - x0, y1 - y0), 1e-9) * window.scale
    wx = 0.5 * (x0 + x1) + window.shift_x * side - 0.5 * side
    wy = 0.5 * (y0 + y1) + window.shift_y * side - 0.5 * side
    sc = size / side
    fx, fy, tr = window.flip_x, window.flip_y, window.transpose
    hist = np.zeros((size, size), np.float32)
    x, y = fx0, fy0
    state = np.uint64(seed)
    for i in range(npts):
        x, y, state = _step(maps, c0, c1, c2, x, y, state)
        u = (x - wx) * sc
        v = (y - wy) * sc
        if u < 0.0 or v < 0.0 or u >= size or v >= size:
            continue
        px = int(u)
        py = int(v)
        if fx:
            px = size - 1 - px
        if fy:
            py = size - 1 - py
        if tr:
            px, py = py, px
        hist[py, px] += 1.0
    return hist


@njit(cache=True, inline="always")
def _hsv(h, s, v):
    h = (h - math.floor(h)) * 6.0
    i = int(h)
    f = h - i
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    if i == 0:
        return v, t, p
    if i == 1:
        return q, v, p
    if i == 2:
        return p, v, t
    if i == 3:
        return p, q, v
    if i == 4:
        return t, p, v
    return v, p, q


@njit(cache=True)
def stamp3(hist, stamp):
    """Each point becomes a 3×3 stamp: the histogram convolved with `stamp` (zero padded)."""
    h, w = hist.shape
    out = np.zeros((h, w), np.float32)
    for r in range(h):
        for c in range(w):
            v = hist[r, c]
            if v == 0.0:
                continue
            for dr in range(-1, 2):
                rr = r + dr
                if rr < 0 or rr >= h:
                    continue
                for dc in range(-1, 2):
                    cc = c + dc
                    if cc >= 0 and cc < w:
                        out[rr, cc] += v * stamp[dr + 1, dc + 1]
    return out


@njit(cache=True)
def compose(dens, colour, field, lut):
    """Colour density as hue (log scale) and composite it over the background height field
    (bilinearly upsampled to the picture, then mapped through `lut`), as `colour` (a Colour) says."""
    size = dens.shape[0]
    total = 0.0
    nonzero = 0
    for r in range(size):
        for c in range(size):
            if dens[r, c] > 0.0:
                total += dens[r, c]
                nonzero += 1
    inv_ref = 1.0 / math.log1p(max(4.0 * total / max(nonzero, 1), 1.0))
    hue0, span, sat, val0, gain, level = colour
    # foreground colour (0..255) and opacity as a table over log density in [0, 1]
    nf = 255
    fg_lut = np.empty((nf + 1, 4), np.float64)
    for i in range(nf + 1):
        ld = i / nf
        fr, fg, fb = _hsv(hue0 + span * ld, sat, val0 + (1.0 - val0) * ld)
        fg_lut[i, 0] = fr * 255.0
        fg_lut[i, 1] = fg * 255.0
        fg_lut[i, 2] = fb * 255.0
        fg_lut[i, 3] = min(1.0, 0.35 + gain * ld)
    # background palette resampled finely enough for a nearest-entry lookup, dimmed, 0..255
    nb = 1023
    bg_lut = np.empty((nb + 1, 3), np.float64)
    nl = lut.shape[0] - 1
    for i in range(nb + 1):
        t = i / nb * nl
        i0 = min(int(t), nl - 1)
        a = t - i0
        for ch in range(3):
            bg_lut[i, ch] = (lut[i0, ch] * (1.0 - a) + lut[i0 + 1, ch] * a) * level * 255.0
    fs = (field.shape[0] - 1) / size
    cols0 = np.empty(size, np.int64)
    colsa = np.empty(size, np.float64)
    for c in range(size):
        fc = (c + 0.5) * fs
        cols0[c] = int(fc)
        colsa[c] = fc - int(fc)
    out = np.empty((size, size, 3), np.uint8)
    row = np.empty(field.shape[1], np.float64)
    for r in range(size):
        fr = (r + 0.5) * fs
        r0 = int(fr)
        ar = fr - r0
        for j in range(field.shape[1]):
            row[j] = field[r0, j] * (1.0 - ar) + field[r0 + 1, j] * ar
        for c in range(size):
            c0 = cols0[c]
            ac = colsa[c]
            t = row[c0] * (1.0 - ac) + row[c0 + 1] * ac
            k = int(t * nb + 0.5)
            br = bg_lut[k, 0]
            bg = bg_lut[k, 1]
            bb = bg_lut[k, 2]
            d = dens[r, c]
            if d > 0.0:
                u = min(1.0, math.log1p(d) * inv_ref) * nf
                j = min(int(u), nf - 1)
                e = u - j
                al = fg_lut[j, 3] * (1.0 - e) + fg_lut[j + 1, 3] * e
                br = al * (fg_lut[j, 0] * (1.0 - e) + fg_lut[j + 1, 0] * e) + (1.0 - al) * br
                bg = al * (fg_lut[j, 1] * (1.0 - e) + fg_lut[j + 1, 1] * e) + (1.0 - al) * bg
                bb = al * (fg_lut[j, 2] * (1.0 - e) + fg_lut[j + 1, 2] * e) + (1.0 - al) * bb
            out[r, c, 0] = np.uint8(min(255.0, br + 0.5))
            out[r, c, 1] = np.uint8(min(255.0, bg + 0.5))
            out[r, c, 2] = np.uint8(min(255.0, bb + 0.5))
    return out


# --------------------------------------------------------------------------- planning


def sample_sigmas(rng: np.random.Generator, n: int) -> tuple[float, list[list[float]]]:
    """Singular values (σ1 ≥ σ2) of n maps with Σ(σ1 + 2·σ2) = α, α drawn from the σ-factor
    band [(5+n)/2, (6+n)/2]. Each map's share is drawn in turn within what the remaining maps
    can still absorb, so the sum is met exactly and every σ stays in [0, SIGMA_MAX]."""
    alpha = float(rng.uniform((5 + n) / 2.0, (6 + n) / 2.0))
    top = 3.0 * SIGMA_MAX
    left = alpha
    sigmas = []
    for k in range(n):
        others = n - 1 - k
        lo, hi = max(0.0, left - top * others), min(top, left)
        share = hi if others == 0 else float(rng.uniform(lo, hi))
        share = min(max(share, 0.0), top)
        # split share = σ1 + 2σ2 with 0 ≤ σ2 ≤ σ1 ≤ SIGMA_MAX
        s2 = float(rng.uniform(max(0.0, (share - SIGMA_MAX) / 2.0), share / 3.0))
        s1 = share - 2.0 * s2
        sigmas.append([min(s1, SIGMA_MAX), s2])
        left -= share
    return alpha, sigmas


def _rotation(theta: float) -> tuple[float, float, float, float]:
    c, s = math.cos(theta), math.sin(theta)
    return c, -s, s, c


def _linear_part(rng: np.random.Generator, s1: float, s2: float) -> tuple[float, float, float, float]:
    """U · diag(σ1, ±σ2) · V with U, V random rotations (the sign is a random reflection).
    Plain float arithmetic, no BLAS/LAPACK: the same bits on every machine."""
    flip = 1.0 if rng.random() < 0.5 else -1.0
    u00, u01, u10, u11 = _rotation(float(rng.uniform(0, 2 * math.pi)))
    v00, v01, v10, v11 = _rotation(float(rng.uniform(0, 2 * math.pi)))
    d0, d1 = s1, s2 * flip
    return (u00 * d0 * v00 + u01 * d1 * v10, u00 * d0 * v01 + u01 * d1 * v11,
            u10 * d0 * v00 + u11 * d1 * v10, u10 * d0 * v01 + u11 * d1 * v11)


def sample_params(rng: np.random.Generator) -> dict:
    """Draw one IFS picture's parameters (JSON-able)."""
    n = int(rng.integers(2, 5))
    alpha, sigmas = sample_sigmas(rng, n)
    maps, dets = [], []
    for s1, s2 in sigmas:
        a, b, c, d = _linear_part(rng, s1, s2)
        e, f = (float(v) for v in rng.uniform(-1.0, 1.0, 2))
        maps.append([a, b, c, d, e, f])
        dets.append(abs(a * d - b * c))
    weights = [det + 1e-3 for det in dets]  # a map with det 0 still gets drawn now and then
    total = sum(weights)
    probs = [w / total for w in weights]
    scale = float(math.exp(rng.uniform(math.log(0.5), math.log(2.0))))
    return {
        "maps": maps,
        "probabilities": probs,
        "sigma_factor": alpha,
        "points": POINTS,
        "seed": int(rng.integers(0, 2**63)),
        "window": {"scale": scale, "shift": [float(v) for v in rng.uniform(-0.2, 0.2, 2)]},
        "flips": [int(v) for v in rng.integers(0, 2, 3)],
        "stamp": [float(v) for v in rng.uniform(0.0, 1.0, 9)] if rng.random() < 0.5 else None,
        "colour": {"hue": float(rng.random()), "span": float(rng.uniform(0.1, 0.7) * rng.choice([-1, 1])),
                   "saturation": float(rng.uniform(0.5, 1.0)), "value": float(rng.uniform(0.4, 0.9)),
                   "gain": float(rng.uniform(0.6, 1.5))},
        "background": {"palette": random_palette(rng), "roughness": float(rng.uniform(0.45, 0.75)),
                       "level": float(rng.uniform(0.3, 0.85)), "seed": int(rng.integers(0, 2**63))},
        "blur": float(rng.uniform(0.2, 0.6)) if rng.random() < 0.5 else 0.0,
    }


def render_params(p: dict, size: int = 256) -> np.ndarray:
    """Render the picture a parameter dict describes (uint8 HxWx3)."""
    maps = np.asarray(p["maps"], dtype=np.float64)
    cum = np.cumsum(np.asarray(p["probabilities"], dtype=np.float64))
    w = p["window"]
    window = Window(float(w["scale"]), float(w["shift"][0]), float(w["shift"][1]), *(bool(f) for f in p["flips"]))
    dens = chaos_game(maps, cum, int(p["points"]), np.uint64(p["seed"]), BBOX_POINTS, window, size)
    if p["stamp"] is not None:
        stamp = np.asarray(p["stamp"], dtype=np.float32).reshape(3, 3).copy()
        stamp[1, 1] = 1.0
        dens = stamp3(dens, stamp)
    if p["blur"] > 0.0:  # a light blur of the density: what was sharp gets a soft rim
        kernel = np.full((3, 3), p["blur"] / 9.0, np.float32)
        kernel[1, 1] += 1.0 - p["blur"]
        dens = stamp3(dens, kernel)
    col, bgp = p["colour"], p["background"]
    colour = Colour(*(float(v) for v in (col["hue"], col["span"], col["saturation"], col["value"], col["gain"],
                                         bgp["level"])))
    n = 2  # the background is smooth: a grid of half the picture's size, upsampled
    while n < size // 2:
        n *= 2
    field = plasma(n + 1, bgp["roughness"], np.uint64(bgp["seed"]))
    return compose(dens, colour, field, palette_lut(bgp["palette"]))


def render_ifs(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, dict]:
    """Draw and render one IFS picture: (uint8 HxWx3, params that reproduce it)."""
    p = sample_params(rng)
    return render_params(p, size), p
