"""Which source sample goes where: per epoch an independent pre-shuffled draw cut into
equal shards, padded with marked extra draws when the source size does not divide."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

# Shard counts that divide the usual world_size x num_workers products (1..64 GPUs times
# 1..8 workers, including the 3/6/12/24/48 products of 3- and 6-worker loaders).
_NICE_COUNTS = sorted({b * 2 ** k for b in (1, 3) for k in range(0, 16)})
TARGET_SHARD_BYTES = 256 << 20
MIN_SAMPLES_PER_SHARD = 32
WANT_SHARDS = 64  # 8 ranks x 8 workers


def choose_shard_count(n_samples: int, bytes_per_sample: float | None = None) -> int:
    """Enough shards for 64 readers when the data allows (≥ 32 samples each), more when a
    shard would pass ~256 MB; always a 2^k or 3·2^k so common reader counts divide it."""
    if n_samples <= 0:
        raise ValueError("no samples")
    want = WANT_SHARDS
    while want > 1 and n_samples / want < MIN_SAMPLES_PER_SHARD:
        want //= 2
    if bytes_per_sample:
        want = max(want, int(np.ceil(n_samples * bytes_per_sample / TARGET_SHARD_BYTES)))
    want = min(want, n_samples)
    return next(c for c in _NICE_COUNTS if c >= want) if want > 1 else 1


def _rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(epoch), stream, 0x1B7])))


@dataclass(frozen=True)
class Plan:
    n_source: int
    shards: int
    seed: int

    @property
    def samples_per_shard(self) -> int:
        return -(-self.n_source // self.shards)

    @property
    def samples_per_epoch(self) -> int:
        return self.samples_per_shard * self.shards

    @property
    def pads_per_epoch(self) -> int:
        return self.samples_per_epoch - self.n_source

    def epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(source index, is_pad) for every position of the epoch, already shuffled.

        Every source sample appears once; the padding draws are distinct samples (while the
        source allows) drawn from an independent stream, then everything is shuffled.
        """
        n, total = self.n_source, self.samples_per_epoch
        rng = _rng(self.seed, epoch, 1)
        pads = self.pads_per_epoch
        extra = np.concatenate([rng.permutation(n) for _ in range(-(-pads // n))])[:pads] if pads else \
            np.zeros(0, np.int64)
        index = np.concatenate([np.arange(n, dtype=np.int64), extra.astype(np.int64)])
        is_pad = np.concatenate([np.zeros(n, bool), np.ones(pads, bool)])
        order = _rng(self.seed, epoch, 2).permutation(total)
        return index[order], is_pad[order]

    def shard_rows(self, epoch: int, shard: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positions, source indices, pad flags) of one shard."""
        if not 0 <= shard < self.shards:
            raise IndexError(shard)
        index, is_pad = _last_epoch_order(self, epoch)
        k = self.samples_per_shard
        pos = np.arange(shard * k, (shard + 1) * k, dtype=np.int64)
        return pos, index[pos], is_pad[pos]


@functools.lru_cache(maxsize=1)
def _last_epoch_order(plan: Plan, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """A worker builds the shards of one epoch one after another: shuffle the epoch once, not
    once per shard (it held 4.5 µs of a 32 px sample's time). Holding it takes less memory than
    making it does."""
    return plan.epoch_order(epoch)


def task_number(epoch: int, shard: int, shards: int) -> int:
    return epoch * shards + shard


@dataclass(frozen=True)
class NodeTasks:
    """The (epoch, shard) tasks of one node, those whose task number ≡ node_rank (mod
    num_nodes), made one at a time: counting and walking them takes O(1) memory however
    many epochs the build has."""

    epochs: range
    shards: int
    num_nodes: int = 1
    node_rank: int = 0

    def _numbers(self) -> range:
        lo, hi = task_number(self.epochs.start, 0, self.shards), task_number(self.epochs.stop, 0, self.shards)
        first = lo + (self.node_rank - lo) % self.num_nodes
        return range(first, max(first, hi), self.num_nodes)

    def __len__(self) -> int:
        return len(self._numbers())

    def __iter__(self):
        for t in self._numbers():
            yield divmod(t, self.shards)

    def __contains__(self, task) -> bool:
        epoch, shard = task
        return epoch in self.epochs and 0 <= shard < self.shards \
            and task_number(epoch, shard, self.shards) % self.num_nodes == self.node_rank


def node_tasks(epochs: range, shards: int, num_nodes: int = 1, node_rank: int = 0) -> NodeTasks:
    """(epoch, shard) tasks of one node: those whose task number ≡ node_rank (mod num_nodes)."""
    if not isinstance(epochs, range) or epochs.step != 1:
        raise ValueError("epochs must be a range of consecutive epochs")
    return NodeTasks(epochs, shards, num_nodes, node_rank)


def sample_key(epoch: int, position: int) -> str:
    return f"e{epoch:04d}s{position:07d}"


def sample_keys(epoch: int, positions: np.ndarray):
    """`sample_key` of every position: a fixed-width bytes array made with NumPy while every
    key has the one width (epochs below 10,000, positions below 10,000,000), else a list."""
    positions = np.asarray(positions, dtype=np.int64)
    if not (0 <= epoch < 10_000) or (len(positions) and not (0 <= positions.min() and positions.max() < 10_000_000)):
        return [sample_key(epoch, p) for p in positions.tolist()]
    keys = np.empty((len(positions), 13), np.uint8)
    keys[:, :6] = np.frombuffer(b"e%04ds" % epoch, np.uint8)
    keys[:, 6:] = positions[:, None] // 10 ** np.arange(6, -1, -1, dtype=np.int64) % 10 + ord("0")
    return keys.view("S13").reshape(-1)


def epoch_folder(epoch: int) -> str:
    return f"epoch-{epoch:04d}"


def shard_name(epoch: int, shard: int) -> str:
    """Unique within the build, not only within its epoch folder: readers that cache shards by
    file name (wids with cache_dir=) would otherwise hand back epoch 0 for every epoch."""
    return f"{epoch_folder(epoch)}/ipmix-e{epoch:04d}-{shard:05d}.tar"
