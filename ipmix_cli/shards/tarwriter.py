"""A deterministic ustar writer for WebDataset shards.

Every header is plain ustar (no PAX/GNU extensions): mode 0644, uid/gid 0, empty
uname/gname, one constant integer mtime. The bytes equal what Python's `tarfile` writes
with `format=USTAR_FORMAT` for the same members, but without its per-member overhead: a
sample's members are assembled in memory and written (and hashed) with one call, and the
header checksum is the precomputed sum of the constant fields plus that of the variable ones.
"""

from __future__ import annotations

import hashlib

BLOCK = 512
RECORD = 20 * BLOCK  # tar's traditional record size; the archive is padded to a multiple
MTIME = 0  # constant, so rebuilds are byte-identical
_ZEROS = bytes(RECORD)

_MODE_UID_GID = b"0000644\0" + b"0000000\0" + b"0000000\0"  # offsets 100..124
_TYPE_LINK = b"0" + bytes(100)  # typeflag (156) + linkname (157..257)
_MAGIC = b"ustar\x0000"  # 257..265
_TAIL = bytes(BLOCK - 265)  # uname, gname, devmajor/minor (empty, as tarfile writes them), prefix
_CONST_SUM = sum(_MODE_UID_GID) + sum(b"        ") + sum(_TYPE_LINK) + sum(_MAGIC)


def ustar_header(name: str, size: int, mtime: int = MTIME) -> bytes:
    raw = name.encode("utf-8")
    if len(raw) > 100:
        raise ValueError(f"tar member name longer than 100 bytes: {name!r}")
    size_f = b"%011o\0" % size
    mtime_f = b"%011o\0" % mtime
    chk = _CONST_SUM + sum(raw) + sum(size_f) + sum(mtime_f)
    return b"".join((raw, _ZEROS[:100 - len(raw)], _MODE_UID_GID, size_f, mtime_f, b"%06o\0 " % chk,
                     _TYPE_LINK, _MAGIC, _TAIL))


def _member(name: str, data: bytes, mtime: int) -> tuple[bytes, bytes, bytes]:
    return ustar_header(name, len(data), mtime), data, _ZEROS[:-len(data) % BLOCK]


class TarWriter:
    """Append members to an open binary file; `close()` writes the end-of-archive blocks.

    `bytes`, `sha256` and `md5` (what wids indexes list) describe everything written
    (valid after close); both hashes are computed in the same pass as the write.
    """

    def __init__(self, fileobj, mtime: int = MTIME):
        self.f, self.mtime = fileobj, mtime
        self._hash = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.bytes = 0
        self.members = 0
        self.closed = False

    def _write(self, data: bytes) -> None:
        self.f.write(data)
        self._hash.update(data)
        self._md5.update(data)
        self.bytes += len(data)

    def add(self, name: str, data: bytes) -> None:
        self._write(b"".join(_member(name, data, self.mtime)))
        self.members += 1

    def add_sample(self, key: str, fields: list[tuple[str, bytes]]) -> None:
        """Write one sample: members `<key>.<field>` adjacent, in the given order."""
        if "." in key or "/" in key:
            raise ValueError(f"sample key must not contain '.' or '/': {key!r}")
        parts = []
        for field, data in fields:
            parts.extend(_member(f"{key}.{field}", data, self.mtime))
        self._write(b"".join(parts))
        self.members += len(fields)

    def close(self) -> None:
        if self.closed:
            return
        end = 2 * BLOCK
        end += -(self.bytes + end) % RECORD
        self._write(_ZEROS[:end])
        self.closed = True

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()
