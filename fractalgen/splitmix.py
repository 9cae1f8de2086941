"""splitmix64, the one counter-based generator of the project: a 64-bit state advanced by a
constant and mixed into 64 random bits. fractalgen's IFS and plasma kernels step it as a plain
state; `ipmix_cli.augment.rng` keys one stream per sample and view with it.

Numba caches a kernel under its own file only; `fractalgen.numba_cache` drops the cached IFS
kernels (and ipmix_cli.augment's) when this module's code changes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
INV53 = 1.0 / 9007199254740992.0  # 2**-53: the top 53 bits of a draw as a float in [0, 1)


@njit(cache=True)
def mix64(z):
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def next_uniform(state):
    """(the state advanced, a uniform double in [0, 1)), for kernels that keep the state in a local."""
    state = state + GOLDEN
    return state, (mix64(state) >> np.uint64(11)) * INV53
