"""A small, strict, streaming reader of WebDataset tar shards.

Public API (all take a binary file object opened for reading; it is read strictly
sequentially, so a pipe or a socket works as well as a file):

- ``iter_members(fileobj)`` yields ``(name, data)`` for every regular file in archive order.
- ``iter_entries(fileobj, read=None)`` yields ``TarEntry(name, offset, size, data)`` where
  ``offset`` is the byte position of the member's data in the archive (what DALI's index
  records). With ``read`` (a test of the member name), the payloads it refuses are skipped by a
  seek where the file allows it (``data`` is then None), so indexing a big shard reads its headers only.
- ``iter_samples(fileobj, fields=None)`` groups members into WebDataset samples and yields
  ``(key, {field: data})``. The key is the member name up to the first dot of its last path
  component, the field is the rest (``e0000s0000003.aug1.png`` -> key ``e0000s0000003``,
  field ``aug1.png``). Members of a sample must be adjacent; a key that comes back later
  raises ``TarFormatError`` ("duplicate key" when the field was seen already, otherwise
  "members not adjacent"), as does a field repeated inside one sample. With ``fields``,
  every sample must hold each named field, and the dict holds only those.

Images inside the members are decoded by ``ipmix_cli.shardformat.formats.decode_image``; the
fast path that indexes a whole shard held in memory is ``ipmix_cli.shardformat.tarscan``.

Every structural fault (bad header checksum, truncated member, missing end-of-archive
block) raises ``TarFormatError``, an ``IpmixError`` with a one-line message.
Only ustar/GNU/PAX headers as written by tar and Python's tarfile are understood; directory,
link and device entries are skipped like webdataset does.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator, NamedTuple

from ipmix_cli.common.errors import IpmixError

BLOCK = 512
_REGULAR = (b"0", b"\0", b"7")


class TarFormatError(IpmixError):
    """The bytes are not a well-formed tar archive or WebDataset shard."""


class TarEntry(NamedTuple):
    name: str
    offset: int  # byte offset of the data (not the header) in the archive
    size: int
    data: bytes | None  # None: skipped (see iter_entries' `read`)


def _octal(field: bytes, what: str) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for values that do not fit in octal
        value = int.from_bytes(field[1:], "big")
        return -value if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip(b" \0")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarFormatError(f"bad {what} field {text[:16]!r} in tar header") from None


def _cstr(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _read_exact(fileobj: BinaryIO, n: int) -> bytes:
    if n == 0:
        return b""
    data = fileobj.read(n)
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = fileobj.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _parse_pax(data: bytes) -> dict[str, str]:
    records, pos = {}, 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarFormatError("bad PAX extended header") from None
        if length <= 0:
            raise TarFormatError("bad PAX extended header")
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def iter_entries(fileobj: BinaryIO, read=None) -> Iterator[TarEntry]:
    """Every regular file of the archive with its data offset; see the module docstring."""
    can_skip = read is not None and fileobj.seekable()
    pos = 0
    pending_name: str | None = None
    pending_size: int | None = None
    while True:
        header = _read_exact(fileobj, BLOCK)
        if len(header) < BLOCK:
            where = "ends inside a header" if header else "has no end-of-archive block"
            raise TarFormatError(f"truncated tar: the archive {where} at byte {pos}")
        if header == b"\0" * BLOCK:
            return
        stored = _octal(header[148:156], "checksum")
        actual = sum(header[:148]) + 8 * 32 + sum(header[156:])
        if stored != actual:
            raise TarFormatError(f"corrupt tar: header checksum mismatch at byte {pos}")
        size = _octal(header[124:136], "size")
        kind = header[156:157]
        name = _cstr(header[0:100])
        if header[257:262] == b"ustar":
            prefix = _cstr(header[345:500]) if header[257:263] == b"ustar\0" else ""
            if prefix:
                name = prefix + "/" + name
        if pending_name is not None:
            name, pending_name = pending_name, None
        if pending_size is not None:
            size, pending_size = pending_size, None
        data_offset = pos + BLOCK
        has_data = kind in _REGULAR or kind in (b"x", b"g", b"L", b"K")
        payload_len = size if has_data else 0
        padded = -(-payload_len // BLOCK) * BLOCK
        if can_skip and kind in _REGULAR and not read(name):
            fileobj.seek(padded, 1)  # a member cut short shows as a header missing after it
            pos = data_offset + padded
            yield TarEntry(name, data_offset, size, None)
            continue
        data = _read_exact(fileobj, padded)
        if len(data) < padded:
            raise TarFormatError(
                f"truncated tar: member {name!r} needs {payload_len} bytes, "
                f"only {max(0, len(data))} are left"
            )
        pos = data_offset + padded
        payload = data[:payload_len] if padded != payload_len else data
        if kind == b"x":
            records = _parse_pax(payload)
            if "path" in records:
                pending_name = records["path"]
            if "size" in records:
                if not records["size"].isdigit():
                    raise TarFormatError(f"bad size {records['size'][:16]!r} in PAX header at byte {pos - padded - BLOCK}")
                pending_size = int(records["size"])
        elif kind == b"L":
            pending_name = payload.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif kind in _REGULAR:
            yield TarEntry(name, data_offset, size, payload)


def iter_members(fileobj: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """``(name, data)`` for every regular file, in archive order."""
    for entry in iter_entries(fileobj):
        yield entry.name, entry.data


def split_name(name: str) -> tuple[str, str]:
    """WebDataset's split: key = up to the first dot of the last path component."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1 :]


def iter_samples(fileobj: BinaryIO, fields=None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {field: data})`` per sample; see the module docstring for the checks."""
    return group_samples(iter_members(fileobj), fields)


def group_samples(members, fields=None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Group an iterable of ``(name, data)`` into samples, as ``iter_samples`` does."""
    wanted = list(fields) if fields is not None else None
    seen: dict[str, frozenset] = {}
    key, sample = None, {}

    def finish():
        if wanted is not None:
            missing = [f for f in wanted if f not in sample]
            if missing:
                raise TarFormatError(f"sample {key} lacks field {missing[0]!r}")
            return key, {f: sample[f] for f in wanted}
        return key, sample

    for name, data in members:
        k, field = split_name(name)
        if not k or k.endswith("/"):  # hidden files such as .DS_Store carry no sample
            continue
        if k != key:
            if key is not None:
                seen[key] = frozenset(sample)
                yield finish()
            if k in seen:
                if field in seen[k]:
                    raise TarFormatError(f"duplicate key {k} (member {name!r} appears twice)")
                raise TarFormatError(f"members of sample {k} are not adjacent (member {name!r})")
            key, sample = k, {}
        if field in sample:
            raise TarFormatError(f"duplicate key {k} (member {name!r} appears twice)")
        sample[field] = data
    if key is not None:
        yield finish()
