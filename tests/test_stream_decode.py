"""The fast decoders and tar index held against PIL, np.load and tarfile."""

from __future__ import annotations

import io
import struct
import tarfile
import zlib

import numpy as np
import pytest
from PIL import Image

from _stream_helpers import encode
from ipmix_cli.shardformat.decode import decode_npy, decode_png
from ipmix_cli.stream.reader import ShardError, ShardIndex

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def png_with_filters(arr: np.ndarray, filters, idat_parts: int = 1) -> bytes:
    """An 8-bit RGB PNG whose row y uses filter filters[y % len(filters)]."""
    h, w, _ = arr.shape
    x = arr.reshape(h, w * 3).astype(np.int64)
    rows = []
    for y in range(h):
        f = filters[y % len(filters)]
        cur = x[y]
        prev = x[y - 1] if y else np.zeros_like(cur)
        left = np.concatenate([np.zeros(3, np.int64), cur[:-3]])
        upleft = np.concatenate([np.zeros(3, np.int64), prev[:-3]])
        pred = [np.zeros_like(cur), left, prev, (left + prev) // 2, _paeth(left, prev, upleft)][f]
        rows.append(bytes([f]) + ((cur - pred) % 256).astype(np.uint8).tobytes())
    data = zlib.compress(b"".join(rows))
    step = -(-len(data) // idat_parts)
    idats = b"".join(_chunk(b"IDAT", data[i : i + step]) for i in range(0, len(data), step))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + idats + _chunk(b"IEND", b"")


def _decode_all(payloads, decoder, size):
    buf = np.frombuffer(b"".join(payloads), np.uint8)
    sizes = np.array([len(p) for p in payloads], np.int64)
    offs = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    out = np.zeros((len(payloads), size, size, 3), np.uint8)
    decoder(buf, offs, sizes, size, out)
    return out


def test_png_fast_path_matches_pil_for_every_filter():
    rng = np.random.default_rng(3)
    images, payloads = [], []
    for filters in ([0], [1], [2], [3], [4], [0, 1, 2, 3, 4], [4, 3, 2, 1]):
        for smooth in (False, True):
            arr = rng.integers(0, 256, (11, 11, 3)).astype(np.uint8)
            if smooth:
                arr = np.cumsum(arr // 40, axis=1).astype(np.uint8)
            images.append(arr)
            payloads.append(png_with_filters(arr, filters))
    # and what PIL itself writes, at several compression levels
    for level in (0, 1, 6, 9):
        arr = rng.integers(0, 256, (11, 11, 3)).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG", compress_level=level)
        images.append(arr)
        payloads.append(buf.getvalue())
    out = _decode_all(payloads, decode_png, 11)
    for got, arr, payload in zip(out, images, payloads):
        pil = np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"))
        np.testing.assert_array_equal(pil, arr)
        np.testing.assert_array_equal(got, pil)


def test_png_other_layouts_fall_back_to_pil():
    rng = np.random.default_rng(4)
    arr = rng.integers(0, 256, (9, 9, 3)).astype(np.uint8)
    payloads = [png_with_filters(arr, [4], idat_parts=3), png_with_filters(arr, [1])]
    for mode in ("L", "RGBA", "P"):
        buf = io.BytesIO()
        Image.fromarray(arr).convert(mode).save(buf, format="PNG")
        payloads.append(buf.getvalue())
    out = _decode_all(payloads, decode_png, 9)
    np.testing.assert_array_equal(out[0], arr)
    np.testing.assert_array_equal(out[1], arr)
    for got, payload in zip(out[2:], payloads[2:]):
        np.testing.assert_array_equal(got, np.asarray(Image.open(io.BytesIO(payload)).convert("RGB")))


def test_bad_payloads_report_their_row():
    arr = np.zeros((5, 5, 3), np.uint8)
    good = png_with_filters(arr, [0])
    broken = bytearray(good)
    broken[45:60] = bytes(range(15))
    with pytest.raises(Exception) as info:
        _decode_all([good, bytes(broken)], decode_png, 5)
    assert getattr(info.value, "row", None) == 1
    with pytest.raises(Exception, match="manifest says 4x4"):
        _decode_all([good], decode_png, 4)


def test_npy_matches_np_load():
    rng = np.random.default_rng(5)
    arrays = [rng.integers(0, 256, (7, 7, 3)).astype(np.uint8) for _ in range(4)]
    out = _decode_all([encode(a, "npy") for a in arrays], decode_npy, 7)
    for got, payload in zip(out, [encode(a, "npy") for a in arrays]):
        np.testing.assert_array_equal(got, np.load(io.BytesIO(payload)))
    with pytest.raises(Exception, match="expected uint8"):
        _decode_all([encode(arrays[0].astype(np.int16), "npy")], decode_npy, 7)


def _tar(members, fmt=tarfile.USTAR_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_tar_index_matches_tarfile():
    members = []
    for i in range(4):
        members += [(f"s{i:03d}.png", bytes([i]) * (100 + 600 * i)), (f"s{i:03d}.cls", str(i * 3).encode()),
                    (f"s{i:03d}.json", b"{}")]
    raw = _tar(members)
    index = ShardIndex("x.tar", np.frombuffer(raw, np.uint8), ["png"], 4)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        pngs = [(m.offset_data, m.size) for m in tar.getmembers() if m.name.endswith(".png")]
    assert index.count == 4
    assert [index.key(i) for i in range(4)] == ["s000", "s001", "s002", "s003"]
    assert list(zip(index.field_off[:, 0], index.field_size[:, 0])) == pngs
    assert index.label.tolist() == [0, 3, 6, 9]


@pytest.mark.parametrize("damage,reason", [
    (lambda raw: raw[:700], "truncated"),
    (lambda raw: raw[:100] + b"X" + raw[101:], "checksum"),
    (lambda raw: raw, "has no 'png' member"),
])
def test_tar_index_errors(damage, reason):
    members = [("a.png", b"1"), ("a.cls", b"0"), ("b.cls", b"1")]
    raw = damage(_tar(members))
    with pytest.raises(ShardError, match=reason):
        ShardIndex("x.tar", np.frombuffer(raw, np.uint8), ["png"], None)


def test_tar_index_rejects_bad_label_and_wrong_count():
    raw = _tar([("a.png", b"1"), ("a.cls", b"x1")])
    with pytest.raises(ShardError, match="unreadable label"):
        ShardIndex("x.tar", np.frombuffer(raw, np.uint8), ["png"], None)
    raw = _tar([("a.png", b"1"), ("a.cls", b" 12\n")])
    assert ShardIndex("x.tar", np.frombuffer(raw, np.uint8), ["png"], 1).label.tolist() == [12]
    with pytest.raises(ShardError, match="holds 1 samples, the manifest says 2"):
        ShardIndex("x.tar", np.frombuffer(raw, np.uint8), ["png"], 2)


@pytest.mark.parametrize("fmt", ["png", "npy"])
def test_warm_up_compiles_what_reading_uses(tmp_path, fmt):
    # DataLoader workers inherit the kernels compiled before they fork; reading must not
    # need a signature the warm-up in ShardLoader() did not compile.
    from _stream_helpers import collect, make_shards
    from ipmix_cli.shardformat import decode, tarscan
    from ipmix_cli.stream import ShardLoader

    make_shards(tmp_path, shard_counts=(5, 4), epochs=1, fmt=fmt, size=8, views=3)
    loader = ShardLoader(tmp_path, 2)

    def signatures():
        return {(m.__name__, f): len(getattr(m, f).signatures) for m in (decode, tarscan)
                for f in dir(m) if hasattr(getattr(m, f), "signatures")}

    before = signatures()
    assert collect(loader)[0].shape[0] == 8
    assert signatures() == before
