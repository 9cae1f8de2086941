"""The Numba kernels against straightforward NumPy/Python versions of the same maths, and the
guarantees the samplers make (contractive maps, boundary constants)."""

import math

import numpy as np
import pytest

from fractalgen import escape, ifs, metrics, palettes
from fractalgen.render import render_from_params, render_one

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


def _orbit_reference(z, c, max_iter, kind, p):
    """Plain NumPy escape-time iteration of many points at once (no cycle check)."""
    z = z.astype(np.complex128).copy()
    c = np.broadcast_to(c, z.shape).astype(np.complex128)
    smooth = np.full(z.shape, -1.0)
    trap = np.full(z.shape, np.inf)
    alive = np.ones(z.shape, bool)
    for n in range(max_iter):
        mag2 = (z.real ** 2 + z.imag ** 2)
        out = alive & (mag2 > escape.BAILOUT2)
        smooth[out] = n + 1.0 - np.log(0.5 * np.log(mag2[out])) / math.log(2.0)
        alive &= ~out
        z = np.where(alive, z * z + c, z)
        x, y = z.real, z.imag
        if kind == 0:
            d = np.hypot(x - p[0], y - p[1])
        elif kind == 1:
            d = np.abs(p[0] * x + p[1] * y + p[2])
        elif kind == 2:
            d = np.minimum(np.abs(x - p[0]), np.abs(y - p[1]))
        else:
            d = np.abs(np.hypot(x - p[0], y - p[1]) - p[2])
        trap = np.where(alive, np.minimum(trap, d), trap)
    return np.maximum(smooth, 0.0, where=smooth >= 0, out=smooth.copy()), trap


@pytest.mark.parametrize("kind", [0, 1, 2, 3])
@pytest.mark.parametrize("julia", [False, True])
def test_escape_fields_match_numpy(kind, julia):
    rng = np.random.default_rng(kind + 10 * julia)
    p = escape.sample_params(rng)
    p["kind"] = "julia" if julia else "mandelbrot"
    p["trap"] = escape.TRAPS[kind]
    if not julia:
        p["centre"], p["width"] = [-0.6, 0.1], 3.0
    size = 24
    view = escape.picture_view(p, size)
    assert view.julia == julia and escape.TRAPS[view.trap] == p["trap"]
    smooth, trap, _ = escape.escape_fields(view, size, size)
    v, u = np.mgrid[0:size, 0:size] + 0.5
    pts = (view.ox + u * view.ax + v * view.bx) + 1j * (view.oy + u * view.ay + v * view.by)
    trap_params = (view.t0, view.t1, view.t2)
    if julia:
        ref_s, ref_t = _orbit_reference(pts, complex(view.cx, view.cy), escape.MAX_ITER, kind, trap_params)
    else:
        ref_s, ref_t = _orbit_reference(np.zeros_like(pts), pts, escape.MAX_ITER, kind, trap_params)
    escaped = smooth >= 0
    # Orbits near the boundary are chaotic: NumPy's complex product rounds differently from
    # the kernel's (x² − y², 2xy), so a few pixels may drift; nearly all must agree closely.
    # Interior orbits stop early on a detected cycle, so their trap agrees more loosely.
    assert (escaped == (ref_s >= 0)).mean() >= 0.99
    both = escaped & (ref_s >= 0)
    assert np.isclose(smooth[both], ref_s[both], rtol=1e-5, atol=1e-4).mean() >= 0.98
    assert np.isclose(trap[both], ref_t[both], rtol=1e-5, atol=1e-6).mean() >= 0.98
    inner = ~escaped & (ref_s < 0)
    if not julia:  # the whole set is in view: interior pixels exist
        assert inner.sum() > 20
        assert np.isclose(trap[inner], ref_t[inner], rtol=1e-3, atol=1e-4).mean() >= 0.98


def test_boundary_sampling_lands_just_outside_the_set():
    rng = np.random.default_rng(1)
    for _ in range(200):
        lo = int(rng.integers(8, 41))
        cx, cy = escape.sample_boundary_c(rng, lo)
        z, c, n = 0j, complex(cx, cy), 0
        while abs(z) <= 2.0 and n < escape.MAX_ITER:
            z = z * z + c
            n += 1
        assert lo <= n < escape.MAX_ITER


def test_colour_table_is_the_palette_composed_with_gamma_freq_offset():
    spec = {"palette": palettes.random_palette(np.random.default_rng(3)), "gamma": 1.3, "freq": 2.2, "offset": 0.4}
    table = escape.colour_table(spec, n=64)
    lut = palettes.palette_lut(spec["palette"])
    for i in (0, 17, 40, 63):
        u = ((i / 63) ** 1.3 * 2.2 + 0.4) % 1.0 * lut.shape[0]
        j = int(u) % lut.shape[0]
        expect = lut[j] * (1 - (u - int(u))) + lut[(j + 1) % lut.shape[0]] * (u - int(u))
        np.testing.assert_allclose(table[i], expect, atol=1e-5)


def test_palettes_are_cyclic_and_in_range():
    rng = np.random.default_rng(0)
    for _ in range(50):
        spec = palettes.random_palette(rng)
        lut = palettes.palette_lut(spec, 512)
        assert lut.min() >= 0 and lut.max() <= 1
        steps = np.abs(np.diff(lut, axis=0)).max()
        assert np.abs(lut[0] - lut[-1]).max() <= steps + 1e-6  # no seam where t wraps


def test_every_ifs_system_is_contractive_and_in_the_sigma_band():
    rng = np.random.default_rng(2024)
    for _ in range(2000):
        p = ifs.sample_params(rng)
        n = len(p["maps"])
        assert 2 <= n <= 4
        total = 0.0
        for a, b, c, d, _, _ in p["maps"]:
            s = np.linalg.svd(np.array([[a, b], [c, d]]), compute_uv=False)
            assert s[0] < 1.0 and s[1] >= 0.0
            total += s[0] + 2 * s[1]
        assert (5 + n) / 2 - 1e-9 <= total <= (6 + n) / 2 + 1e-9
        assert abs(total - p["sigma_factor"]) < 1e-9
        dets = np.array([abs(a * d - b * c) for a, b, c, d, _, _ in p["maps"]]) + 1e-3
        np.testing.assert_allclose(p["probabilities"], dets / dets.sum(), rtol=1e-9)


def test_chaos_game_never_diverges():
    rng = np.random.default_rng(7)
    view = ifs.Window(1.0, 0.0, 0.0, False, False, False)
    for _ in range(300):
        p = ifs.sample_params(rng)
        maps = np.asarray(p["maps"])
        cum = np.cumsum(p["probabilities"])
        hist = ifs.chaos_game(maps, cum, 20_000, np.uint64(p["seed"]), 2048, view, 32)
        assert np.isfinite(hist).all()
        assert 0 < hist.sum() <= 20_000


def _splitmix(state):
    mask = (1 << 64) - 1
    state = (state + 0x9E3779B97F4A7C15) & mask
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    z ^= z >> 31
    return state, (z >> 11) / 2.0 ** 53


def _chaos_reference(maps, cum, npts, seed, bbox_points, view, size):
    """The chaos game in plain Python, step by step."""
    a, b, c, d, e, f = maps[0]
    det = (1 - a) * (1 - d) - b * c
    fx, fy = ((1 - d) * e + b * f) / det, (c * e + (1 - a) * f) / det

    def run(n, state):
        x, y = fx, fy
        for _ in range(n):
            state, u = _splitmix(state)
            k = int(np.searchsorted(cum[:-1], u, side="right"))
            m = maps[k]
            x, y = m[0] * x + m[1] * y + m[4], m[2] * x + m[3] * y + m[5]
            yield x, y

    pts = np.array(list(run(bbox_points, seed ^ 0x5DEECE66D)))
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    x0, x1, y0, y1 = min(x0, fx), max(x1, fx), min(y0, fy), max(y1, fy)
    side = max(x1 - x0, y1 - y0) * view[0]
    wx = 0.5 * (x0 + x1) + view[1] * side - 0.5 * side
    wy = 0.5 * (y0 + y1) + view[2] * side - 0.5 * side
    hist = np.zeros((size, size))
    for x, y in run(npts, seed):
        u, v = (x - wx) * size / side, (y - wy) * size / side
        if 0 <= u < size and 0 <= v < size:
            px, py = int(u), int(v)
            if view[3]:
                px = size - 1 - px
            if view[4]:
                py = size - 1 - py
            if view[5]:
                px, py = py, px
            hist[py, px] += 1
    return hist


def test_chaos_game_matches_a_plain_python_version():
    rng = np.random.default_rng(11)
    for flips in ([0, 0, 0], [1, 0, 1], [0, 1, 0]):
        p = ifs.sample_params(rng)
        maps, cum = np.asarray(p["maps"]), np.cumsum(p["probabilities"])
        view = ifs.Window(0.9, 0.05, -0.1, *(bool(f) for f in flips))
        got = ifs.chaos_game(maps, cum, 3000, np.uint64(p["seed"]), 500, view, 40)
        want = _chaos_reference(p["maps"], cum, 3000, p["seed"], 500, view, 40)
        assert np.array_equal(got, want)


def test_stamp_is_a_3x3_convolution():
    rng = np.random.default_rng(5)
    hist = (rng.random((20, 20)) < 0.2) * rng.integers(1, 5, (20, 20))
    stamp = rng.random((3, 3)).astype(np.float32)
    got = ifs.stamp3(hist.astype(np.float32), stamp)
    padded = np.pad(hist.astype(np.float64), 1)
    want = np.zeros((20, 20))
    for dr in range(3):
        for dc in range(3):
            # each point spreads stamp[dr, dc] to the pixel at offset (dr-1, dc-1)
            want += stamp[dr, dc] * padded[2 - dr:22 - dr, 2 - dc:22 - dc]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_plasma_is_deterministic_normalised_and_rough():
    a = ifs.plasma(65, 0.6, np.uint64(9))
    assert np.array_equal(a, ifs.plasma(65, 0.6, np.uint64(9)))
    assert not np.array_equal(a, ifs.plasma(65, 0.6, np.uint64(10)))
    assert a.min() == 0.0 and a.max() == pytest.approx(1.0)
    assert a.std() > 0.05


@pytest.mark.parametrize("family", ["escape", "ifs"])
def test_parameters_in_the_manifest_reproduce_the_picture(family):
    import json

    rgb, params = render_one(family, 3, seed=5, size=64)
    again = render_from_params(family, json.loads(json.dumps(params)), size=64)
    assert np.array_equal(rgb, again)
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3)


def test_escape_final_check_numbers_match_numpy():
    rng = np.random.default_rng(4)
    p = escape.sample_params(rng)
    rgb, _, entropy, dominant, grey_std = escape._render(p, 64)
    g = ((rgb[..., 0].astype(int) * 77 + rgb[..., 1].astype(int) * 150 + rgb[..., 2].astype(int) * 29) >> 8)
    assert entropy == pytest.approx(metrics.entropy_bits(np.bincount(g.ravel(), minlength=256)))
    assert dominant == pytest.approx(metrics.dominant_fraction(rgb))
    assert grey_std == pytest.approx(g.std())
