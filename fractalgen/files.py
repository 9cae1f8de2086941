"""Files that are either complete or absent: write to a temporary name, fsync, rename."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


# mkstemp creates files readable by their owner only; published files get the usual mode.
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one.

    With `fsync=False` (many small files) a power loss may leave a torn file under the final
    name; callers that verify hashes on resume can accept that."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        exc.filename = str(path)  # name the file the caller asked for, not our temporary one
        raise
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.filename == tmp:
            exc.filename = str(path)
        raise


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and prove we can write in it; raise a one-line error otherwise."""
    from fractalgen.errors import FractalgenError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FractalgenError(f"cannot write to {path}: it is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-", delete=True)
        probe.close()
    except OSError as exc:
        raise FractalgenError(f"cannot write to {path}: {exc.strerror or exc}") from None
    return path
