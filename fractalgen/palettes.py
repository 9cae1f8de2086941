"""Random colour palettes as small lookup tables, described by JSON-able specs so a manifest
entry reproduces the exact colours.

Two kinds: cosine palettes `a + b·cos(2π(c·t + d))` (Inigo Quilez's form) and cyclic gradients
through 3–6 random stops, one of them dark. Both are cyclic in t, so callers may wrap
`freq·t + offset` without a seam.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np

LUT_SIZE = 256


def random_palette(rng: np.random.Generator) -> dict:
    """Draw a palette spec (JSON-able)."""
    if rng.random() < 0.5:
        a = [float(v) for v in rng.uniform(0.2, 0.8, 3)]
        b = [float(v) for v in rng.uniform(0.2, 0.5, 3)]
        # integer frequencies keep the palette cyclic over t in [0, 1)
        c = [float(v) for v in rng.integers(1, 3, 3)]
        d = [float(v) for v in rng.uniform(0.0, 1.0, 3)]
        return {"kind": "cosine", "a": a, "b": b, "c": c, "d": d}
    n = int(rng.integers(3, 7))
    base_hue = float(rng.random())
    stops = []
    for k in range(n):
        hue = (base_hue + float(rng.uniform(0.08, 0.45)) * k + float(rng.uniform(-0.05, 0.05))) % 1.0
        sat = float(rng.uniform(0.45, 1.0))
        val = float(rng.uniform(0.55, 1.0))
        stops.append([float(x) for x in colorsys.hsv_to_rgb(hue, sat, val)])
    dark = int(rng.integers(0, n))
    stops[dark] = [float(v) for v in rng.uniform(0.0, 0.12, 3)]
    # stops at least half an even spacing apart: no hard edge between two close stops
    gaps = rng.dirichlet(np.ones(n)) * 0.5 + 0.5 / n
    pos = [0.0] + [float(p) for p in np.cumsum(gaps)[:-1]]
    return {"kind": "gradient", "stops": stops, "pos": pos}


def palette_lut(spec: dict, n: int = LUT_SIZE) -> np.ndarray:
    """The spec as an [n, 3] float32 table of RGB in [0, 1], sampled at t = i / n."""
    t = np.arange(n, dtype=np.float64) / n
    if spec["kind"] == "cosine":
        # math.cos (the C library), not np.cos: NumPy picks SIMD code by CPU, which may round
        # differently from one machine to the next
        a, b, c, d = (np.asarray(spec[k], dtype=np.float64) for k in ("a", "b", "c", "d"))
        angle = 2.0 * math.pi * (c * t[:, None] + d)  # + and × round the same everywhere
        cos = np.array(list(map(math.cos, angle.ravel().tolist()))).reshape(angle.shape)
        lut = a + b * cos
    elif spec["kind"] == "gradient":
        stops = np.asarray(spec["stops"], dtype=np.float64)
        pos = np.asarray(spec["pos"], dtype=np.float64)
        # close the loop: the first stop again at t = 1
        xp = np.concatenate([pos, [1.0]])
        fp = np.concatenate([stops, stops[:1]], axis=0)
        lut = np.stack([np.interp(t, xp, fp[:, ch]) for ch in range(3)], axis=1)
    else:
        raise ValueError(f"unknown palette kind {spec['kind']!r}")
    return np.ascontiguousarray(np.clip(lut, 0.0, 1.0), dtype=np.float32)
