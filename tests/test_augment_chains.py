"""Chain statistics over many draws, from the draw kernels the chains make their choices with,
and the mix of the chain results, from the views and the weights they leave in the scratch."""

import numpy as np
import pytest

from ipmix_cli.augment import chains as C
from ipmix_cli.augment import policy, resolve_config, rng
from ipmix_cli.augment.ops import TABLES
from tests._augment_helpers import sample_images

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


def _run_views(cfg, n_views, recipe=None, seed=0):
    recipe = cfg.kernel_recipe() if recipe is None else recipe
    x, f = sample_images(21, 2, cfg.image_size)
    S = cfg.image_size
    scratch = C.make_scratch(cfg.width, S)
    out = np.empty((S, S, 3), np.uint8)
    weights, outs = [], []
    for i in range(n_views):
        C.augment_view(x, f, rng.new_state(seed, 0, i, rng.STREAM_VIEW), recipe, TABLES, out, scratch)
        weights.append(scratch.weights.copy())
        outs.append(out.copy())
    return x, np.array(weights), outs


def _streams(n, seed=0):
    return (rng.new_state(seed, 0, i, rng.STREAM_VIEW) for i in range(n))


def _chain_shapes(recipe, n_views):
    """(is P chain, steps) of each of the `width` chains of n_views views."""
    return np.array([[C.draw_chain(st, recipe) for _ in range(recipe.width)] for st in _streams(n_views)])


def test_ipmix_chain_statistics():
    cfg = resolve_config("cifar", "ipmix")
    recipe = cfg.kernel_recipe()
    shapes = _chain_shapes(recipe, 2500).reshape(-1, 2)
    is_p, counts = shapes[:, 0], shapes[:, 1]
    assert abs(is_p.mean() - 0.5) < 0.03
    for m in range(cfg.depth + 1):  # ops per chain uniform in 0..t (the code, not the paper)
        assert abs((counts == m).mean() - 1 / (cfg.depth + 1)) < 0.03
    assert counts.min() == 0 and counts.max() == cfg.depth
    image_ops = [C.draw_op(st, recipe.ops) for st in _streams(6000)]
    ids = sorted(recipe.ops)
    freq = np.bincount(image_ops, minlength=max(ids) + 1)[ids] / len(image_ops)
    assert np.abs(freq - 1 / len(ids)).max() < 0.025
    steps = np.array([C.draw_p_step(st, recipe.patch_sizes, 32) for st in _streams(4000)])
    r0, r1, c0, c1, mix_ops = steps.T
    assert (0 <= r0).all() and (r0 < r1).all() and (r1 <= 32).all()
    assert (0 <= c0).all() and (c0 < c1).all() and (c1 <= 32).all()
    assert set((r1 - r0).tolist()) | set((c1 - c0).tolist()) <= set(range(2, max(cfg.patch_sizes) + 1))
    mix_freq = np.bincount(mix_ops, minlength=4) / len(mix_ops)
    assert np.abs(mix_freq - 0.25).max() < 0.03
    _, weights, _ = _run_views(cfg, 2500)
    w = weights[:, :cfg.width]
    assert (w >= 0).all() and np.allclose(w.sum(axis=1), 1.0, atol=1e-12)
    assert abs(w.mean() - 1 / cfg.width) < 0.02
    m = weights[:, cfg.width]
    assert (m >= 0).all() and (m <= 1).all() and abs(m.mean() - 0.5) < 0.03


def test_paper_ops_per_chain_and_augmix():
    cfg = resolve_config("cifar", "ipmix", min_ops=1)
    assert set(_chain_shapes(cfg.kernel_recipe(), 600)[:, :, 1].ravel()) == {1, 2, 3}
    cfg = resolve_config("cifar", "augmix")
    recipe = cfg.kernel_recipe()
    shapes = _chain_shapes(recipe, 600)
    assert (shapes[:, :, 0] == 0).all()  # image chains only
    assert set(shapes[:, :, 1].ravel()) == {1, 2, 3}
    used = {int(C.draw_op(st, recipe.ops)) for st in _streams(600)}
    assert used == set(cfg.op_ids().tolist()) and policy.row_id("augmix", "autocontrast") in used


def test_zero_skip_weight_returns_the_clean_image():
    cfg = resolve_config("cifar", "ipmix")
    x, _, outs = _run_views(cfg, 50, cfg.kernel_recipe()._replace(skip_a=0.0))  # m = 0
    for out in outs:
        assert np.array_equal(out, x)
    _, _, mixed = _run_views(cfg, 50)  # the same streams with m > 0: the chains did change x
    assert sum(not np.array_equal(out, x) for out in mixed) > 40


def test_identity_chains_and_mixing_formula():
    # depth 0: every chain is the identity, so the output is x for any weights
    cfg = resolve_config("cifar", "ipmix", depth=0)
    x, _, outs = _run_views(cfg, 20)
    for out in outs:
        assert np.array_equal(out, x)
    # one chain: output = round((1 - m) x + m chain)
    cfg = resolve_config("cifar", "augmix", width=1, depth=1, ops="invert")
    x, weights, outs = _run_views(cfg, 20)
    for w, out in zip(weights, outs):
        m = w[1]
        expected = np.clip((1 - m) * x + m * (255 - x.astype(float)) + 0.5, 0, 255).astype(np.uint8)
        assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
        assert (out == expected).mean() > 0.999


def test_views_are_independent_draws():
    cfg = resolve_config("cifar", "ipmix")
    _, w1, o1 = _run_views(cfg, 30, seed=1)
    _, w2, o2 = _run_views(cfg, 30, seed=2)
    assert not np.array_equal(w1, w2)
    assert sum(not np.array_equal(a, b) for a, b in zip(o1, o2)) > 20


def test_wide_mixes_take_the_row_path_with_the_same_arithmetic():
    # up to three used chains are mixed in one fused pass, more row by row: both must be the
    # formula (1 - m) x + sum m w_i chain_i, rounded, whatever the number of chains (every
    # chain here is one invert)
    x = sample_images(21, 1, 32)[0]
    for width in (1, 2, 3, 5, 7):
        cfg = resolve_config("cifar", "augmix", width=width, depth=1, min_ops=1, ops="invert")
        _, weights, outs = _run_views(cfg, 6)
        inv = 255.0 - x.astype(np.float64)
        for w, out in zip(weights, outs):
            m = w[width]
            expected = (1.0 - m) * x + m * w[:width].sum() * inv
            assert np.abs(out.astype(np.float64) - np.clip(expected + 0.5, 0, 255).astype(np.uint8)).max() <= 1
