"""Chain statistics over many draws, read from the kernel's own trace."""

import numpy as np
import pytest

from ipmix_cli.augment import chains as C
from ipmix_cli.augment import policy, resolve_config, rng
from ipmix_cli.augment.ops import ROTATION_TABLE
from tests._augment_helpers import sample_images

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


def _run_views(cfg, n_views, prm=None, seed=0):
    prm = cfg.kernel_params() if prm is None else prm
    x, f = sample_images(21, 2, cfg.image_size)
    S = cfg.image_size
    k, t = cfg.width, cfg.depth
    bufs = np.empty((C.scratch_images(cfg.width), S, S, 3), np.uint8)
    acc = np.empty((S, S, 3))
    out = np.empty((S, S, 3), np.uint8)
    traces, weights, outs = [], [], []
    for i in range(n_views):
        w = np.empty(k + 1)
        trace = np.full((k, 2 + t), -1, np.int64)
        C.augment_view(x, f, rng.new_state(seed, 0, i, rng.STREAM_VIEW), prm, cfg.op_ids(),
                       cfg.patch_array(), ROTATION_TABLE, out, bufs, acc, w, trace)
        traces.append(trace)
        weights.append(w)
        outs.append(out.copy())
    return x, np.array(traces), np.array(weights), outs


def test_ipmix_chain_statistics():
    cfg = resolve_config("cifar", "ipmix")
    n = 2500
    _, traces, weights, _ = _run_views(cfg, n)
    is_p = traces[:, :, 0].ravel()
    counts = traces[:, :, 1].ravel()
    assert abs(is_p.mean() - 0.5) < 0.03
    for m in range(cfg.depth + 1):  # ops per chain uniform in 0..t (the code, not the paper)
        assert abs((counts == m).mean() - 1 / (cfg.depth + 1)) < 0.03
    assert counts.min() == 0 and counts.max() == cfg.depth
    image_ops, mix_ops = [], []
    for tr in traces.reshape(-1, 2 + cfg.depth):
        (mix_ops if tr[0] else image_ops).extend(tr[2:2 + tr[1]])
    ids = sorted(cfg.op_ids())
    freq = np.bincount(image_ops, minlength=max(ids) + 1)[ids] / len(image_ops)
    assert np.abs(freq - 1 / len(ids)).max() < 0.025
    mix_freq = np.bincount(mix_ops, minlength=4) / len(mix_ops)
    assert np.abs(mix_freq - 0.25).max() < 0.03
    w = weights[:, :cfg.width]
    assert (w >= 0).all() and np.allclose(w.sum(axis=1), 1.0, atol=1e-12)
    assert abs(w.mean() - 1 / cfg.width) < 0.02
    m = weights[:, cfg.width]
    assert (m >= 0).all() and (m <= 1).all() and abs(m.mean() - 0.5) < 0.03


def test_paper_ops_per_chain_and_augmix():
    cfg = resolve_config("cifar", "ipmix", min_ops=1)
    _, traces, _, _ = _run_views(cfg, 600)
    counts = traces[:, :, 1].ravel()
    assert set(counts) == {1, 2, 3}
    cfg = resolve_config("cifar", "augmix")
    _, traces, _, _ = _run_views(cfg, 600)
    assert (traces[:, :, 0] == 0).all()  # image chains only
    assert set(traces[:, :, 1].ravel()) == {1, 2, 3}
    used = {int(op) for tr in traces.reshape(-1, 5) for op in tr[2:2 + tr[1]]}
    assert used == set(cfg.op_ids().tolist()) and policy.row_id("augmix", "autocontrast") in used


def test_zero_skip_weight_returns_the_clean_image():
    cfg = resolve_config("cifar", "ipmix")
    prm = cfg.kernel_params()
    prm[C.PRM_SKIP_A] = 0.0  # m = 0
    x, traces, _, outs = _run_views(cfg, 50, prm)
    assert (traces[:, :, 1] > 0).any()  # chains did run
    for out in outs:
        assert np.array_equal(out, x)


def test_identity_chains_and_mixing_formula():
    # depth 0: every chain is the identity, so the output is x for any weights
    cfg = resolve_config("cifar", "ipmix", depth=0)
    x, _, _, outs = _run_views(cfg, 20)
    for out in outs:
        assert np.array_equal(out, x)
    # one chain: output = round((1 - m) x + m chain)
    cfg = resolve_config("cifar", "augmix", width=1, depth=1, ops="invert")
    x, _, weights, outs = _run_views(cfg, 20)
    for w, out in zip(weights, outs):
        m = w[1]
        expected = np.clip((1 - m) * x + m * (255 - x.astype(float)) + 0.5, 0, 255).astype(np.uint8)
        assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
        assert (out == expected).mean() > 0.999


def test_views_are_independent_draws():
    cfg = resolve_config("cifar", "ipmix")
    _, t1, w1, o1 = _run_views(cfg, 30, seed=1)
    _, t2, w2, o2 = _run_views(cfg, 30, seed=2)
    assert not np.array_equal(w1, w2)
    assert sum(not np.array_equal(a, b) for a, b in zip(o1, o2)) > 20


def test_wide_mixes_take_the_row_path_with_the_same_arithmetic():
    # up to three used chains are mixed in one fused pass, more row by row: both must be the
    # formula (1 - m) x + sum m w_i chain_i, rounded, whatever the number of chains
    x = sample_images(21, 1, 32)[0]
    for width in (1, 2, 3, 5, 7):
        cfg = resolve_config("cifar", "augmix", width=width, depth=1, min_ops=1, ops="invert")
        _, traces, weights, outs = _run_views(cfg, 6)
        inv = 255.0 - x.astype(np.float64)
        for t, w, out in zip(traces, weights, outs):
            assert (t[:, 1] == 1).all()
            m = w[width]
            expected = (1.0 - m) * x + m * w[:width].sum() * inv
            assert np.abs(out.astype(np.float64) - np.clip(expected + 0.5, 0, 255).astype(np.uint8)).max() <= 1
