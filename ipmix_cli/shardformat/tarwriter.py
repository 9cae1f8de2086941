"""A deterministic ustar writer for WebDataset shards.

Every header is plain ustar (no PAX/GNU extensions): mode 0644, uid/gid 0, empty
uname/gname, one constant integer mtime. The bytes equal what Python's `tarfile` writes
with `format=USTAR_FORMAT` for the same members, without its per-member overhead:
`add_samples` takes a block of samples as columns, makes all their headers at once with
NumPy (members differ only by name, size and checksum; the names too are laid out as one
array when the keys have one length), lays the block out in one buffer, and writes and
hashes it with one call each.
"""

from __future__ import annotations

import hashlib
import time
from typing import NamedTuple

import numpy as np

BLOCK = 512
RECORD = 20 * BLOCK  # tar's traditional record size; the archive is padded to a multiple
MTIME = 0  # constant, so rebuilds are byte-identical
NAME_MAX = 100
LAYOUT_BYTES = 1 << 20  # bytes of samples laid out, written and hashed per call
_ZEROS = bytes(RECORD)

# The constant part of every header; name, size, mtime and checksum are filled per member.
_TEMPLATE = np.zeros(BLOCK, np.uint8)
_TEMPLATE[100:124] = np.frombuffer(b"0000644\0" + b"0000000\0" + b"0000000\0", np.uint8)  # mode, uid, gid
_TEMPLATE[148:156] = ord(" ")  # the checksum field counts as spaces while summing
_TEMPLATE[156] = ord("0")  # typeflag: regular file (linkname stays empty)
_TEMPLATE[257:265] = np.frombuffer(b"ustar\x0000", np.uint8)  # magic + version; uname.. prefix empty
_TEMPLATE_SUM = int(_TEMPLATE.sum())


class Rows(NamedTuple):
    """A column whose payload r is `prefix + rows[r]` (an .npy header and one picture's bytes),
    laid out without first joining the two."""

    prefix: bytes
    rows: np.ndarray  # [n, L] uint8; each row contiguous (a view into a bigger block is fine)


def _octal_digits(values: np.ndarray, width: int) -> np.ndarray:
    """[n, width] ASCII octal digits of non-negative integers, zero-padded (like '%0*o')."""
    shifts = 3 * np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((values[:, None] >> shifts) & 7).astype(np.uint8) + ord("0")


def _name_rows(names: list[bytes]) -> np.ndarray:
    """[len(names), width] uint8: the names NUL-padded to the longest, as the name field pads them."""
    width = max((len(s) for s in names), default=0)
    return np.array(names, dtype=f"S{max(width, 1)}").view(np.uint8).reshape(len(names), max(width, 1))


def _member_names(bkeys, fields: list[str]) -> np.ndarray:
    """`_name_rows` of `<key>.<field>` for every member, in archive order; made with NumPy when
    the keys have one length (a build's keys all do). `bkeys`: a list of bytes, or the keys
    as the rows of a [n, length] uint8 array."""
    suffixes = [b"." + f.encode("utf-8") for f in fields]
    if isinstance(bkeys, np.ndarray):
        key_rows = bkeys
    elif len(set(map(len, bkeys))) != 1:
        return _name_rows([k + s for k in bkeys for s in suffixes])
    else:
        key_rows = np.frombuffer(b"".join(bkeys), np.uint8).reshape(len(bkeys), len(bkeys[0]))
    (n, key_len), m = key_rows.shape, len(suffixes)
    out = np.zeros((n, m, key_len + max(len(s) for s in suffixes)), np.uint8)
    out[:, :, :key_len] = key_rows[:, None, :]
    for c, suffix in enumerate(suffixes):
        out[:, c, key_len:key_len + len(suffix)] = np.frombuffer(suffix, np.uint8)
    return out.reshape(n * m, -1)


def _check_names(rows: np.ndarray) -> None:
    if rows.shape[1] > NAME_MAX:
        long = bytes(rows[int(np.argmax(rows[:, NAME_MAX:].any(axis=1)))]).rstrip(b"\0")
        raise ValueError(f"tar member name longer than 100 bytes: {long.decode('utf-8', 'replace')!r}")


def ustar_headers(names, sizes, mtime: int = MTIME) -> np.ndarray:
    """[len(names), 512] uint8: the ustar header of each member (name, size) at once. `names`
    is a list of bytes or their `_name_rows`."""
    rows = names if isinstance(names, np.ndarray) else _name_rows(names)
    n, width = rows.shape
    sizes = np.asarray(sizes, dtype=np.int64)
    _check_names(rows)
    if n and (sizes.min() < 0 or sizes.max() >= 8 ** 11):
        raise ValueError("tar member size outside 0 .. 8 GiB")
    # A block's members have a few sizes and one mtime: their digits are made once each, and
    # the checksum (the sum of the header's bytes) is the template's sum plus theirs and the name's.
    distinct, which = np.unique(sizes, return_inverse=True)
    size_digits = _octal_digits(distinct, 11)
    mtime_digits = _octal_digits(np.array([mtime], np.int64), 11)[0]
    h = np.empty((n, BLOCK), np.uint8)
    h[:] = _TEMPLATE
    h[:, :width] = rows
    h[:, 124:135] = size_digits[which]
    h[:, 136:147] = mtime_digits  # 135 and 147 stay NUL
    chk = (_TEMPLATE_SUM + int(mtime_digits.sum()) + size_digits.sum(axis=1, dtype=np.int64)[which]
           + rows.sum(axis=1, dtype=np.int64))
    h[:, 148:154] = _octal_digits(chk, 6)
    h[:, 154] = 0
    h[:, 155] = ord(" ")
    return h


def ustar_header(name: str, size: int, mtime: int = MTIME) -> bytes:
    return ustar_headers([name.encode("utf-8")], [size], mtime).tobytes()


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _key_bytes(keys) -> list[bytes] | np.ndarray:
    """The keys as bytes (a list), or as the rows of a [n, length] uint8 array when they come
    as a NumPy bytes array of keys of one length; refuses a key holding '.' or '/'."""
    if isinstance(keys, np.ndarray) and keys.dtype.kind == "S":
        rows = np.ascontiguousarray(keys).view(np.uint8).reshape(len(keys), keys.dtype.itemsize)
        if not rows[:, -1].all():  # shorter keys end in NUL padding: take them one by one
            return _key_bytes([k.decode("utf-8") for k in keys.tolist()])
        bad = ((rows == ord(".")) | (rows == ord("/"))).any(axis=1)
        if bad.any():
            raise ValueError(f"sample key must not contain '.' or '/': {keys[np.argmax(bad)].decode()!r}")
        return rows
    bkeys = [k.encode("utf-8") for k in keys]
    joined = b"\0".join(bkeys)
    if b"." in joined or b"/" in joined:
        bad = next(k for k in keys if "." in k or "/" in k)
        raise ValueError(f"sample key must not contain '.' or '/': {bad!r}")
    return bkeys


class TarWriter:
    """Append members to an open binary file; `close()` writes the end-of-archive blocks.

    `bytes` and `sha256` describe everything written (valid after close), hashed from the
    buffer each write call gets. (No md5: it costs twice the sha256 per byte and nothing
    needs it; an object store keeps the sha256 as its own checksum.)
    `seconds` adds up the time spent laying out members ("tar"), hashing and writing.
    """

    def __init__(self, fileobj, mtime: int = MTIME):
        self.f, self.mtime = fileobj, mtime
        self._hash = hashlib.sha256()
        self.bytes = 0
        self.members = 0
        self.closed = False
        self.seconds = {"tar": 0.0, "hash": 0.0, "write": 0.0}
        self._buffer = np.empty(0, np.uint8)  # written and hashed before it is reused

    def _write(self, data) -> None:
        t0 = time.perf_counter()
        self._hash.update(data)
        t1 = time.perf_counter()
        self.f.write(data)
        self.seconds["hash"] += t1 - t0
        self.seconds["write"] += time.perf_counter() - t1
        self.bytes += len(data) if isinstance(data, bytes) else data.nbytes

    def add(self, name: str, data: bytes) -> None:
        header = ustar_headers([name.encode("utf-8")], [len(data)], self.mtime).tobytes()
        self._write(header + data + _ZEROS[:-len(data) % BLOCK])
        self.members += 1

    def add_sample(self, key: str, fields: list[tuple[str, bytes]]) -> None:
        """Write one sample: members `<key>.<field>` adjacent, in the given order."""
        self.add_samples([key], [(field, [data]) for field, data in fields])

    def add_samples(self, keys: list[str], columns: list[tuple[str, object]]) -> None:
        """Write len(keys) samples; sample r holds, in column order, the member
        `<keys[r]>.<field>` with the payload `payloads[r]` of each column (field, payloads).

        `payloads` is a list of bytes, a [len(keys), L] uint8 array (L bytes per sample), or
        `Rows(prefix, array)`. `keys`: a list of str, or a NumPy bytes array (`plan.sample_keys`).
        """
        n = len(keys)
        if n == 0:
            return
        t0 = time.perf_counter()
        bkeys = _key_bytes(keys)
        sizes = np.empty((n, len(columns)), np.int64)
        columns = [(f, Rows(b"", p) if isinstance(p, np.ndarray) else p) for f, p in columns]
        for c, (field, payloads) in enumerate(columns):
            if isinstance(payloads, Rows):
                rows = payloads.rows
                if rows.dtype != np.uint8 or rows.ndim != 2 or len(rows) != n or rows.strides[1] != 1:
                    raise ValueError(f"column {field}: expected a [{n}, L] uint8 array, not {rows.dtype} "
                                     f"{rows.shape}")
                sizes[:, c] = len(payloads.prefix) + rows.shape[1]
            else:
                if len(payloads) != n:
                    raise ValueError(f"column {field}: {len(payloads)} payloads for {n} keys")
                sizes[:, c] = list(map(len, payloads))
        member_names = _member_names(bkeys, [f for f, _ in columns])
        _check_names(member_names)  # before anything of the block is written
        slots = -(-sizes // BLOCK) * BLOCK
        fixed = bool((slots == slots[0]).all())
        # Same-size samples go out in pieces of about LAYOUT_BYTES: big enough for one write and
        # hash call to cost nothing per sample, small enough to hold no more than a chunk's pixels.
        step = max(1, LAYOUT_BYTES // int((BLOCK + slots[0]).sum())) if fixed else n
        if fixed and len(self._buffer) < min(n, step) * int((BLOCK + slots[0]).sum()):
            self._buffer = np.empty(min(n, step) * int((BLOCK + slots[0]).sum()), np.uint8)
        m = len(columns)
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            part = [(f, Rows(p.prefix, p.rows[lo:hi]) if isinstance(p, Rows) else p[lo:hi]) for f, p in columns]
            headers = ustar_headers(member_names[lo * m:hi * m], sizes[lo:hi].reshape(-1), self.mtime)
            headers = headers.reshape(hi - lo, m, BLOCK)
            if fixed:
                block = _fixed_layout(headers, part, sizes[lo:hi], slots[0], self._buffer)
            else:
                block = _joined_layout(headers, part, sizes[lo:hi])
            self.seconds["tar"] += time.perf_counter() - t0
            self._write(block)
            t0 = time.perf_counter()
        self.members += n * m

    def close(self) -> None:
        if self.closed:
            return
        end = 2 * BLOCK
        end += -(self.bytes + end) % RECORD
        self._write(_ZEROS[:end])
        self.closed = True
        self._buffer = np.empty(0, np.uint8)  # a closed shard waiting for its fsync holds no block

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


def _fixed_layout(headers: np.ndarray, columns, sizes: np.ndarray, slots: np.ndarray, out: np.ndarray):
    """Every sample takes the same bytes (npy views, short labels): one [n, record] array,
    laid out in `out` (a buffer reused from block to block, so every byte is written)."""
    n = len(headers)
    starts = np.concatenate([[0], np.cumsum(BLOCK + slots)])
    out = out[:n * int(starts[-1])].reshape(n, int(starts[-1]))
    for c, (_, payloads) in enumerate(columns):
        at = int(starts[c])
        out[:, at:at + BLOCK] = headers[:, c]
        at += BLOCK
        end = at + int(slots[c])
        if isinstance(payloads, Rows):
            head, rows = payloads
            out[:, at:at + len(head)] = np.frombuffer(head, np.uint8)
            out[:, at + len(head):at + len(head) + rows.shape[1]] = rows
            out[:, at + len(head) + rows.shape[1]:end] = 0
        else:
            width = int(sizes[:, c].max())
            if width:
                out[:, at:at + width] = np.array(payloads, dtype=f"S{width}").view(np.uint8).reshape(n, width)
            out[:, at + width:end] = 0
    return out.reshape(-1)


def _joined_layout(headers: np.ndarray, columns, sizes: np.ndarray) -> bytes:
    """Members of different sizes (encoded pictures): header, payload and padding joined."""
    raw = headers.tobytes()
    parts = []
    m = 0
    for r in range(len(headers)):
        for c, (_, payloads) in enumerate(columns):
            parts.append(raw[m * BLOCK:(m + 1) * BLOCK])
            if isinstance(payloads, Rows):
                parts.append(payloads.prefix)
                parts.append(payloads.rows[r].tobytes())
            else:
                parts.append(payloads[r])
            parts.append(_ZEROS[:-int(sizes[r, c]) % BLOCK])
            m += 1
    return b"".join(parts)
