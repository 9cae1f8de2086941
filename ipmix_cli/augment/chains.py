"""One augmented view from the op kernels: IPMix, AugMix and PixMix chains (Numba).

A view is a pure function of the cropped image `x`, the sample's mixing picture `f`, the
view's random stream `st` and the `Recipe`; the ops read their constant `Tables` (ops.py), and
the kernels work in a `Scratch` of buffers made once per batch.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from ipmix_cli.augment.ops import apply_op, copy_all
from ipmix_cli.augment.pixel_ops import ADD, MULTIPLY, TINY, draw_patch, mix_patch
from ipmix_cli.augment.rng import beta, dirichlet, get_ab, randint, uniform

RECIPE_IPMIX, RECIPE_AUGMIX, RECIPE_PIXMIX, RECIPE_NONE = range(4)
RECIPES = ("ipmix", "augmix", "pixmix", "none")

# What the kernels know of the configuration (AugmentConfig.kernel_recipe makes it).
Recipe = namedtuple("Recipe", [
    "recipe",       # RECIPE_*
    "width",        # k chains (IPMix/AugMix) or the maximum rounds (PixMix)
    "depth",        # t: ops per chain drawn uniformly from [min_ops, t]
    "min_ops",      # 0 (reference code) or 1 (paper)
    "severity",
    "beta",         # add/multiply coefficients
    "p_chain",      # probability that a chain is a P chain (IPMix 0.5, AugMix 0)
    "partner_aug",  # probability that a P-step partner is an op applied to x instead of f
    "overflow",     # pixel_ops.OVERFLOW_CLIP or OVERFLOW_WRAP
    "alpha",        # Dirichlet concentration of the chain weights
    "skip_a",       # skip weight m ~ Beta(skip_a, skip_b); skip_a = 0 means m = 0
    "skip_b",
    "ops",          # int64 op ids (rows of policy.TABLE) the chains draw from
    "patch_sizes",  # int64 nominal patch sizes of the P steps
])

# Buffers of one view, reused across a batch (make_scratch): `bufs`, uint8 [max(3, k + 2), S,
# S, 3], one result per chain, a scratch image and the partner; `acc`, float64 [S, S, 3]
# (its first row accumulates the mix); `weights`, float64 [k + 1], which receives the chain
# weights and then m.
Scratch = namedtuple("Scratch", ["bufs", "acc", "weights"])


@njit(cache=True)
def draw_chain(st, recipe):
    """The next chain's kind (True: a P chain) and its number of steps."""
    is_p = uniform(st) < recipe.p_chain
    return is_p, recipe.min_ops + randint(st, recipe.depth - recipe.min_ops + 1)


@njit(cache=True)
def draw_op(st, ops):
    """One op id, uniformly from `ops`."""
    return ops[randint(st, ops.shape[0])]


@njit(cache=True)
def draw_p_step(st, patch_sizes, size):
    """The patch (r0, r1, c0, c1) of a P step in a size x size image, and its mixing op."""
    s = patch_sizes[randint(st, patch_sizes.shape[0])]
    r0, c0, h, w = draw_patch(st, size, s)
    return r0, r0 + h, c0, c0 + w, randint(st, 4)


@njit(cache=True)
def _chain(is_p, n, cur, tmp, x, f, st, recipe, tables, partner):
    """n steps of one chain; returns the array holding the result.

    Image chain: a random op, (x for the first, then cur) -> tmp, then swap, so the result
    is in tmp when n is odd and in cur when it is even, and x is never copied. P chain (cur
    a copy of x): a patch (size, position, shape), a mixing op, maybe a partner made by one
    random op on the ORIGINAL x inside the patch, then the patch is mixed in place. One call
    site for apply_op keeps the compiled code small.
    """
    S0, S1 = cur.shape[0], cur.shape[1]
    partner_aug = recipe.partner_aug
    for j in range(n):
        op = -1
        src = x if j == 0 else cur
        dst = tmp
        r0, r1, c0, c1 = 0, S0, 0, S1
        mop = 0
        use_partner = False
        if is_p:
            r0, r1, c0, c1, mop = draw_p_step(st, recipe.patch_sizes, S0)
            if partner_aug > 0.0 and uniform(st) < partner_aug:
                use_partner = True
                op = draw_op(st, recipe.ops)
                src = x
                dst = partner
        else:
            op = draw_op(st, recipe.ops)
        if op >= 0:
            apply_op(op, st, recipe.severity, src, dst, tables, r0, r1, c0, c1)
        if is_p:
            other = partner if use_partner else f
            mix_patch(cur, other, mop, st, recipe.beta, recipe.overflow, r0, c0, r1 - r0, c1 - c0)
        else:
            cur, tmp = tmp, cur
    return cur


@njit(cache=True)
def make_scratch(width, size):
    """The buffers of `width` chains at size x size (see Scratch)."""
    return Scratch(np.empty((max(3, width + 2), size, size, 3), np.uint8),
                   np.empty((size, size, 3), np.float64), np.empty(width + 1, np.float64))


@njit(cache=True)
def chain_view(x, f, st, recipe, tables, out, scratch):
    """IPMix (or AugMix, with p_chain = 0) view of x into `out` (uint8 SxSx3)."""
    k = recipe.width
    bufs = scratch.bufs
    weights = scratch.weights
    dirichlet(st, recipe.alpha, k, weights)
    m = beta(st, recipe.skip_a, recipe.skip_b)
    weights[k] = m
    tmp = bufs[k]
    partner = bufs[k + 1]
    x_coef = 1.0 - m
    used = np.empty(k, np.int64)  # chains with at least one op, in order
    n_used = 0
    for i in range(k):
        is_p, n = draw_chain(st, recipe)
        if n == 0:
            x_coef += m * weights[i]
            continue
        if is_p:
            copy_all(x, bufs[i])
            _chain(True, n, bufs[i], tmp, x, f, st, recipe, tables, partner)
        elif n % 2 == 1:  # image ops alternate between two buffers: end in bufs[i] either way
            _chain(False, n, tmp, bufs[i], x, f, st, recipe, tables, partner)
        else:
            _chain(False, n, bufs[i], tmp, x, f, st, recipe, tables, partner)
        used[n_used] = i
        n_used += 1
    if n_used <= 3:
        _mix3(x, bufs, used, n_used, weights, m, x_coef, out)
    else:
        _mix_rows(x, bufs, used, n_used, weights, m, x_coef, scratch.acc, out)


@njit(cache=True)
def _mix3(x, bufs, used, n_used, weights, m, x_coef, out):
    """(1 - m) x + sum_i m w_i chain_i for up to three chains in one pass, each pixel the
    same expression as in `_mix_rows`, in the same order (so the same bytes)."""
    x1 = x.reshape(-1)
    o1 = out.reshape(-1)
    if n_used == 0:
        for j in range(x1.shape[0]):
            o1[j] = _round_u8(x_coef * x1[j] + 0.5)
        return
    c0 = bufs[used[0]].reshape(-1)
    w0 = m * weights[used[0]]
    if n_used == 1:
        for j in range(x1.shape[0]):
            o1[j] = _round_u8(x_coef * x1[j] + w0 * c0[j] + 0.5)
        return
    c1 = bufs[used[1]].reshape(-1)
    w1 = m * weights[used[1]]
    if n_used == 2:
        for j in range(x1.shape[0]):
            a = w0 * c0[j]
            a += w1 * c1[j]
            o1[j] = _round_u8(x_coef * x1[j] + a + 0.5)
        return
    c2 = bufs[used[2]].reshape(-1)
    w2 = m * weights[used[2]]
    for j in range(x1.shape[0]):
        a = w0 * c0[j]
        a += w1 * c1[j]
        a += w2 * c2[j]
        o1[j] = _round_u8(x_coef * x1[j] + a + 0.5)


@njit(cache=True)
def _mix_rows(x, bufs, used, n_used, weights, m, x_coef, acc, out):
    """The same mix for any number of chains, one row at a time so the sums stay in cache."""
    row = x.shape[1] * 3
    x1 = x.reshape(-1)
    out1 = out.reshape(-1)
    a = acc.reshape(-1)[:row]
    for y in range(x.shape[0]):
        lo = y * row
        xr = x1[lo:lo + row]
        orow = out1[lo:lo + row]
        for u in range(n_used):
            i = used[u]
            wi = m * weights[i]
            cr = bufs[i].reshape(-1)[lo:lo + row]
            if u == 0:
                for j in range(row):
                    a[j] = wi * cr[j]
            else:
                for j in range(row):
                    a[j] += wi * cr[j]
        for j in range(row):
            orow[j] = _round_u8(x_coef * xr[j] + a[j] + 0.5)


@njit(cache=True, inline="always")
def _round_u8(v):
    """v already holds the +0.5: truncate and clamp to [0, 255]."""
    return np.uint8(min(max(v, 0.0), 255.0))


@njit(cache=True)
def pixmix_view(x, f, st, recipe, tables, out, scratch):
    """PixMix view: start from x or op(x); up to k rounds of add/multiply with f or op(x).

    Round -1 is the start; every round may first apply one random op to the original x
    (one call site for apply_op). The image is mixed as one flat run of values in [0, 1].
    """
    H, W = x.shape[0], x.shape[1]
    bufs = scratch.bufs
    mixed = scratch.acc.reshape(-1)
    use_op = uniform(st) < 0.5
    rounds = 0
    r = -1
    while True:
        dst = bufs[0] if r < 0 else bufs[1]
        if use_op:
            apply_op(draw_op(st, recipe.ops), st, recipe.severity, x, dst, tables, 0, H, 0, W)
        other = dst if use_op else x
        if r < 0:
            _to_unit(other.reshape(-1), mixed)
            rounds = randint(st, recipe.width + 1)
        else:
            if not use_op:
                other = f
            mop = ADD if randint(st, 2) == 0 else MULTIPLY
            a, b = get_ab(st, recipe.beta)
            _mix_round(mixed, other.reshape(-1), mop, a, b)
        r += 1
        if r >= rounds:
            break
        use_op = uniform(st) < 0.5
    o1 = out.reshape(-1)
    for j in range(o1.shape[0]):
        o1[j] = np.uint8(int(mixed[j] * 255.0 + 0.5))


@njit(cache=True)
def _to_unit(src, dst):
    for j in range(src.shape[0]):
        dst[j] = src[j] / 255.0


@njit(cache=True)
def _mix_round(mixed, other, mop, a, b):
    """One PixMix round in place, clipped to [0, 1]. The partner's term takes one of 256 values
    (a byte / 255), so it comes from a table: the same expression, computed once per value."""
    term = np.empty(256, np.float64)
    for v in range(256):
        p2 = v / 255.0
        term[v] = b * (2.0 * p2 - 1.0) if mop == ADD else max(2.0 * p2, TINY) ** b
    for j in range(mixed.shape[0]):
        p1 = mixed[j]
        if mop == ADD:
            q = (a * (2.0 * p1 - 1.0) + term[other[j]] + 1.0) / 2.0
        else:
            q = ((2.0 * p1) ** a) * term[other[j]] / 2.0
        mixed[j] = 0.0 if q < 0.0 else (1.0 if q > 1.0 else q)


@njit(cache=True)
def augment_view(x, f, st, recipe, tables, out, scratch):
    """One augmented view of x into `out` under `recipe`."""
    if recipe.recipe == RECIPE_PIXMIX:
        pixmix_view(x, f, st, recipe, tables, out, scratch)
    elif recipe.recipe == RECIPE_NONE:
        copy_all(x, out)
    else:
        chain_view(x, f, st, recipe, tables, out, scratch)
