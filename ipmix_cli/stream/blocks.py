"""Decode planned blocks of samples, and turn them into batches. Runs inside DataLoader
workers (or in the main process when num_workers is 0)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ipmix_cli.common.errors import IpmixError

from .reader import ShardError, ShardIndex, load_bytes


class BlockReader:
    """Reads segments of shards into decoded arrays; keeps the last two shards indexed.
    With skip_bad, a shard that fails is replaced by the next readable shard of the same
    materialized epoch (by shard number), read at the same sample positions, so counts stay equal."""

    def __init__(self, urls, names, counts, fields, image_size, num_classes, skip_bad, cache_size=2, remote=None):
        self.urls = urls  # [materialized epoch][shard] -> url
        self.remote = remote  # a RemoteShards when the shards are in object storage
        self.names = names  # same shape: how errors name a shard
        self.counts = counts
        self.fields = list(fields)
        self.size = image_size
        self.num_classes = num_classes
        self.skip_bad = skip_bad
        self.cache_size = cache_size
        self._cache: OrderedDict = OrderedDict()
        self.reported: set = set()  # substitutions already announced by this process
        self.notes: list[str] = []  # warnings for the main process, handed over with the next batch

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        return state

    def _index(self, k: int, s: int) -> ShardIndex:
        key = (k, s)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        buf = self.remote.load(k, s) if self.remote else load_bytes(self.urls[k][s], self.names[k][s])
        idx = ShardIndex(self.names[k][s], buf, self.fields, self.counts[k][s])
        self._cache[key] = idx
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return idx

    def expect(self, keys) -> None:
        """The (materialized epoch, shard) keys read next, in order: remote shards are fetched ahead."""
        self.remote.expect(keys)

    def read_segment(self, k, s, start, stop, out_images, out_labels) -> None:
        """Decode samples [start, stop) of shard s of materialized epoch k. With skip_bad,
        a failure falls through to shards s+1, s+2, ... (wrapping) holding at least `stop`
        samples. No memory of earlier failures is consulted, so what a segment reads never
        depends on what this process read before (resume stays exact)."""
        n = len(self.counts[k])
        candidates = [s] + [(s + j) % n for j in range(1, n) if self.counts[k][(s + j) % n] >= stop]
        first = None
        for target in candidates if self.skip_bad else [s]:
            try:
                self._index(k, target).decode(start, stop, self.size, out_images, out_labels, self.num_classes)
            except ShardError as exc:
                self._cache.pop((k, target), None)
                if not self.skip_bad:
                    hint = "" if exc.reason.startswith("cannot read") else " (check with `ipmix shards verify`)"
                    raise IpmixError(f"{exc}{hint}; ShardLoader(skip_bad=True) reads a substitute shard "
                                     "instead") from None
                first = first or exc
                continue
            if target != s and (k, s, target) not in self.reported:
                self.reported.add((k, s, target))
                self.notes.append(f"skipping bad {first}; reading {self.names[k][target]} in its place")
            return
        raise IpmixError(f"{first}; no other shard of materialized epoch {k} can stand in for it")

    def read(self, k: int, segments) -> tuple[np.ndarray, np.ndarray]:
        n = sum(stop - start for _, start, stop in segments)
        images = np.empty((n, len(self.fields), self.size, self.size, 3), np.uint8)
        labels = np.empty(n, np.int64)
        pos = 0
        for s, start, stop in segments:
            m = stop - start
            self.read_segment(k, s, start, stop, images[pos : pos + m], labels[pos : pos + m])
            pos += m
        return images, labels
