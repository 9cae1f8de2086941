"""One augmented view from the op kernels: IPMix, AugMix and PixMix chains (Numba).

A view is a pure function of the cropped image `x`, the sample's mixing picture `f`, the
view's random stream `st` and the recipe parameters `prm` (a float64 vector; see PRM_*).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ipmix_cli.augment.ops import apply_op, copy_all
from ipmix_cli.augment.pixel_ops import ADD, MULTIPLY, TINY, draw_patch, mix_patch
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
def _chain(is_p, cur, tmp, x, f, partner, n, ops, patch_sizes, st, prm, rot_table, trace):
    """n steps of one chain; returns the array holding the result.

    Image chain: a random op, (x for the first, then cur) -> tmp, then swap, so the result
    is in tmp when n is odd and in cur when it is even, and x is never copied. P chain (cur
    a copy of x): a patch (size, position, shape), a mixing op, maybe a partner made by one
    random op on the ORIGINAL x inside the patch, then the patch is mixed in place. One call
    site for apply_op keeps the compiled code small.
    """
    S0, S1 = cur.shape[0], cur.shape[1]
    severity = prm[PRM_SEVERITY]
    partner_aug = prm[PRM_PARTNER_AUG]
    overflow = int(prm[PRM_OVERFLOW])
    for j in range(n):
        op = -1
        src = x if j == 0 else cur
        dst = tmp
        r0, r1, c0, c1 = 0, S0, 0, S1
        mop = 0
        use_partner = False
        if is_p:
            s = patch_sizes[randint(st, patch_sizes.shape[0])]
            r0, c0, h, w = draw_patch(st, S0, s)
            r1, c1 = r0 + h, c0 + w
            mop = randint(st, 4)
            trace[2 + j] = mop
            if partner_aug > 0.0 and uniform(st) < partner_aug:
                use_partner = True
                op = ops[randint(st, ops.shape[0])]
                src = x
                dst = partner
        else:
            op = ops[randint(st, ops.shape[0])]
            trace[2 + j] = op
        if op >= 0:
            apply_op(op, st, severity, src, dst, rot_table, r0, r1, c0, c1)
        if is_p:
            other = partner if use_partner else f
            mix_patch(cur, other, mop, st, prm[PRM_BETA], overflow, r0, c0, r1 - r0, c1 - c0)
        else:
            cur, tmp = tmp, cur
    return cur


def scratch_images(width: int) -> int:
    """How many SxSx3 uint8 scratch images the kernels need for `width` chains."""
    return max(3, width + 2)


@njit(cache=True)
def chain_view(x, f, st, prm, ops, patch_sizes, rot_table, out, bufs, acc, weights, trace):
    """IPMix (or AugMix, with P_CHAIN = 0) view of x into `out` (uint8 SxSx3).

    bufs: uint8 [scratch_images(k), S, S, 3]: one result per chain, a scratch image and the
    partner; acc: float64 [S, S, 3] (its first row accumulates); weights: float64 [k + 1]
    receives the chain weights and then m; trace: int64 [k, 2 + t] receives, per chain, (is P
    chain, number of ops, op ids or mixing-op ids) -- what the tests count.
    """
    k = int(prm[PRM_WIDTH])
    depth = int(prm[PRM_DEPTH])
    min_ops = int(prm[PRM_MIN_OPS])
    dirichlet(st, prm[PRM_ALPHA], k, weights)
    m = beta(st, prm[PRM_SKIP_A], prm[PRM_SKIP_B])
    weights[k] = m
    scratch = bufs[k]
    partner = bufs[k + 1]
    x_coef = 1.0 - m
    used = np.empty(k, np.int64)  # chains with at least one op, in order
    n_used = 0
    for i in range(k):
        is_p = uniform(st) < prm[PRM_P_CHAIN]
        n = min_ops + randint(st, depth - min_ops + 1)
        trace[i, 0] = 1 if is_p else 0
        trace[i, 1] = n
        if n == 0:
            x_coef += m * weights[i]
            continue
        if is_p:
            copy_all(x, bufs[i])
            _chain(True, bufs[i], scratch, x, f, partner, n, ops, patch_sizes, st, prm, rot_table, trace[i])
        elif n % 2 == 1:  # image ops alternate between two buffers: end in bufs[i] either way
            _chain(False, scratch, bufs[i], x, f, partner, n, ops, patch_sizes, st, prm, rot_table, trace[i])
        else:
            _chain(False, bufs[i], scratch, x, f, partner, n, ops, patch_sizes, st, prm, rot_table, trace[i])
        used[n_used] = i
        n_used += 1
    if n_used <= 3:
        _mix3(x, bufs, used, n_used, weights, m, x_coef, out)
    else:
        _mix_rows(x, bufs, used, n_used, weights, m, x_coef, acc, out)


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
def pixmix_view(x, f, st, prm, ops, rot_table, out, bufs, acc):
    """PixMix view: start from x or op(x); up to k rounds of add/multiply with f or op(x).

    Round -1 is the start; every round may first apply one random op to the original x
    (one call site for apply_op). The image is mixed as one flat run of values in [0, 1].
    """
    H, W = x.shape[0], x.shape[1]
    severity = prm[PRM_SEVERITY]
    k = int(prm[PRM_WIDTH])
    mixed = acc.reshape(-1)
    use_op = uniform(st) < 0.5
    rounds = 0
    r = -1
    while True:
        dst = bufs[0] if r < 0 else bufs[1]
        if use_op:
            apply_op(ops[randint(st, ops.shape[0])], st, severity, x, dst, rot_table, 0, H, 0, W)
        other = dst if use_op else x
        if r < 0:
            _to_unit(other.reshape(-1), mixed)
            rounds = randint(st, k + 1)
        else:
            if not use_op:
                other = f
            mop = ADD if randint(st, 2) == 0 else MULTIPLY
            a, b = get_ab(st, prm[PRM_BETA])
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
def augment_view(x, f, st, prm, ops, patch_sizes, rot_table, out, bufs, acc, weights, trace):
    """One augmented view of x under the recipe in prm[PRM_RECIPE]."""
    recipe = int(prm[PRM_RECIPE])
    if recipe == RECIPE_PIXMIX:
        pixmix_view(x, f, st, prm, ops, rot_table, out, bufs, acc)
    elif recipe == RECIPE_NONE:
        copy_all(x, out)
    else:
        chain_view(x, f, st, prm, ops, patch_sizes, rot_table, out, bufs, acc, weights, trace)
