"""Drop stale Numba cache files of this package's kernels.

Numba keys a cached function on its own source file only: after an edit to `ops.py`, the
cached `chains.py` kernels would still hold the old op code inlined, and two processes could
produce different bytes for the same seed. Before the kernels are imported, this compares a
digest of all kernel sources with the one recorded beside the cache and clears the cache when
they differ (a fresh checkout or an upgrade simply compiles once).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_HERE = Path(__file__).resolve().parent
KERNEL_MODULES = ("rng.py", "policy.py", "ops.py", "pixel_ops.py", "chains.py", "views.py", "resample.py")


def sources_digest() -> str:
    h = hashlib.sha256()
    for name in KERNEL_MODULES:
        h.update(name.encode() + b"\0" + (_HERE / name).read_bytes() + b"\0")
    return h.hexdigest()


def drop_stale_cache() -> None:
    cache = _HERE / "__pycache__"
    stamp = cache / "ipmix-kernels.sha256"
    try:
        digest = sources_digest()
        if stamp.read_text() == digest:
            return
    except OSError:
        pass
    try:
        for path in list(cache.glob("*.nbi")) + list(cache.glob("*.nbc")):
            try:
                path.unlink()
            except OSError:
                pass
        cache.mkdir(exist_ok=True)
        tmp = cache / f".ipmix-kernels.{os.getpid()}.tmp"
        tmp.write_text(digest)
        os.replace(tmp, stamp)
    except OSError:
        pass  # an unwritable package folder: Numba then caches elsewhere or not at all
