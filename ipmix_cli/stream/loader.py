"""ShardLoader: stream pre-built IPMix shards into training as uint8 batches.

    loader = ShardLoader("shards/", batch_size=128, num_workers=4)
    for t in range(epochs):
        loader.set_epoch(t)
        for images, labels in loader:   # uint8 [B, V, 3, S, S], int64 [B]
            ...
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ipmix_cli.common.errors import IpmixError

from .blocks import BlockReader
from .manifest import load_manifest, shard_url
from .plan import Layout, block_permutation, consumed_shards, plan_epoch, rank_blocks, roles_of, round_robin
from .reader import warm_up
from .remote import remote_shards

STATE_VERSION = 1
# Decoded bytes one shuffle block may hold when shuffle_buffer is left to the loader.
AUTO_BLOCK_BYTES = 64 << 20
AUTO_BLOCK_SAMPLES = 2048


class _Failure:
    """An error raised inside a DataLoader worker, carried to the main process as one line."""

    def __init__(self, message: str):
        self.message = message


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise IpmixError(f"environment variable {name}={value!r} is not an integer") from None


def to_batch(images: np.ndarray, labels: np.ndarray, rows: np.ndarray):
    """Rows of a decoded block as (uint8 [B, V, 3, S, S], int64 [B]). The image tensor is a
    channels-first view of channels-last memory, so `.view(-1, 3, S, S)` is free and already
    in torch.channels_last layout."""
    batch = torch.from_numpy(images[rows]).permute(0, 1, 4, 2, 3)
    return batch, torch.from_numpy(labels[rows])


class _RoleStream:
    """The batches of the roles of one rank in one epoch (a role = one DataLoader worker)."""

    def __init__(self, reader: BlockReader, plan, rank: int, start: int):
        self.reader = reader
        self.plan = plan
        self.rank = rank
        self.blocks = rank_blocks(plan, rank)
        self.roles = roles_of(self.blocks, max(1, plan.layout.num_workers), plan.layout.batch_size)
        # After `start` batches of the DataLoader's round-robin, each role resumes where it
        # stood, and the role due next becomes worker 0 so the round-robin order continues.
        self.consumed, self.first_role = round_robin([len(r) for r in self.roles], start)

    def shard_order(self, role: int, start: int = 0) -> list:
        """(materialized epoch, shard) in the order `role` reads them from its batch `start` on."""
        todo = self.roles[role][start:]
        blocks = [blk_i for n, (blk_i, _) in enumerate(todo) if n == 0 or todo[n - 1][0] != blk_i]
        return [(self.plan.materialized, seg[0]) for blk_i in blocks for seg in self.blocks[blk_i].segments]

    def next_epoch_order(self, role: int) -> list:
        """What `role` reads in the next training epoch (fresh, so role = worker id there)."""
        t, k = self.plan.t + 1, len(self.reader.counts)
        following = _RoleStream(self.reader, plan_epoch(self.reader.counts[t % k], self.plan.layout, t, k), self.rank, 0)
        return following.shard_order(role % len(following.roles))

    def role_batches(self, role: int, next_role: int):
        lay = self.plan.layout
        b = lay.batch_size
        current = None
        images = labels = perm = None
        todo = self.roles[role][self.consumed[role]:]
        if self.reader.remote is not None:
            # Remote shards are fetched ahead, on across the end of the epoch into the next one.
            self.reader.expect(self.shard_order(role, self.consumed[role]) + self.next_epoch_order(next_role))
        try:
            for blk_i, j in todo:
                if blk_i != current:
                    blk = self.blocks[blk_i]
                    images, labels = self.reader.read(self.plan.materialized, blk.segments)
                    perm = block_permutation(lay.seed, self.plan.t, self.rank, blk_i, blk.size)
                    current = blk_i
                notes, self.reader.notes = self.reader.notes, []
                yield (*to_batch(images, labels, perm[j * b : (j + 1) * b]), notes)
        except IpmixError as exc:
            yield _Failure(str(exc))


def _guard_workers(source):
    """A DataLoader worker that dies (killed for memory, say) becomes one clear line."""
    try:
        yield from source
    except RuntimeError as exc:
        if "DataLoader worker" in str(exc):
            raise IpmixError(f"a loader worker process failed: {str(exc).splitlines()[0]} "
                             "(too little memory? try fewer num_workers or a smaller shuffle_buffer)") from None
        raise


class _WorkerDataset(IterableDataset):
    """What persistent DataLoader workers run. The main process writes the epoch to read into
    a shared-memory tensor before each iteration (training epoch, resume position, consumed
    shards); each worker plans that epoch itself and plays role (first_role + id) mod workers."""

    def __init__(self, reader: BlockReader, counts, layout: Layout, rank: int, control: torch.Tensor):
        super().__init__()
        self.reader = reader
        self.counts = counts
        self.layout = layout
        self.rank = rank
        self.control = control

    @staticmethod
    def encode(control: torch.Tensor, t: int, start: int, done) -> None:
        done = sorted(done)
        control[0], control[1], control[2] = t, start, len(done)
        control[3 : 3 + len(done)] = torch.tensor(done, dtype=torch.int64)

    def __iter__(self):
        t, start, n_done = (int(v) for v in self.control[:3])
        done = [int(v) for v in self.control[3 : 3 + n_done]]
        k = len(self.counts)
        plan = plan_epoch(self.counts[t % k], self.layout, t, k, done, allow_empty=bool(done))
        stream = _RoleStream(self.reader, plan, self.rank, start)
        info = get_worker_info()
        wid = info.id if info is not None else 0
        return stream.role_batches((stream.first_role + wid) % len(stream.roles), wid)


class ShardLoader:
    """Batches of a shard set for one rank (contracts E). See docs/stream.md."""

    def __init__(self, shards, batch_size: int, *, rank: int | None = None, world_size: int | None = None,
                 num_workers: int = 0, seed: int = 0, shuffle_buffer: int | None = None, drop_last: bool = True,
                 skip_bad: bool = False, base_url: str | None = None, pin_memory: bool = False,
                 prefetch_factor: int = 2, cache_dir=None, cache_limit=None, storage_options: dict | None = None):
        manifest, root = load_manifest(shards, storage_options)
        self.manifest = manifest.to_json()  # public: the manifest document, as a dict
        self.root = root
        world_size = _env_int("WORLD_SIZE", 1) if world_size is None else int(world_size)
        rank = _env_int("RANK", 0) if rank is None else int(rank)
        if world_size < 1 or not 0 <= rank < world_size:
            raise IpmixError(f"rank {rank} is not valid for world size {world_size}")
        if int(batch_size) < 1:
            raise IpmixError(f"batch size must be at least 1, got {batch_size}")
        if int(num_workers) < 0:
            raise IpmixError(f"num_workers must be 0 or more, got {num_workers}")
        batch_size = int(batch_size)
        self.rank = rank
        self.fields = list(manifest.fields)
        self.views = len(self.fields)
        if manifest.views is not None and manifest.views != self.views:
            raise IpmixError(f"manifest says views={manifest.views} but lists fields {self.fields}")
        self.image_size = manifest.image_size
        self.num_classes = manifest.num_classes
        self.classes = manifest.class_names()
        self.materialized_epochs = len(manifest.epochs)
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        sample_bytes = self.views * self.image_size * self.image_size * 3
        if shuffle_buffer is None:
            shuffle_buffer = max(1, min(AUTO_BLOCK_SAMPLES, AUTO_BLOCK_BYTES // sample_bytes))
        if int(shuffle_buffer) < 1:
            raise IpmixError(f"shuffle_buffer must be at least 1, got {shuffle_buffer}")
        block = max(batch_size, int(shuffle_buffer) // batch_size * batch_size)
        self.layout = Layout(world_size, int(num_workers), batch_size, block, bool(drop_last), int(seed))
        base_url = manifest.extra.get("base_url") if base_url is None else base_url
        self._counts = [[s.count for s in ep.shards] for ep in manifest.epochs]
        names = [[s.path for s in ep.shards] for ep in manifest.epochs]
        urls = [[shard_url(root, p, base_url) for p in ep] for ep in names]
        self._reader = BlockReader(urls, names, self._counts, self.fields, self.image_size, self.num_classes, skip_bad,
                                   remote=remote_shards(manifest, urls, names, cache_dir, cache_limit, storage_options))
        warm_up(self.fields, self.image_size)
        # Check every materialized epoch's layout now, not in the middle of training.
        for k in range(self.materialized_epochs):
            plan_epoch(self._counts[k], self.layout, k, self.materialized_epochs)
        self._dataloader = None  # persistent workers, started on the first iteration
        self._control = None
        self.epoch = 0
        self._done: frozenset = frozenset()
        self._position = 0
        self._resume_pending = False
        self._plan = self._make_plan()

    # ------------------------------------------------------------------ epochs
    def _make_plan(self, done=None):
        t = self.epoch
        done = self._done if done is None else done
        return plan_epoch(self._counts[t % self.materialized_epochs], self.layout, t,
                          self.materialized_epochs, done, allow_empty=bool(done))

    def set_epoch(self, t: int) -> None:
        """Training epoch t reads materialized epoch t mod K with the shard order of (seed, t).
        Calling it with the epoch a loaded state_dict points at keeps that resume position."""
        t = int(t)
        if t < 0:
            raise IpmixError(f"epoch must be 0 or more, got {t}")
        if t == self.epoch and self._resume_pending:
            return
        self.epoch = t
        self._done = frozenset()
        self._position = 0
        self._resume_pending = False
        self._plan = self._make_plan()

    @property
    def plan(self):
        return self._plan

    def __len__(self) -> int:
        """Batches a full pass over the current epoch yields on this rank (equal on every rank)."""
        if self._done:
            return plan_epoch(self._counts[self.epoch % self.materialized_epochs], self.layout, self.epoch,
                              self.materialized_epochs).batches
        return self._plan.batches

    @property
    def remaining(self) -> int:
        """Batches the next iteration yields: len(self), or fewer right after load_state_dict."""
        return self._plan.batches - (self._position if self._resume_pending else 0)

    def describe(self) -> str:
        return self._plan.describe()

    def echo_factor(self, train_epochs: int) -> float:
        """Training epochs per materialized epoch (E/K); warns above 4 and strongly from 10."""
        e = float(train_epochs) / self.materialized_epochs
        k_suggested = -(-int(train_epochs) // 2)
        if e >= 10:
            warnings.warn(
                f"echo factor {e:g}: each materialized epoch is reused {e:g} times; expect a clearly worse "
                f"corruption error (about +1.8 pp at 10, +4.4 pp at 40). Build about {k_suggested} epochs of shards.",
                RuntimeWarning, stacklevel=2)
        elif e > 4:
            warnings.warn(
                f"echo factor {e:g}: each materialized epoch is reused {e:g} times (above 4 costs about 1 pp "
                f"of corruption error per doubling). Build about {k_suggested} epochs of shards.",
                RuntimeWarning, stacklevel=2)
        return e

    # --------------------------------------------------------------- iteration
    def _workers(self):
        if self._dataloader is None:
            n_shards = max(len(c) for c in self._counts)
            self._control = torch.zeros(3 + n_shards, dtype=torch.int64).share_memory_()
            dataset = _WorkerDataset(self._reader, self._counts, self.layout, self.rank, self._control)
            self._dataloader = DataLoader(dataset, batch_size=None, num_workers=self.layout.num_workers,
                                          pin_memory=self.pin_memory, prefetch_factor=self.prefetch_factor,
                                          persistent_workers=True)
        return self._dataloader

    def close(self) -> None:
        """Stop the DataLoader worker processes (they stay up between epochs otherwise) and the
        fetching ahead of remote shards in this process."""
        if self._reader.remote is not None:
            self._reader.remote.close()
        loader, self._dataloader = self._dataloader, None
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()

    def __iter__(self):
        plan = self._plan
        start = self._position if self._resume_pending else 0
        self._resume_pending = False
        self._position = start
        if self.layout.num_workers == 0:
            stream = _RoleStream(self._reader, plan, self.rank, start)
            source = stream.role_batches(stream.first_role, 0)
        else:
            loader = self._workers()
            _WorkerDataset.encode(self._control, plan.t, start, self._done)
            source = loader
        expected = plan.batches - start
        delivered = 0
        try:
            for item in _guard_workers(source):
                if isinstance(item, _Failure):
                    raise IpmixError(item.message)
                images, labels, notes = item
                for note in notes:  # raised here, so they reach the caller's warning filters
                    warnings.warn(note, RuntimeWarning, stacklevel=2)
                delivered += 1
                self._position += 1
                yield images, labels
        except IpmixError:
            self.close()  # fresh workers next time, not ones left mid-way through a failed epoch
            raise
        if delivered != expected:
            raise IpmixError(f"rank {self.rank} delivered {delivered} batches of training epoch {plan.t}, "
                             f"planned {expected}; the shards changed while reading?")

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        """Where this rank stands: enough to continue the same stream after a restart."""
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "position": self._position,
            "done_shards": sorted(self._done),
            "layout": self.layout.to_dict(),
            "config_hash": self.manifest.get("config_hash"),
            "materialized_epochs": self.materialized_epochs,
            "rank": self.rank,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a state_dict: exactly (same layout: world size, workers, batch size,
        shuffle buffer, seed), or else at shard granularity: shards every old rank had fully
        delivered are skipped and the rest of the epoch is split over the new layout."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise IpmixError("not a ShardLoader state (or from an incompatible version)")
        if state.get("config_hash") != self.manifest.get("config_hash"):
            raise IpmixError("the loader state was saved for a different shard set (config_hash differs)")
        t = int(state["epoch"])
        old = Layout.from_dict(state["layout"])
        done = frozenset(int(s) for s in state.get("done_shards", ()))
        position = int(state["position"])
        self.epoch = t
        self._resume_pending = True
        if state.get("materialized_epochs") != self.materialized_epochs:
            warnings.warn("the shard set now has a different number of materialized epochs; "
                          f"restarting training epoch {t} from its beginning", RuntimeWarning, stacklevel=2)
            self._done, self._position = frozenset(), 0
        elif old == self.layout:
            self._done, self._position = done, position
        else:
            counts = self._counts[t % self.materialized_epochs]
            finished = consumed_shards(counts, old, t, self.materialized_epochs, done, position)
            warnings.warn(f"loader layout changed ({old} → {self.layout}); resuming training epoch {t} at shard "
                          f"granularity: {len(finished)} of {len(counts)} shards already delivered are skipped",
                          RuntimeWarning, stacklevel=2)
            self._done, self._position = frozenset(finished), 0
        self._plan = self._make_plan()
        if self._position > self._plan.batches:
            raise IpmixError(f"loader state position {self._position} is beyond the {self._plan.batches} batches of epoch {t}")
