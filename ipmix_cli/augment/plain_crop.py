"""The `pad` crop and flip of a whole batch in NumPy: what the `none` recipe does.

A build that mixes nothing never needs a Numba kernel; doing its crop here keeps Numba's
import and its first kernel load (about 0.4 CPU-seconds per process) out of such builds.
The draws are the kernels' own: splitmix64 keyed by (seed, epoch, index, CROP) as in
`rng.stream_key`, then `randint(9)`, `randint(9)` and `uniform() < 0.5` (`views.draw_pad_crop`),
so the bytes equal the kernel path's (a test holds the two together).
"""

from __future__ import annotations

import numpy as np

PAD = 4
STREAM_CROP = 0  # rng.STREAM_CROP

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_STREAM_SALT = np.uint64(0x632BE59BD9B4E019)
_INV53 = 1.0 / 9007199254740992.0


def _mix64(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def stream_keys(seed: int, epoch: int, indices: np.ndarray, stream: int) -> np.ndarray:
    """uint64 keys of the samples' streams: `rng.stream_key` for every index at once."""
    idx = np.asarray(indices, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = _mix64(np.full(idx.shape, seed, np.uint64) + _GOLDEN)
        h = _mix64(h ^ (np.uint64(epoch) + _GOLDEN))
        h = _mix64(h ^ (idx * _GOLDEN + np.uint64(1)))
        return _mix64(h ^ (np.uint64(stream) + _STREAM_SALT))


def _uniforms(state: np.ndarray, draws: int) -> np.ndarray:
    """[draws, n] floats in [0, 1): the next `draws` uniforms of each stream (rng.uniform)."""
    out = np.empty((draws, len(state)), np.float64)
    with np.errstate(over="ignore"):
        for d in range(draws):
            state = state + _GOLDEN
            out[d] = (_mix64(state) >> np.uint64(11)).astype(np.float64) * _INV53
    return out


def draw_pad_crops(seed: int, epoch: int, indices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(oy, ox, flip) of every sample: `views.draw_pad_crop` at once."""
    u = _uniforms(stream_keys(seed, epoch, indices, STREAM_CROP), 3)
    n = 2 * PAD + 1
    oy = np.minimum((u[0] * n).astype(np.int64), n - 1)
    ox = np.minimum((u[1] * n).astype(np.int64), n - 1)
    return oy, ox, u[2] < 0.5


def pad_crop_flip(images: np.ndarray, seed: int, epoch: int, indices, flip_ok: bool, out: np.ndarray) -> None:
    """out[i] = images[i] zero-padded by PAD, cropped back to S at its drawn offset, mirrored
    when its flip is drawn and `flip_ok` (`views.pad_crop_flip` for a batch).

    images: uint8 [N, S, S, 3]; out: uint8 [N, S, S, 3] (a view such as out[:, 0] is fine)."""
    N, S = images.shape[0], images.shape[1]
    if N == 0:
        return
    oy, ox, flip = draw_pad_crops(seed, epoch, indices)
    flip &= bool(flip_ok)
    P = S + 2 * PAD
    padded = np.zeros((N, P, P, 3), np.uint8)
    padded[:, PAD:PAD + S, PAD:PAD + S] = images
    # windows[n, y, o]: the S pixels of padded row y of picture n from column o on, as one
    # (overlapping) void item, so the gather copies whole rows
    windows = np.ndarray((N, P, 2 * PAD + 1), np.dtype((np.void, S * 3)), buffer=padded,
                         strides=(P * P * 3, P * 3, 3))
    crops = windows[np.arange(N)[:, None], oy[:, None] + np.arange(S), ox[:, None]].view(np.uint8).reshape(N, S, S * 3)
    flipped = np.nonzero(flip)[0]
    if len(flipped):  # a mirrored crop is the crop at the same offset, its pixels reversed
        crops[flipped] = np.take(crops[flipped], _mirror_order(S), axis=2)
    out[...] = crops.reshape(N, S, S, 3)


def _mirror_order(S: int) -> np.ndarray:
    """The byte order that reverses the pixels of a row of S RGB pixels."""
    return (3 * np.arange(S - 1, -1, -1)[:, None] + np.arange(3)).reshape(-1)
