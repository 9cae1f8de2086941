"""A local cache of whole shards read from object storage, capped in bytes.

    cache = ShardCache("/scratch/ipmix-cache", parse_size("20GB"))
    buf = cache.get(key, size)        # the cached shard, memory-mapped, or None
    cache.put(key, data)              # publish a checked shard; least recently used ones go

Several processes (DataLoader workers, ranks on one machine) may share one folder: a shard is
written to a private temporary file and appears under its name by one rename, so nobody reads
a half-written shard; eviction and publishing happen under one lock file, so the shards in the
folder never add up to more than the cap. A read marks a shard as recently used (its mtime).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ipmix_cli.common.errors import IpmixError

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
SUFFIX = ".tar"


def parse_size(text) -> int:
    """Bytes of a size such as 20GB, 512MiB, 1.5TB or 1000000 (GB = 10^9, GiB = 2^30)."""
    if isinstance(text, int):
        value = text
    else:
        m = _SIZE.match(str(text))
        unit = m.group(2).lower() if m else ""
        if not m or unit not in _UNITS:
            raise IpmixError(f"cache limit {text!r} is not a size such as 20GB, 512MiB or 1000000 (bytes)")
        value = int(float(m.group(1)) * _UNITS[unit])
    if value < 1:
        raise IpmixError(f"cache limit must be more than 0 bytes, got {text!r}")
    return value


class ShardCache:
    def __init__(self, folder, limit):
        self.folder = Path(folder).expanduser()
        self.limit = parse_size(limit)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IpmixError(f"cache folder {self.folder}: cannot create it ({exc.strerror or exc})") from None
        if not os.access(self.folder, os.W_OK):
            raise IpmixError(f"cache folder {self.folder} is not writable")

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}{SUFFIX}"

    def get(self, key: str, size: int | None) -> np.ndarray | None:
        """The cached shard as a read-only array, or None (not cached, or not of `size` bytes)."""
        path = self._path(key)
        try:
            with open(path, "rb") as fh:
                length = os.fstat(fh.fileno()).st_size
                if length == 0 or (size is not None and length != size):
                    return None
                mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            os.utime(path)  # most recently used; evicted last
        except FileNotFoundError:  # never cached, or evicted by another process just now
            return None
        return np.frombuffer(mapped, np.uint8)

    def put(self, key: str, data: bytes) -> None:
        """Publish `data` under `key`, evicting least recently used shards to stay under the cap.
        A shard larger than the whole cap is not kept."""
        if len(data) > self.limit:
            return
        tmp = self.folder / f".{key}.{os.getpid()}.{time.monotonic_ns()}.part"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            with self._locked():
                self._evict(len(data), keep=self._path(key))
                os.replace(tmp, self._path(key))
        except OSError as exc:
            raise IpmixError(f"cache folder {self.folder}: cannot write a shard ({exc.strerror or exc})") from None
        finally:
            if tmp.exists():
                tmp.unlink()

    def cached_bytes(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def _entries(self):
        """(path, bytes, last use) of every published shard."""
        found = []
        for entry in os.scandir(self.folder):
            if entry.name.endswith(SUFFIX) and not entry.name.startswith("."):
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                found.append((Path(entry.path), st.st_size, st.st_mtime_ns))
        return found

    def _remove_orphans(self) -> None:
        """Temporary files of writers that are gone (a DataLoader worker stopped mid-write): the
        writer's pid is in the name, and the folder is shared by processes of one machine only."""
        for entry in os.scandir(self.folder):
            parts = entry.name.split(".")
            if not (entry.name.endswith(".part") and len(parts) == 5 and parts[2].isdigit()):
                continue
            try:
                os.kill(int(parts[2]), 0)
            except ProcessLookupError:
                Path(entry.path).unlink(missing_ok=True)
            except PermissionError:  # alive, another user's
                pass

    def _evict(self, incoming: int, keep: Path) -> None:
        self._remove_orphans()
        entries = [e for e in self._entries() if e[0] != keep]
        total = sum(size for _, size, _ in entries)
        for path, size, _ in sorted(entries, key=lambda e: e[2]):
            if total + incoming <= self.limit:
                break
            path.unlink(missing_ok=True)  # a process still reading it keeps its mapping
            total -= size

    @contextmanager
    def _locked(self):
        with open(self.folder / ".lock", "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
