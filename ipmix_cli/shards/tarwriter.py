"""A deterministic ustar writer for WebDataset shards.

Every header is plain ustar (no PAX/GNU extensions): mode 0644, uid/gid 0, empty
uname/gname, one constant integer mtime. The bytes equal what Python's `tarfile` writes
with `format=USTAR_FORMAT` for the same members, but without its per-member overhead, and
the sha256 and size of the archive are computed while it is written.
"""

from __future__ import annotations

import hashlib

BLOCK = 512
RECORD = 20 * BLOCK  # tar's traditional record size; the archive is padded to a multiple
MTIME = 0  # constant, so rebuilds are byte-identical
_ZEROS = bytes(RECORD)


def ustar_header(name: str, size: int, mtime: int = MTIME) -> bytes:
    raw = name.encode("utf-8")
    if len(raw) > 100:
        raise ValueError(f"tar member name longer than 100 bytes: {name!r}")
    h = bytearray(BLOCK)
    h[0:len(raw)] = raw
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"%011o\0" % mtime
    h[148:156] = b"        "
    h[156:157] = b"0"
    h[257:265] = b"ustar\x0000"
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


class TarWriter:
    """Append members to an open binary file; `close()` writes the end-of-archive blocks.

    `bytes` and `sha256` describe everything written (valid after close).
    """

    def __init__(self, fileobj, mtime: int = MTIME):
        self.f, self.mtime = fileobj, mtime
        self._hash = hashlib.sha256()
        self.bytes = 0
        self.members = 0
        self.closed = False

    def _write(self, data: bytes) -> None:
        self.f.write(data)
        self._hash.update(data)
        self.bytes += len(data)

    def add(self, name: str, data: bytes) -> None:
        size = len(data)
        pad = -size % BLOCK
        self._write(ustar_header(name, size, self.mtime) + data + _ZEROS[:pad])
        self.members += 1

    def add_sample(self, key: str, fields: list[tuple[str, bytes]]) -> None:
        """Write one sample: members `<key>.<field>` adjacent, in the given order."""
        if "." in key or "/" in key:
            raise ValueError(f"sample key must not contain '.' or '/': {key!r}")
        for field, data in fields:
            self.add(f"{key}.{field}", data)

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
