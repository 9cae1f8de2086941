"""One augmented view from the op kernels: IPMix, AugMix and PixMix chains (Numba).

A view is a pure function of the cropped image `x`, the sample's mixing picture `f`, the
view's random stream `st` and the recipe parameters `prm` (a float64 vector; see PRM_*).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ipmix_cli.augment.ops import apply_op, copy_all, copy_region
from ipmix_cli.augment.pixel_ops import (ADD, MULTIPLY, draw_patch, mix_patch, TINY)
from ipmix_cli.augment.rng import beta, dirichlet, get_ab, randint, uniform

RECIPE_IPMIX, RECIPE_AUGMIX, RECIPE_PIXMIX, RECIPE_NONE = range(4)
RECIPES = ("ipmix", "augmix", "pixmix", "none")

# Layout of the parameter vector handed to the kernels.
PRM_RECIPE = 0
PRM_WIDTH = 1          # k chains (IPMix/AugMix) or the maximum rounds (PixMix)
PRM_DEPTH = 2          # t: ops per chain drawn uniformly from [MIN_OPS, t]
PRM_MIN_OPS = 3        # 0 (reference code) or 1 (paper)
PRM_SEVERITY = 4
PRM_BETA = 5           # add/multiply coefficients
PRM_P_CHAIN = 6        # probability that a chain is a P chain (IPMix 0.5, AugMix 0)
PRM_PARTNER_AUG = 7    # probability that a P-step partner is an op applied to x instead of f
PRM_OVERFLOW = 8       # 0 clip, 1 wrap
PRM_ALPHA = 9          # Dirichlet concentration of the chain weights
PRM_SKIP_A = 10        # skip weight m ~ Beta(SKIP_A, SKIP_B); SKIP_A = 0 means m = 0
PRM_SKIP_B = 11
PRM_SIZE = 12


@njit(cache=True)
def _op_chain(cur, tmp, n, ops, st, severity, rot_table, trace):
    """Apply n random ops to `cur` (ping-ponging with `tmp`); returns the array holding the result."""
    S0, S1 = cur.shape[0], cur.shape[1]
    for j in range(n):
        op = ops[randint(st, ops.shape[0])]
        trace[2 + j] = op
        apply_op(op, st, severity, cur, tmp, rot_table, 0, S0, 0, S1)
        cur, tmp = tmp, cur
    return cur


@njit(cache=True)
def _p_chain(cur, x, f, partner, n, ops, patch_sizes, st, prm, rot_table, trace):
    """n patch-mixing steps on `cur` (a copy of x), in place."""
    S = cur.shape[0]
    severity = prm[PRM_SEVERITY]
    partner_aug = prm[PRM_PARTNER_AUG]
    overflow = int(prm[PRM_OVERFLOW])
    for j in range(n):
        s = patch_sizes[randint(st, patch_sizes.shape[0])]
        top, left, h, w = draw_patch(st, S, s)
        mop = randint(st, 4)
        trace[2 + j] = mop
        other = f
        if partner_aug > 0.0 and uniform(st) < partner_aug:
            op = ops[randint(st, ops.shape[0])]
            apply_op(op, st, severity, x, partner, rot_table, top, top + h, left, left + w)
            other = partner
        mix_patch(cur, other, mop, st, prm[PRM_BETA], overflow, top, left, h, w)


@njit(cache=True)
def chain_view(x, f, st, prm, ops, patch_sizes, rot_table, out, bufs, acc, weights, trace):
    """IPMix (or AugMix, with P_CHAIN = 0) view of x into `out` (uint8 SxSx3).

    bufs: uint8 [3, S, S, 3] scratch; acc: float64 [S, S, 3]; weights: float64 [k + 1] receives
    the chain weights and then m; trace: int64 [k, 2 + t] receives, per chain, (is P chain,
    number of ops, op ids or mixing-op ids) -- what the tests count.
    """
    k = int(prm[PRM_WIDTH])
    depth = int(prm[PRM_DEPTH])
    min_ops = int(prm[PRM_MIN_OPS])
    severity = prm[PRM_SEVERITY]
    dirichlet(st, prm[PRM_ALPHA], k, weights)
    m = beta(st, prm[PRM_SKIP_A], prm[PRM_SKIP_B])
    weights[k] = m
    H, W = x.shape[0], x.shape[1]
    x1 = x.reshape(-1)
    acc1 = acc.reshape(-1)
    n_el = x1.shape[0]
    x_coef = 1.0 - m
    first = True
    for i in range(k):
        is_p = uniform(st) < prm[PRM_P_CHAIN]
        n = min_ops + randint(st, depth - min_ops + 1)
        trace[i, 0] = 1 if is_p else 0
        trace[i, 1] = n
        if n == 0:
            x_coef += m * weights[i]
            continue
        cur = bufs[0]
        tmp = bufs[1]
        copy_all(x, cur)
        if is_p:
            _p_chain(cur, x, f, bufs[2], n, ops, patch_sizes, st, prm, rot_table, trace[i])
        else:
            cur = _op_chain(cur, tmp, n, ops, st, severity, rot_table, trace[i])
        wi = m * weights[i]
        cur1 = cur.reshape(-1)
        if first:
            for j in range(n_el):
                acc1[j] = wi * cur1[j]
            first = False
        else:
            for j in range(n_el):
                acc1[j] += wi * cur1[j]
    out1 = out.reshape(-1)
    if first:
        for j in range(n_el):
            out1[j] = _round_u8(x_coef * x1[j] + 0.5)
    else:
        for j in range(n_el):
            out1[j] = _round_u8(x_coef * x1[j] + acc1[j] + 0.5)


@njit(cache=True, inline="always")
def _round_u8(v):
    """v already holds the +0.5: truncate and clamp to [0, 255]."""
    return np.uint8(min(max(v, 0.0), 255.0))


@njit(cache=True)
def pixmix_view(x, f, st, prm, ops, rot_table, out, bufs, acc):
    """PixMix view: start from x or op(x); up to k rounds of add/multiply with f or op(x)."""
    H, W = x.shape[0], x.shape[1]
    severity = prm[PRM_SEVERITY]
    k = int(prm[PRM_WIDTH])
    start = x
    if uniform(st) < 0.5:
        apply_op(ops[randint(st, ops.shape[0])], st, severity, x, bufs[0], rot_table, 0, H, 0, W)
        start = bufs[0]
    for yy in range(H):
        for xx in range(W):
            for c in range(3):
                acc[yy, xx, c] = start[yy, xx, c] / 255.0
    rounds = randint(st, k + 1)
    for _ in range(rounds):
        other = f
        if uniform(st) < 0.5:
            apply_op(ops[randint(st, ops.shape[0])], st, severity, x, bufs[1], rot_table, 0, H, 0, W)
            other = bufs[1]
        mop = ADD if randint(st, 2) == 0 else MULTIPLY
        a, b = get_ab(st, prm[PRM_BETA])
        for yy in range(H):
            for xx in range(W):
                for c in range(3):
                    p1 = acc[yy, xx, c]
                    p2 = other[yy, xx, c] / 255.0
                    if mop == ADD:
                        q = (a * (2.0 * p1 - 1.0) + b * (2.0 * p2 - 1.0) + 1.0) / 2.0
                    else:
                        q = ((2.0 * p1) ** a) * (max(2.0 * p2, TINY) ** b) / 2.0
                    acc[yy, xx, c] = 0.0 if q < 0.0 else (1.0 if q > 1.0 else q)
    for yy in range(H):
        for xx in range(W):
            for c in range(3):
                out[yy, xx, c] = np.uint8(int(acc[yy, xx, c] * 255.0 + 0.5))


@njit(cache=True)
def augment_view(x, f, st, prm, ops, patch_sizes, rot_table, out, bufs, acc, weights, trace):
    """One augmented view of x under the recipe in prm[PRM_RECIPE]."""
    recipe = int(prm[PRM_RECIPE])
    if recipe == RECIPE_PIXMIX:
        pixmix_view(x, f, st, prm, ops, rot_table, out, bufs, acc)
    elif recipe == RECIPE_NONE:
        copy_all(x, out)
    else:
        chain_view(x, f, st, prm, ops, patch_sizes, rot_table, out, bufs, acc, weights, trace)
