"""Which samples each rank and DataLoader worker reads in a training epoch — pure functions.

Training epoch t reads materialized epoch t mod K. Its shards are permuted by (seed, t) and
laid end to end into one sequence of N samples. Every rank takes an equal, contiguous run of
that sequence (split at sample granularity, so any shard layout divides evenly), cuts it into
blocks of `block` samples (a multiple of the batch size), shuffles each block with a generator
seeded by (seed, t, rank, block), and gives each DataLoader worker a contiguous run of blocks;
the DataLoader interleaves the workers' batches round-robin. Batch contents therefore do not
depend on the worker count; only their order does."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ipmix_cli.common.errors import IpmixError

_ORDER_TAG = 0x4F524452  # separates the shard-order stream from the block-shuffle stream
_BLOCK_TAG = 0x424C4B53


@dataclass(frozen=True)
class Layout:
    """Everything besides the manifest that decides the batch stream of a rank."""

    world_size: int
    num_workers: int
    batch_size: int
    block: int
    drop_last: bool
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Layout":
        return cls(**{k: d[k] for k in ("world_size", "num_workers", "batch_size", "block", "drop_last", "seed")})


@dataclass(frozen=True)
class Block:
    index: int
    start: int  # rank-local position of the block's first sample
    size: int
    segments: tuple  # ((shard id, first sample, stop), ...) in reading order

    def batches(self, batch_size: int) -> int:
        return math.ceil(self.size / batch_size)


@dataclass(frozen=True)
class EpochPlan:
    t: int
    materialized: int  # t mod K
    order: tuple  # shard ids in reading order (consumed shards of a resumed epoch left out)
    counts: tuple  # samples of each shard in `order`
    total: int  # N
    per_rank: int  # samples each rank is assigned (before dropping a last partial batch)
    used: int  # samples each rank delivers
    batches: int  # batches each rank yields: len(loader)
    layout: Layout

    def describe(self) -> str:
        w = self.layout.world_size
        spare = self.total - w * self.used
        if spare >= 0:
            extra = f"{spare} samples of the epoch left unread (drop_last)" if spare else "every sample read once"
        else:
            extra = f"{-spare} samples read twice to even out the ranks"
        return (f"training epoch {self.t} reads materialized epoch {self.materialized}: {self.total} samples "
                f"in {len(self.order)} shards → {w} rank(s) × {self.batches} batches of {self.layout.batch_size}; {extra}")


def shard_order(seed: int, t: int, n: int) -> np.ndarray:
    """The shard permutation of training epoch t."""
    return np.random.default_rng([_ORDER_TAG, seed, t]).permutation(n)


def block_permutation(seed: int, t: int, rank: int, block: int, size: int) -> np.ndarray:
    return np.random.default_rng([_BLOCK_TAG, seed, t, rank, block]).permutation(size)


def plan_epoch(shard_counts: list[int], layout: Layout, t: int, num_materialized: int, done=(),
               allow_empty: bool = False) -> EpochPlan:
    """Plan training epoch t over the shards of materialized epoch t mod K whose sample counts
    are `shard_counts`, leaving out the shard ids in `done`. Raises IpmixError if a rank would
    get no batch at all (unless allow_empty: the rest of a resumed epoch may be too short)."""
    k = t % num_materialized
    done = set(done)
    order = tuple(int(s) for s in shard_order(layout.seed, t, len(shard_counts)) if int(s) not in done)
    counts = tuple(int(shard_counts[s]) for s in order)
    total = sum(counts)
    w, b = layout.world_size, layout.batch_size
    if layout.drop_last:
        per_rank = total // w
        batches = per_rank // b
        used = batches * b
    else:
        per_rank = -(-total // w)
        batches = -(-per_rank // b)
        used = per_rank
    if batches == 0 and allow_empty:
        return EpochPlan(t, k, order, counts, total, 0, 0, 0, layout)
    if batches == 0:
        left = f" ({len(done)} shards already consumed)" if done else ""
        raise IpmixError(
            f"training epoch {t} (materialized epoch {k}) has {total} samples{left}: too few for "
            f"{w} rank(s) × batch size {b}; use a smaller batch size or fewer ranks"
        )
    return EpochPlan(t, k, order, counts, total, per_rank, used, batches, layout)


def _segments(plan: EpochPlan, g0: int, g1: int) -> list:
    """Shard segments covering global positions [g0, g1), wrapping past the end of the epoch."""
    bounds = np.cumsum((0,) + plan.counts)
    out = []
    pos = g0
    while pos < g1:
        p = pos % plan.total
        stop = min(g1 - pos + p, plan.total)
        i = int(np.searchsorted(bounds, p, side="right")) - 1
        while p < stop:
            seg_end = min(stop, int(bounds[i + 1]))
            out.append((plan.order[i], p - int(bounds[i]), seg_end - int(bounds[i])))
            pos += seg_end - p
            p = seg_end
            i += 1
    return out


def rank_blocks(plan: EpochPlan, rank: int) -> list[Block]:
    """The blocks of one rank, in order."""
    m = plan.layout.block
    base = rank * plan.per_rank
    blocks = []
    for i, start in enumerate(range(0, plan.used, m)):
        size = min(m, plan.used - start)
        blocks.append(Block(i, start, size, tuple(_segments(plan, base + start, base + start + size))))
    return blocks


def roles_of(blocks: list[Block], num_roles: int, batch_size: int) -> list[list[tuple[int, int]]]:
    """Per role (DataLoader worker), its batches as (block index, batch in block), in order.
    Each role takes a contiguous run of blocks, so a shard is read by one worker (two at a
    boundary) rather than by every worker."""
    roles = [[] for _ in range(num_roles)]
    n = len(blocks)
    for role in range(num_roles):
        for blk in blocks[role * n // num_roles : (role + 1) * n // num_roles]:
            roles[role].extend((blk.index, j) for j in range(blk.batches(batch_size)))
    return roles


def round_robin(role_lengths: list[int], position: int) -> tuple[list[int], int]:
    """How many batches each role has delivered after `position` batches of the DataLoader's
    round-robin (exhausted workers skipped), and which role is due next."""
    consumed = [0] * len(role_lengths)
    role = 0
    left = position
    while left > 0:
        if consumed[role] < role_lengths[role]:
            consumed[role] += 1
            left -= 1
        role = (role + 1) % len(role_lengths)
    return consumed, role


def interleave(role_lengths: list[int], first_role: int, consumed: list[int]):
    """(role, batch number) in delivery order, starting with `first_role` (for tests and resume)."""
    n = len(role_lengths)
    pos = list(consumed)
    r = first_role
    while any(pos[i] < role_lengths[i] for i in range(n)):
        if pos[r] < role_lengths[r]:
            yield r, pos[r]
            pos[r] += 1
        r = (r + 1) % n


def consumed_shards(shard_counts: list[int], layout: Layout, t: int, num_materialized: int, done, position: int) -> set[int]:
    """Shard ids of training epoch t that every rank has fully delivered after `position`
    batches per rank (plus those already in `done`): what a resume with another layout skips."""
    plan = plan_epoch(shard_counts, layout, t, num_materialized, done, allow_empty=True)
    seen = np.zeros(plan.total, bool)
    nroles = max(1, layout.num_workers)
    b = layout.batch_size
    for rank in range(layout.world_size):
        blocks = rank_blocks(plan, rank)
        roles = roles_of(blocks, nroles, b)
        per_role, _ = round_robin([len(r) for r in roles], min(position, plan.batches))
        for role, n in zip(roles, per_role):
            for blk_i, j in role[:n]:
                blk = blocks[blk_i]
                perm = block_permutation(layout.seed, t, rank, blk_i, blk.size)
                local = blk.start + perm[j * b : (j + 1) * b]
                seen[(rank * plan.per_rank + local) % plan.total] = True
    bounds = np.cumsum((0,) + plan.counts)
    finished = {s for i, s in enumerate(plan.order) if seen[bounds[i] : bounds[i + 1]].all()}
    return set(done) | finished
