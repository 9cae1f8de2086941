"""Shards in object storage (s3://, gs://, az:// ... any fsspec URL except http(s) and file://).

Each shard is one GET of the whole object, checked against the manifest's byte count and sha256
before it is used, and fetched a shard or two ahead of the decoder by a background thread, so
the network wait overlaps decoding. The sha256 check compares the SHA-256 checksum that S3
keeps for the object (the build's upload carried it and S3 checked the bytes against it) when
the store sends one; otherwise (other stores, objects uploaded without it) the bytes are
hashed. Memory per process stays at a few shards; with a ShardCache, checked shards are also
kept on local disk for later epochs. Endpoint and
credentials come from the environment as fsspec and the store's client read them
(AWS_ENDPOINT_URL, AWS_PROFILE, FSSPEC_S3_ENDPOINT_URL, ...).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ipmix_cli.common.errors import IpmixError, OptionError
from ipmix_cli.shardformat.manifest import MANIFEST, Manifest
from ipmix_cli.common.objstore import fetch, fetch_whole, is_store_url, with_s3_config
from ipmix_cli.common.storage import _reason, check_scheme, classify

from .reader import ShardError

# Shards fetched ahead of the one being decoded, per process.
AHEAD = 2


def read_manifest(url: str, options: dict | None = None) -> tuple[dict, str]:
    """(manifest JSON, folder URL ending in '/') for a shard folder URL or its manifest.json URL."""
    check_scheme(classify(url), "shards")
    target = url if url.endswith(".json") else f"{url.rstrip('/')}/{MANIFEST}"
    try:
        data = fetch(target, options=options)
    except FileNotFoundError as exc:
        raise IpmixError(f"cannot read shard manifest {target}: {_reason(exc)}") from None
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise IpmixError(f"cannot read shard manifest {target}: {exc}") from None
    return manifest, target.rsplit("/", 1)[0] + "/"


class RemoteShards:
    """Loads the shards of one shard set from object storage for a BlockReader.

    `urls`, `names`, `sizes` and `digests` are [materialized epoch][shard] lists (sizes and
    digests may hold None where the manifest records none). `expect` tells which shards come
    next, in order, so they can be fetched ahead."""

    def __init__(self, urls, names, sizes, digests, cache=None, ahead: int = AHEAD, options: dict | None = None):
        self.urls, self.names, self.sizes, self.digests = urls, names, sizes, digests
        self.cache = cache
        self.options = options  # fsspec storage options
        self.ahead = ahead
        self._start_process()

    def _start_process(self):
        # A thread does not survive fork: each DataLoader worker starts its own.
        self._pid = os.getpid()
        self._pool = None
        self._pending: dict = {}
        self._upcoming: list = []

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_pid=None, _pool=None, _pending={}, _upcoming=[])
        return state

    def expect(self, keys) -> None:
        """The (materialized epoch, shard) keys this process reads next, in reading order."""
        if self._pid != os.getpid():
            self._start_process()
        upcoming = []
        for key in keys:
            if not upcoming or upcoming[-1] != key:
                upcoming.append(key)
        self._upcoming = upcoming

    def load(self, k: int, s: int) -> np.ndarray:
        """Shard s of materialized epoch k as a read-only uint8 array."""
        if self._pid != os.getpid():
            self._start_process()
        key = (k, s)
        if key in self._upcoming:
            del self._upcoming[: self._upcoming.index(key) + 1]
        pending = self._pending.pop(key, None)
        self._fetch_ahead()
        return pending.result() if pending is not None else self._get(k, s)

    def close(self) -> None:
        """Stop fetching ahead (waits for a fetch under way) and drop what was fetched."""
        if self._pid == os.getpid() and self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._start_process()

    def _fetch_ahead(self) -> None:
        wanted = self._upcoming[: self.ahead]
        for key in list(self._pending):
            if key not in wanted:  # plans changed (a new epoch): drop it, bounded memory
                self._pending.pop(key).cancel()
        if not wanted:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="ipmix-fetch")
        for key in wanted:
            if key not in self._pending:
                self._pending[key] = self._pool.submit(self._get, *key)

    def _get(self, k: int, s: int) -> np.ndarray:
        url, name, size, digest = self.urls[k][s], self.names[k][s], self.sizes[k][s], self.digests[k][s]
        cache_key = hashlib.sha256(f"{url}\n{digest or ''}".encode()).hexdigest()[:40]
        if self.cache is not None:
            cached = self.cache.get(cache_key, size)
            if cached is not None:
                return cached
        try:
            whole = fetch_whole(url, size, self.options)
        except FileNotFoundError:
            raise ShardError(name, f"is missing ({url})") from None
        if size is not None and whole.length != size:
            raise ShardError(name, f"is {whole.length} bytes in the store, the manifest says {size} "
                                   "(changed or damaged since the build)")
        data = whole.data
        # S3 sends the SHA-256 it checked when the build uploaded the object: compared with the
        # manifest's, it stands for hashing the bytes here (a local shard is not hashed either).
        if digest is not None and (whole.sha256 or hashlib.sha256(data).hexdigest()) != digest:
            by = "; the store's SHA-256 of the object" if whole.sha256 else ""
            raise ShardError(name, f"sha256 does not match the manifest's (changed or damaged since the build{by})")
        if not len(data):
            raise ShardError(name, "is empty")
        if self.cache is not None:
            self.cache.put(cache_key, data)
        array = np.frombuffer(data, np.uint8)
        array.flags.writeable = False
        return array


def remote_shards(manifest: Manifest, urls, names, cache_dir=None, cache_limit=None,
                  storage_options: dict | None = None) -> RemoteShards | None:
    """A RemoteShards when the shard URLs are in object storage (None for local files and
    pipe:/http(s) URLs, which keep their own readers). `cache_dir` and `cache_limit` (bytes or
    a size such as '20GB') give it a ShardCache; they must come together."""
    if (cache_dir is None) != (cache_limit is None):
        raise OptionError("a shard cache needs both a folder and a size limit ({cache_dir} DIR {cache_limit} SIZE)")
    if not any(is_store_url(u) for epoch in urls for u in epoch):
        return None
    for epoch in urls:
        for u in epoch:
            check_scheme(classify(u), "shards")
    from .cache import ShardCache

    cache = ShardCache(cache_dir, cache_limit) if cache_dir is not None else None
    sizes = [[s.bytes for s in ep.shards] for ep in manifest.epochs]
    digests = [[s.sha256 for s in ep.shards] for ep in manifest.epochs]
    if all(d for epoch in digests for d in epoch):
        storage_options = _without_response_checksums(urls[0][0], storage_options)
    return RemoteShards(urls, names, sizes, digests, cache, options=storage_options)


def _without_response_checksums(url: str, options: dict | None) -> dict | None:
    """For s3://, botocore's own check of each response (a CRC of the body, two thirds of the
    client's CPU time per shard) is left to requests that require it: every shard's sha256
    from the manifest is checked instead. A value the user set wins (with_s3_config)."""
    return with_s3_config(url, options, response_checksum_validation="when_required")
