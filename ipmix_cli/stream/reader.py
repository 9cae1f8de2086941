"""Read samples out of one shard: open (local file via mmap, or any webdataset URL such as
`pipe:...` through webdataset's gopen), index it once, decode ranges of samples."""

from __future__ import annotations

import mmap
import os
import re

import numpy as np

from ipmix_cli.shardformat.decode import PayloadError, decoder_for
from ipmix_cli.shardformat.fields import LABEL, image_format
from ipmix_cli.shardformat.tarscan import SCAN_MESSAGES, SCAN_OK, group_samples, scan_members


class ShardError(Exception):
    """A shard that cannot be read as the manifest describes it."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"shard {name}: {reason}")
        self.name = name
        self.reason = reason


def is_url(path: str) -> bool:
    return path.startswith("pipe:") or "://" in path


def read_url(url: str) -> bytes:
    """All bytes behind a webdataset URL (http(s)://, pipe:, ...); OSError/ValueError if unreadable."""
    from webdataset.gopen import gopen

    stream = gopen(url, "rb")
    try:
        return stream.read()
    finally:
        stream.close()


def load_bytes(url: str, name: str) -> np.ndarray:
    """The whole shard as a read-only uint8 array (memory-mapped when local)."""
    if is_url(url):
        try:
            data = read_url(url)
        except (OSError, ValueError) as exc:
            status = re.search(r"exit (\d+)", str(exc))
            why = f"the command exited with status {status.group(1)}" if status else str(exc).splitlines()[0]
            raise ShardError(name, f"cannot read {url}: {why}") from None
        if not data:
            raise ShardError(name, f"{url} gave no data")
        return np.frombuffer(data, np.uint8)
    try:
        with open(url, "rb") as fh:
            length = os.fstat(fh.fileno()).st_size
            if length == 0:
                raise ShardError(name, "is empty")
            try:
                mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):  # a file system without mmap: read it instead
                return np.frombuffer(fh.read(), np.uint8)
    except FileNotFoundError:
        raise ShardError(name, "is missing") from None
    except ShardError:
        raise
    except OSError as exc:
        raise ShardError(name, f"cannot be read ({exc.strerror or exc})") from None
    return np.frombuffer(mapped, np.uint8)


class ShardIndex:
    """Where each sample's fields sit inside one shard held in memory."""

    def __init__(self, name: str, buf: np.ndarray, fields: list[str], expected: int | None):
        self.name = name
        self.buf = buf
        self.fields = list(fields)
        count, err, err_at, name_start, name_len, key_len, data_off, size = scan_members(buf)
        if err != SCAN_OK:
            raise ShardError(name, f"{SCAN_MESSAGES[err]} at byte {err_at}")
        wanted = self.fields + [LABEL]
        sfx = np.frombuffer("".join(wanted).encode("ascii"), np.uint8)
        sfx_off = np.cumsum([0] + [len(w) for w in wanted]).astype(np.int64)
        ns, first, field_off, field_size, label = group_samples(
            buf, count, name_start, name_len, key_len, data_off, size, sfx, sfx_off, len(wanted) - 1
        )
        self.count = int(ns)
        self._first = first
        self._name_start = name_start
        self._key_len = key_len
        self.field_off = field_off
        self.field_size = field_size
        self.label = label
        if expected is not None and self.count != expected:
            raise ShardError(name, f"holds {self.count} samples, the manifest says {expected}")
        missing = np.argwhere(field_off < 0)
        if missing.size:
            row, col = (int(v) for v in missing[0])
            raise ShardError(name, f"sample {self.key(row)} has no {wanted[col]!r} member")
        bad = np.nonzero(label < 0)[0]
        if bad.size:
            raise ShardError(name, f"sample {self.key(int(bad[0]))} has an unreadable label")

    def key(self, row: int) -> str:
        m = self._first[row]
        start = self._name_start[m]
        return bytes(self.buf[start : start + self._key_len[m]]).decode("utf-8", "replace")

    def decode(self, start: int, stop: int, size: int, out_images: np.ndarray, out_labels: np.ndarray, num_classes: int) -> None:
        """Decode samples [start, stop) into out_images [n, V, S, S, 3] and out_labels [n]."""
        labels = self.label[start:stop]
        if labels.size and int(labels.max()) >= num_classes:
            row = start + int(np.argmax(labels >= num_classes))
            raise ShardError(self.name, f"sample {self.key(row)} has label {self.label[row]}, beyond the {num_classes} classes")
        out_labels[...] = labels
        for v, field in enumerate(self.fields):
            try:
                decoder_for(field)(
                    self.buf,
                    # contiguous copies: one compiled signature for every layout (see warm_up)
                    np.ascontiguousarray(self.field_off[start:stop, v]),
                    np.ascontiguousarray(self.field_size[start:stop, v]),
                    size,
                    out_images[:, v],
                )
            except PayloadError as exc:
                raise ShardError(self.name, f"sample {self.key(start + exc.row)} field {field!r}: {exc.reason}") from None


def index_shard(url: str, name: str, fields: list[str], expected: int | None) -> ShardIndex:
    return ShardIndex(name, load_bytes(url, name), fields, expected)


_WARM: set = set()


def _tiny_tar(members) -> bytes:
    import io

    from ipmix_cli.shardformat.tarwriter import TarWriter

    buf = io.BytesIO()
    writer = TarWriter(buf)
    for name, data in members:
        writer.add(name, data)
    writer.close()
    return buf.getvalue()


def warm_up(fields: list[str], size: int) -> None:
    """Compile (or load from Numba's cache) every kernel the real read path uses, once per
    process, by reading a one-sample shard made in memory. DataLoader workers forked later
    inherit the compiled code instead of each compiling it again."""
    exts = tuple(sorted({image_format(f).name for f in fields}))
    if exts in _WARM:
        return
    import io

    from PIL import Image

    img = np.zeros((size, size, 3), np.uint8)
    members = []
    for f in fields:
        pil_format = image_format(f).pil
        payload = io.BytesIO()
        if pil_format is None:
            np.save(payload, img)
        else:
            Image.fromarray(img).save(payload, format=pil_format)
        members.append((f"warm.{f}", payload.getvalue()))
    members.append(("warm.cls", b"0"))
    index = ShardIndex("warm-up", np.frombuffer(_tiny_tar(members), np.uint8), fields, 1)
    index.decode(0, 1, size, np.empty((1, len(fields), size, size, 3), np.uint8), np.empty(1, np.int64), 1)
    _WARM.add(exts)
