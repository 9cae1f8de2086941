"""Set quality on 64 pictures per family at 256² (the issue's acceptance numbers)."""

import numpy as np
import pytest

from fractalgen import metrics
from fractalgen.render import render_one

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)

N = 64


@pytest.fixture(scope="module")
def sets():
    return {fam: [render_one(fam, i, seed=2024, size=256)[0] for i in range(N)] for fam in ("escape", "ifs")}


@pytest.mark.parametrize("family,min_mean", [("escape", 0.30), ("ifs", 0.25)])
def test_set_quality(sets, family, min_mean):
    m = metrics.set_metrics(sets[family])
    assert m["count"] == N
    assert m["near_empty_fraction"] <= 0.01
    assert m["mean_pairwise"] >= min_mean
    assert m["min_pairwise"] >= 0.05
    assert m["hue_entropy_bits"] >= 3.8
    assert m["grey_entropy_bits"] >= 4.0
    assert m["edge_density"] > 0.01


def test_metrics_flag_blank_and_duplicate_pictures():
    rng = np.random.default_rng(0)
    flat = np.full((64, 64, 3), 90, np.uint8)
    noisy = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert metrics.is_near_empty(flat)
    assert not metrics.is_near_empty(noisy)
    m = metrics.set_metrics([noisy, noisy.copy(), flat])
    assert m["min_pairwise"] == pytest.approx(0.0, abs=1e-6)
    assert m["near_empty_fraction"] == pytest.approx(1 / 3)


def test_thumbnail_and_distances_match_plain_computations():
    from PIL import Image

    rng = np.random.default_rng(1)
    ims = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(4)]
    t = [metrics.thumbnail(im) for im in ims]
    pil = np.asarray(Image.fromarray(ims[0]).resize((32, 32), Image.BOX), dtype=np.float32) / 255
    np.testing.assert_allclose(t[0], pil, atol=1 / 255 + 1e-6)
    d = metrics.pairwise_distances(np.stack(t))
    brute = [np.sqrt(((t[i] - t[j]) ** 2).mean()) for i in range(4) for j in range(i + 1, 4)]
    np.testing.assert_allclose(d, brute, rtol=1e-6)


def test_hue_histogram_matches_colorsys():
    import colorsys

    rng = np.random.default_rng(2)
    im = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    want = np.zeros(16, int)
    for r, g, b in im.reshape(-1, 3) / 255.0:
        h, s, v = colorsys.rgb_to_hsv(r, g, b)
        if s >= metrics.MIN_SATURATION and v >= metrics.MIN_VALUE and max(r, g, b) > min(r, g, b):
            want[min(int(h * 16), 15)] += 1
    assert np.array_equal(metrics.hue_histogram(im), want)
