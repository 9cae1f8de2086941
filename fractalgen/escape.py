"""Escape-time fractals (Mandelbrot and Julia sets of z ← z² + c) coloured by smooth iteration
count and orbit traps.

Plan per picture: draw parameters near the Mandelbrot boundary (so almost nothing is blank);
look at a 48×48 preview and redraw if it is mostly interior, mostly flat, featureless, too slow
or, once coloured, dull; render at full size; normalise the fields by their own percentiles;
colour through random palettes; supersample only the pixels whose colour jumps against a
neighbour (aliasing); a final check on grey-level entropy, contrast and the dominant colour.

Kernels (Numba, cached on disk) are at the top; the Python that plans the work below them.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import njit

from fractalgen.palettes import palette_lut, random_palette

MAX_ITER = 256
BAILOUT2 = 256.0 * 256.0
PREVIEW = 48
TRAPS = ("point", "line", "cross", "circle")

# What the kernels need to iterate the orbit of a pixel (picture_view makes it): the plane point
# of pixel (u, w) is origin + u * (ax, ay) + w * (bx, by); Julia sets iterate it with c fixed,
# Mandelbrot sets start at 0 with c = the point; the orbit trap is TRAPS[trap] with parameters
# (t0, t1, t2). Passed by value, so the fields stay in registers in the pixel loops.
View = namedtuple("View", ["ox", "oy", "ax", "ay", "bx", "by", "julia", "cx", "cy", "max_iter",
                           "trap", "t0", "t1", "t2"])
# The colouring of one picture (picture_colouring makes it): the 2nd-98th percentile range of
# log(smooth + 1), of the exterior's and of the interior's log trap distance, as (lo, 1 / span),
# and how much of the exterior colour comes from the trap.
Colouring = namedtuple("Colouring", ["lo_s", "inv_s", "lo_te", "inv_te", "lo_ti", "inv_ti", "trap_mix"])
# preview rejection thresholds
MAX_INTERIOR = 0.6
MAX_FLAT = 0.7
MIN_SPREAD = 0.5  # iterations between the 10th and 90th percentile of the smooth count
MAX_MEAN_ITER = 45.0
# final check
MIN_GREY_ENTROPY = 4.0
MIN_GREY_STD = 16.0
MAX_DOMINANT = 0.5
MAX_ATTEMPTS = 64
SUPERSAMPLE_EDGE = 0.3
SUPERSAMPLE_MAX = 0.03


# --------------------------------------------------------------------------- kernels


@njit(cache=True, inline="always")
def _orbit(zx, zy, cx, cy, v):
    """Iterate one point with View `v`'s iteration limit and trap. Returns (smooth count or -1
    if it never escaped, trap distance, iterations spent). Interior orbits stop early once they
    repeat (Brent's cycle check)."""
    max_iter, kind = v.max_iter, v.trap
    trap = 1e300
    sx = zx
    sy = zy
    lam = 8
    k = 0
    for n in range(max_iter):
        x2 = zx * zx
        y2 = zy * zy
        if x2 + y2 > BAILOUT2:
            smooth = n + 1.0 - math.log(0.5 * math.log(x2 + y2)) / math.log(2.0)
            if smooth < 0.0:
                smooth = 0.0
            if kind == 0:
                trap = math.sqrt(trap)
            return smooth, trap, n + 1
        zy = 2.0 * zx * zy + cy
        zx = x2 - y2 + cx
        d = _trap_distance(zx, zy, v)
        if d < trap:
            trap = d
        if abs(zx - sx) < 1e-10 and abs(zy - sy) < 1e-10:
            if kind == 0:
                trap = math.sqrt(trap)
            return -1.0, trap, n + 1
        k += 1
        if k == lam:
            sx = zx
            sy = zy
            k = 0
            lam *= 2
    if kind == 0:
        trap = math.sqrt(trap)
    return -1.0, trap, max_iter


@njit(cache=True, inline="always")
def _trap_distance(zx, zy, v):
    """Distance from z to View `v`'s orbit trap (squared for the point trap)."""
    kind, p0, p1, p2 = v.trap, v.t0, v.t1, v.t2
    if kind == 0:  # point, squared until the end
        dx = zx - p0
        dy = zy - p1
        return dx * dx + dy * dy
    if kind == 1:  # line a·x + b·y + c with (a, b) a unit normal
        return abs(p0 * zx + p1 * zy + p2)
    if kind == 2:  # cross through (p0, p1)
        return min(abs(zx - p0), abs(zy - p1))
    dx = zx - p0  # circle of radius p2 around (p0, p1)
    dy = zy - p1
    return abs(math.sqrt(dx * dx + dy * dy) - p2)


@njit(cache=True, inline="always")
def _orbit2(ax, ay, acx, acy, bx, by, bcx, bcy, v):
    """`_orbit` for two points at once, A and B, in one loop. z ← z² + c is a chain of
    dependent multiplies, so one orbit leaves the core idle between them; two independent
    orbits interleaved nearly double the throughput. Each lane's arithmetic is exactly
    `_orbit`'s, so results are identical."""
    max_iter = v.max_iter
    ta = 1e300
    tb = 1e300
    asx = ax
    asy = ay
    bsx = bx
    bsy = by
    alam = 8
    blam = 8
    ak = 0
    bk = 0
    sa = -1.0
    sb = -1.0
    na = max_iter
    nb = max_iter
    alive_a = True
    alive_b = True
    for n in range(max_iter):
        if alive_a:
            x2 = ax * ax
            y2 = ay * ay
            if x2 + y2 > BAILOUT2:
                sa = max(n + 1.0 - math.log(0.5 * math.log(x2 + y2)) / math.log(2.0), 0.0)
                na = n + 1
                alive_a = False
            else:
                ay = 2.0 * ax * ay + acy
                ax = x2 - y2 + acx
                d = _trap_distance(ax, ay, v)
                if d < ta:
                    ta = d
                if abs(ax - asx) < 1e-10 and abs(ay - asy) < 1e-10:
                    na = n + 1
                    alive_a = False
                else:
                    ak += 1
                    if ak == alam:
                        asx = ax
                        asy = ay
                        ak = 0
                        alam *= 2
        if alive_b:
            x2 = bx * bx
            y2 = by * by
            if x2 + y2 > BAILOUT2:
                sb = max(n + 1.0 - math.log(0.5 * math.log(x2 + y2)) / math.log(2.0), 0.0)
                nb = n + 1
                alive_b = False
            else:
                by = 2.0 * bx * by + bcy
                bx = x2 - y2 + bcx
                d = _trap_distance(bx, by, v)
                if d < tb:
                    tb = d
                if abs(bx - bsx) < 1e-10 and abs(by - bsy) < 1e-10:
                    nb = n + 1
                    alive_b = False
                else:
                    bk += 1
                    if bk == blam:
                        bsx = bx
                        bsy = by
                        bk = 0
                        blam *= 2
        if not alive_a and not alive_b:
            break
    if v.trap == 0:
        ta = math.sqrt(ta)
        tb = math.sqrt(tb)
    return sa, ta, na, sb, tb, nb


@njit(cache=True, inline="always")
def _sample2(v, ua, wa, ub, wb):
    """`_sample` for two image positions at once."""
    xa = v.ox + ua * v.ax + wa * v.bx
    ya = v.oy + ua * v.ay + wa * v.by
    xb = v.ox + ub * v.ax + wb * v.bx
    yb = v.oy + ub * v.ay + wb * v.by
    if v.julia:
        return _orbit2(xa, ya, v.cx, v.cy, xb, yb, v.cx, v.cy, v)
    return _orbit2(0.0, 0.0, xa, ya, 0.0, 0.0, xb, yb, v)


@njit(cache=True, inline="always")
def _sample(v, u, w):
    """The orbit of image position (u, w) (pixel units, centres at +0.5) in View `v`."""
    x = v.ox + u * v.ax + w * v.bx
    y = v.oy + u * v.ay + w * v.by
    if v.julia:  # Julia: z0 = point, c fixed
        return _orbit(x, y, v.cx, v.cy, v)
    return _orbit(0.0, 0.0, x, y, v)


@njit(cache=True)
def escape_fields(v, h, w):
    """Smooth count (−1 inside) and trap distance for every pixel centre of View `v`; total
    iterations."""
    smooth = np.empty((h, w), np.float32)
    trap = np.empty((h, w), np.float32)
    total = 0
    for r in range(h):
        c = 0
        while c + 1 < w:
            sa, ta, na, sb, tb, nb = _sample2(v, c + 0.5, r + 0.5, c + 1.5, r + 0.5)
            smooth[r, c] = sa
            trap[r, c] = ta
            smooth[r, c + 1] = sb
            trap[r, c + 1] = tb
            total += na + nb
            c += 2
        if c < w:
            s, t, n = _sample(v, c + 0.5, r + 0.5)
            smooth[r, c] = s
            trap[r, c] = t
            total += n
    return smooth, trap, total


@njit(cache=True)
def escape_counts(cx, cy, max_iter):
    """Mandelbrot escape iteration of each c (max_iter if it never escaped)."""
    out = np.empty(cx.shape[0], np.int64)
    for i in range(cx.shape[0]):
        zx = 0.0
        zy = 0.0
        n = 0
        while n < max_iter:
            x2 = zx * zx
            y2 = zy * zy
            if x2 + y2 > 4.0:
                break
            zy = 2.0 * zx * zy + cy[i]
            zx = x2 - y2 + cx[i]
            n += 1
        out[i] = n
    return out


@njit(cache=True, inline="always")
def _lookup(lut, f, off, n):
    """Linear interpolation in rows off..off+n of a colour table, at f in [0, 1] (clamped)."""
    f = min(max(f, 0.0), 1.0)
    u = f * n
    i0 = min(int(u), n - 1)
    a = u - i0
    j = i0 + off
    return (lut[j, 0] * (1.0 - a) + lut[j + 1, 0] * a,
            lut[j, 1] * (1.0 - a) + lut[j + 1, 1] * a,
            lut[j, 2] * (1.0 - a) + lut[j + 1, 2] * a)


@njit(cache=True, inline="always")
def _shade(s, t, k, lut, n):
    """Colour of one sample under Colouring `k`; `lut` holds the exterior table (rows 0..n)
    then the interior one. Both colours' inputs are computed and one is selected, without a
    branch (for s = −1, log(0) = −inf clamps to 0 harmlessly)."""
    lt = math.log(t + np.float32(1e-12))
    a = min(max((math.log(s + np.float32(1.0)) - k.lo_s) * k.inv_s, 0.0), 1.0)
    b = min(max((lt - k.lo_te) * k.inv_te, 0.0), 1.0)
    outside = (1.0 - k.trap_mix) * a + k.trap_mix * b
    inside = (lt - k.lo_ti) * k.inv_ti
    interior = s < 0.0
    return _lookup(lut, inside if interior else outside, (n + 1) if interior else 0, n)


@njit(cache=True)
def shade_image(smooth, trap, v, k, lut, edge, max_frac):
    """Colour every pixel as Colouring `k` says, then supersample where the picture would alias
    (View `v` gives the sub-pixel orbits): pixels whose colour jumps by more than `edge` against
    a neighbour get four extra sub-pixel orbits averaged in.
    At most `max_frac` of the pixels (the jumpiest) are supersampled, which bounds the cost.
    Returns (uint8 RGB, supersampled pixels, grey-level entropy in bits, share of the most
    common 4-bit-quantised colour, grey-level standard deviation)."""
    h, w = smooth.shape
    n = lut.shape[0] // 2 - 1
    base = np.empty((h, w, 3), np.float32)
    for r in range(h):
        for c in range(w):
            cr, cg, cb = _shade(smooth[r, c], trap[r, c], k, lut, n)
            base[r, c, 0] = cr
            base[r, c, 1] = cg
            base[r, c, 2] = cb
    # largest colour jump against a 4-neighbour; each pair is compared once
    jumps = np.zeros((h, w), np.float32)
    for r in range(h):
        for c in range(w):
            if c + 1 < w:
                d = (abs(base[r, c, 0] - base[r, c + 1, 0]) + abs(base[r, c, 1] - base[r, c + 1, 1])
                     + abs(base[r, c, 2] - base[r, c + 1, 2]))
                if d > jumps[r, c]:
                    jumps[r, c] = d
                if d > jumps[r, c + 1]:
                    jumps[r, c + 1] = d
            if r + 1 < h:
                d = (abs(base[r, c, 0] - base[r + 1, c, 0]) + abs(base[r, c, 1] - base[r + 1, c, 1])
                     + abs(base[r, c, 2] - base[r + 1, c, 2]))
                if d > jumps[r, c]:
                    jumps[r, c] = d
                if d > jumps[r + 1, c]:
                    jumps[r + 1, c] = d
    nbins = 512
    hist = np.zeros(nbins, np.int64)
    for r in range(h):
        for c in range(w):
            hist[min(nbins - 1, int(jumps[r, c] * (nbins / 3.0)))] += 1
    # raise the threshold until at most max_frac of the pixels are above it
    budget = int(max_frac * h * w)
    above = 0
    cut = edge
    for b in range(nbins - 1, -1, -1):
        if above + hist[b] > budget:
            cut = max(edge, (b + 1) * (3.0 / nbins))
            break
        above += hist[b]
    out = np.empty((h, w, 3), np.uint8)
    n_super = 0
    grey_hist = np.zeros(256, np.int64)
    code_hist = np.zeros(4096, np.int64)
    for r in range(h):
        for c in range(w):
            sr = base[r, c, 0]
            sg = base[r, c, 1]
            sb = base[r, c, 2]
            if edge > 0.0 and jumps[r, c] > cut:
                n_super += 1
                for dv in (-0.25, 0.25):
                    s1, t1, n1, s2, t2, n2 = _sample2(v, c + 0.25, r + 0.5 + dv, c + 0.75, r + 0.5 + dv)
                    qr, qg, qb = _shade(np.float32(s1), np.float32(t1), k, lut, n)
                    sr += qr
                    sg += qg
                    sb += qb
                    qr, qg, qb = _shade(np.float32(s2), np.float32(t2), k, lut, n)
                    sr += qr
                    sg += qg
                    sb += qb
                sr /= 5.0
                sg /= 5.0
                sb /= 5.0
            vr = int(min(255.0, sr * 255.0 + 0.5))
            vg = int(min(255.0, sg * 255.0 + 0.5))
            vb = int(min(255.0, sb * 255.0 + 0.5))
            out[r, c, 0] = vr
            out[r, c, 1] = vg
            out[r, c, 2] = vb
            grey_hist[(vr * 77 + vg * 150 + vb * 29) >> 8] += 1
            code_hist[((vr >> 4) << 8) | ((vg >> 4) << 4) | (vb >> 4)] += 1
    entropy = 0.0
    mean = 0.0
    square = 0.0
    for g in range(256):
        if grey_hist[g] > 0:
            q = grey_hist[g] / (h * w)
            entropy -= q * math.log2(q)
            mean += q * g
            square += q * g * g
    dominant = code_hist.max() / (h * w)
    return out, n_super, entropy, dominant, math.sqrt(max(square - mean * mean, 0.0))


# --------------------------------------------------------------------------- planning


def _log_uniform(rng, lo, hi):
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sample_boundary_c(rng: np.random.Generator, lo: int, max_iter: int = MAX_ITER) -> tuple[float, float]:
    """A c just outside the Mandelbrot set: its escape count lies in [lo, max_iter)."""
    while True:
        cx = rng.uniform(-2.1, 0.6, 64)
        cy = rng.uniform(-1.2, 1.2, 64)
        n = escape_counts(cx, cy, max_iter)
        ok = np.flatnonzero((n >= lo) & (n < max_iter))
        if ok.size:
            return float(cx[ok[0]]), float(cy[ok[0]])


def sample_params(rng: np.random.Generator) -> dict:
    """Draw one candidate picture's parameters (JSON-able)."""
    kind = "julia" if rng.random() < 0.5 else "mandelbrot"
    lo = int(rng.integers(8, 41))
    c = sample_boundary_c(rng, lo)
    if kind == "mandelbrot":
        centre = c
        width = _log_uniform(rng, 0.002, 1.2)
    else:
        centre = (float(rng.uniform(-0.4, 0.4)), float(rng.uniform(-0.4, 0.4)))
        width = _log_uniform(rng, 0.5, 3.2)
    trap = TRAPS[int(rng.integers(0, 4))]
    if trap == "point":
        tp = [float(v) for v in rng.uniform(-1.0, 1.0, 2)] + [0.0]
    elif trap == "line":
        phi = float(rng.uniform(0.0, math.pi))
        tp = [math.cos(phi), math.sin(phi), float(rng.uniform(-0.8, 0.8))]
    elif trap == "cross":
        tp = [float(v) for v in rng.uniform(-0.8, 0.8, 2)] + [0.0]
    else:
        tp = [float(v) for v in rng.uniform(-0.5, 0.5, 2)] + [float(rng.uniform(0.2, 1.0))]
    return {
        "kind": kind,
        "c": [c[0], c[1]],
        "lo": lo,
        "centre": [centre[0], centre[1]],
        "width": width,
        "rotation": float(rng.uniform(0.0, 2.0 * math.pi)),
        "max_iter": MAX_ITER,
        "trap": trap,
        "trap_params": tp,
        "exterior": {"palette": random_palette(rng), "freq": float(rng.uniform(0.6, 3.0)),
                     "offset": float(rng.random()), "gamma": _log_uniform(rng, 0.6, 1.6),
                     "trap_mix": float(rng.uniform(0.0, 0.8))},
        "interior": {"palette": random_palette(rng), "freq": float(rng.uniform(0.6, 2.5)),
                     "offset": float(rng.random()), "gamma": _log_uniform(rng, 0.6, 1.6)},
    }


def picture_view(p: dict, size: int) -> View:
    """The View of a picture at size × size: pixel (u, v) → plane: origin + u·(ax, ay) + v·(bx, by),
    rotated and centred."""
    step = p["width"] / size
    ca, sa = math.cos(p["rotation"]), math.sin(p["rotation"])
    ax, ay = step * ca, step * sa
    bx, by = -step * sa, step * ca
    half = size / 2.0
    ox = p["centre"][0] - half * ax - half * bx
    oy = p["centre"][1] - half * ay - half * by
    tp = [float(t) for t in p["trap_params"]]
    return View(ox, oy, ax, ay, bx, by, p["kind"] == "julia", float(p["c"][0]), float(p["c"][1]),
                int(p["max_iter"]), TRAPS.index(p["trap"]), tp[0], tp[1], tp[2])


def colour_tables(p: dict) -> np.ndarray:
    """Exterior then interior colour table, one array (the layout shade_image expects)."""
    return np.concatenate([colour_table(p["exterior"]), colour_table(p["interior"])])


def preview_verdict(p: dict) -> tuple[str | None, np.ndarray | None]:
    """(why a 48×48 preview says the picture would be poor or slow, or None if it looks fine;
    the colour tables if it got as far as colouring). The preview is coloured, so the final
    check on the full picture rarely fails (a failure there costs a whole second render)."""
    view = picture_view(p, PREVIEW)
    smooth, trap, total = escape_fields(view, PREVIEW, PREVIEW)
    inside = smooth < 0
    if inside.mean() > MAX_INTERIOR:
        return "interior", None
    ext = smooth[~inside]
    if (ext < 2.5).mean() * (ext.size / smooth.size) > MAX_FLAT:
        return "flat", None
    if ext.size < 16 or np.subtract(*np.percentile(ext, (90.0, 10.0), method="lower")) < MIN_SPREAD:
        return "featureless", None
    if total / smooth.size > MAX_MEAN_ITER:
        return "slow", None
    lut = colour_tables(p)
    colouring = picture_colouring(p, smooth, trap)
    _, _, entropy, dominant, grey_std = shade_image(smooth, trap, view, colouring, lut, 0.0, 0.0)
    why = final_verdict(entropy, dominant, grey_std)
    return (None if why is None else f"preview-{why}"), lut


def _log_norm(values: np.ndarray, offset: float) -> tuple[float, float]:
    """(lo, 1 / (hi − lo)) of log(values + offset) between its 2nd and 98th percentiles.
    Order statistics commute with log, so the percentiles are taken on the raw values and only
    two logs are computed (math.log: the same bits on every machine, unlike NumPy's SIMD)."""
    if values.size < 16:
        return 0.0, 1.0
    p2, p98 = np.percentile(values, (2.0, 98.0), method="lower")
    lo, hi = math.log(float(p2) + offset), math.log(float(p98) + offset)
    return lo, 1.0 / max(hi - lo, 1e-6)


def picture_colouring(p: dict, smooth: np.ndarray, trap: np.ndarray) -> Colouring:
    """Per-image normalisation (2nd–98th percentiles, exterior and interior apart) + colour knobs."""
    s, t = smooth[::3, ::3].ravel(), trap[::3, ::3].ravel()
    ext = s >= 0
    lo_s, inv_s = _log_norm(s[ext], 1.0)
    lo_te, inv_te = _log_norm(t[ext], 1e-12)
    lo_ti, inv_ti = _log_norm(t[~ext], 1e-12)
    return Colouring(lo_s, inv_s, lo_te, inv_te, lo_ti, inv_ti, float(p["exterior"]["trap_mix"]))


def colour_table(spec: dict, n: int = 1024) -> np.ndarray:
    """Palette composed with gamma, frequency and offset: a table indexed by the field in [0, 1]."""
    lut = palette_lut(spec["palette"])
    g = spec["gamma"]  # Python's pow (C library), not NumPy's CPU-dependent SIMD power
    f = np.array([x ** g for x in np.linspace(0.0, 1.0, n).tolist()]) * spec["freq"] + spec["offset"]
    u = (f - np.floor(f)) * lut.shape[0]
    i0 = np.minimum(u.astype(np.int64), lut.shape[0] - 1)
    a = (u - i0)[:, None]
    i1 = (i0 + 1) % lut.shape[0]
    return np.ascontiguousarray(lut[i0] * (1.0 - a) + lut[i1] * a, dtype=np.float32)


def final_verdict(entropy: float, dominant: float, grey_std: float) -> str | None:
    """Grey-level entropy ≥ 4 bits, grey levels that vary, and no 4-bit-quantised colour over
    half the pixels."""
    if entropy < MIN_GREY_ENTROPY:
        return "low-entropy"
    if grey_std < MIN_GREY_STD:
        return "low-contrast"
    if dominant > MAX_DOMINANT:
        return "one-colour"
    return None


def _render(p: dict, size: int, lut: np.ndarray | None = None):
    view = picture_view(p, size)
    smooth, trap, _ = escape_fields(view, size, size)
    colouring = picture_colouring(p, smooth, trap)
    lut = colour_tables(p) if lut is None else lut
    return shade_image(smooth, trap, view, colouring, lut, SUPERSAMPLE_EDGE, SUPERSAMPLE_MAX)


def render_params(p: dict, size: int = 256) -> np.ndarray:
    """Render the picture a parameter dict describes (uint8 HxWx3)."""
    return _render(p, size)[0]


def render_escape(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, dict]:
    """Draw, check and render one escape-time picture. Returns (uint8 HxWx3, params); params
    reproduce the picture with `render_params` and note how many draws were rejected why."""
    rejected: dict[str, int] = {}
    result = params = None
    for _ in range(MAX_ATTEMPTS):
        params = sample_params(rng)
        why, lut = preview_verdict(params)
        if why is None:
            result = _render(params, size, lut)
            why = final_verdict(result[2], result[3], result[4])
            if why is None:
                break
        rejected[why] = rejected.get(why, 0) + 1
    if result is None:  # every draw failed the preview: keep the last one rather than nothing
        result = _render(params, size)
    return result[0], {**params, "rejected": rejected, "supersampled_pixels": int(result[1])}
