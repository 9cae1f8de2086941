"""A counter-based random generator usable inside Numba kernels.

Every sample's draws come from a key hashed from (seed, epoch, index, stream); the state is
one uint64 (a splitmix64 counter: `fractalgen.splitmix`, shared with the fractal kernels) held
in a 1-element array. Creating a stream costs a few nanoseconds, so a kernel makes one per
sample and view instead of sharing a global generator, and the same inputs give the same draws
in any process, batch size or batch order.

Streams: CROP (crop and flip), MIX (mixing-picture choice and crop), VIEW + v (view v's chains).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from fractalgen.splitmix import GOLDEN, INV53 as _INV53, mix64

_S11 = np.uint64(11)

STREAM_CROP = 0
STREAM_MIX = 1
STREAM_VIEW = 2  # view v (0-based among augmented views) uses STREAM_VIEW + v


@njit(cache=True)
def stream_key(seed, epoch, index, stream):
    """uint64 key of one sample's stream; all arguments are non-negative integers."""
    h = mix64(np.uint64(seed) + GOLDEN)
    h = mix64(h ^ (np.uint64(epoch) + GOLDEN))
    h = mix64(h ^ (np.uint64(index) * GOLDEN + np.uint64(1)))
    h = mix64(h ^ (np.uint64(stream) + np.uint64(0x632BE59BD9B4E019)))
    return h


@njit(cache=True)
def new_state(seed, epoch, index, stream):
    st = np.empty(1, np.uint64)
    st[0] = stream_key(seed, epoch, index, stream)
    return st


@njit(cache=True)
def next_u64(st):
    st[0] = st[0] + GOLDEN
    return mix64(st[0])


@njit(cache=True)
def uniform(st):
    """A float in [0, 1) with 53 random bits."""
    return np.float64(next_u64(st) >> _S11) * _INV53


@njit(cache=True)
def randint(st, n):
    """An integer uniform in [0, n) (n >= 1)."""
    r = int(uniform(st) * n)
    return r if r < n else n - 1


@njit(cache=True)
def normal(st):
    """A standard normal draw (Box-Muller, one value per call)."""
    u1 = 1.0 - uniform(st)
    u2 = uniform(st)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@njit(cache=True)
def gamma(st, shape):
    """Gamma(shape, 1): exact exponential for shape 1, Marsaglia-Tsang otherwise."""
    if shape == 1.0:
        return -math.log(1.0 - uniform(st))
    boost = 1.0
    if shape < 1.0:
        boost = uniform(st) ** (1.0 / shape)
        shape += 1.0
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        x = normal(st)
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v * v * v
        u = 1.0 - uniform(st)
        if math.log(u) < 0.5 * x * x + d - d * v + d * math.log(v):
            return d * v * boost


@njit(cache=True)
def beta(st, a, b):
    """Beta(a, b); closed forms when a or b is 1 (all the recipe's draws); a = 0 gives 0."""
    if a == 0.0:
        return 0.0
    if a == 1.0 and b == 1.0:
        return uniform(st)
    if b == 1.0:
        return uniform(st) ** (1.0 / a)
    if a == 1.0:
        return 1.0 - uniform(st) ** (1.0 / b)
    x = gamma(st, a)
    y = gamma(st, b)
    return x / (x + y)


@njit(cache=True)
def dirichlet(st, alpha, k, out):
    """Fill out[:k] with a Dirichlet(alpha, ..., alpha) draw."""
    total = 0.0
    for i in range(k):
        g = gamma(st, alpha)
        out[i] = g
        total += g
    if total <= 0.0:
        for i in range(k):
            out[i] = 1.0 / k
        return
    for i in range(k):
        out[i] = out[i] / total


@njit(cache=True)
def get_ab(st, beta_param):
    """The mixing coefficients of add/multiply: interpolate or extrapolate, 1/2 each."""
    if uniform(st) < 0.5:
        a = beta(st, beta_param, 1.0)
        b = beta(st, 1.0, beta_param)
    else:
        a = 1.0 + beta(st, 1.0, beta_param)
        b = -beta(st, 1.0, beta_param)
    return a, b


@njit(cache=True)
def uniform_array(st, n):
    """n consecutive uniform draws (the same sequence as n calls of `uniform`)."""
    out = np.empty(n, np.float64)
    for i in range(n):
        out[i] = uniform(st)
    return out
