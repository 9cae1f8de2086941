"""Decode the image payloads of many samples at once into a uint8 [n, S, S, 3] array.

`.npy` payloads are copied out in one Numba pass. PNG payloads written as 8-bit RGB
(what the shard builder writes) go through zlib plus a Numba row-unfilter, several times
faster than PIL per 32x32 image; any other PNG, and JPEG/WebP, go through PIL."""

from __future__ import annotations

import ast
import io
import zlib

import numpy as np
from numba import njit
from PIL import Image

from ipmix_cli.shardformat.fields import extension, image_format

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"


class PayloadError(Exception):
    """A payload that does not decode to the expected image; `.row` is the sample row."""

    def __init__(self, row: int, reason: str):
        super().__init__(reason)
        self.row = row
        self.reason = reason


@njit(cache=True)
def copy_spans(buf, offs, length, out):
    """out[i, :] = buf[offs[i] : offs[i] + length] for every row i."""
    for i in range(offs.size):
        o = offs[i]
        for j in range(length):
            out[i, j] = buf[o + j]


@njit(cache=True)
def first_mismatch(buf, offs, length, ref):
    """Index of the first row whose span differs from ref, or -1."""
    for i in range(offs.size):
        o = offs[i]
        for j in range(length):
            if buf[o + j] != ref[j]:
                return i
    return -1


def _npy_header(payload: bytes) -> tuple[int, tuple, str, bool]:
    """(data offset, shape, dtype descr, fortran) of an .npy payload."""
    if payload[:6] != NPY_MAGIC or len(payload) < 10:
        raise ValueError("not an .npy payload")
    major = payload[6]
    if major == 1:
        hlen = int.from_bytes(payload[8:10], "little")
        start = 10
    elif major in (2, 3):
        hlen = int.from_bytes(payload[8:12], "little")
        start = 12
    else:
        raise ValueError(f"unknown .npy version {major}")
    header = ast.literal_eval(payload[start : start + hlen].decode("latin1"))
    return start + hlen, tuple(header["shape"]), header["descr"], bool(header["fortran_order"])


def decode_npy(buf: np.ndarray, offs: np.ndarray, sizes: np.ndarray, size: int, out: np.ndarray) -> None:
    n = offs.size
    if n == 0:
        return
    want = size * size * 3
    first = bytes(buf[offs[0] : offs[0] + sizes[0]])
    try:
        data_at, shape, descr, fortran = _npy_header(first)
    except (ValueError, SyntaxError, KeyError, UnicodeDecodeError) as exc:
        raise PayloadError(0, f"bad .npy payload ({exc})") from None
    if shape != (size, size, 3) or descr not in ("|u1", "<u1", ">u1") or fortran:
        raise PayloadError(0, f".npy payload holds {descr} {shape}, expected uint8 ({size}, {size}, 3)")
    if data_at + want != sizes[0]:
        raise PayloadError(0, ".npy payload has the wrong length")
    bad = np.nonzero(sizes != sizes[0])[0]
    if bad.size:
        raise PayloadError(int(bad[0]), ".npy payload has a different length from its neighbours")
    ref = np.frombuffer(first[:data_at], np.uint8)
    row = first_mismatch(buf, offs, data_at, ref)
    if row >= 0:
        raise PayloadError(int(row), ".npy payload header differs (not uint8 HxWx3)")
    flat = np.empty((n, want), np.uint8)
    copy_spans(buf, offs + data_at, want, flat)
    out[...] = flat.reshape(n, size, size, 3)


@njit(cache=True)
def png_locate(buf, offs, sizes, width, height):
    """For each PNG payload: (status, IDAT start, IDAT length). status 0 = 8-bit RGB,
    non-interlaced, one IDAT chunk, size as expected (fast path); 1 = valid PNG signature
    but some other layout (decode with PIL); 2 = not a PNG or size mismatch."""
    n = offs.size
    status = np.zeros(n, np.int64)
    idat_at = np.zeros(n, np.int64)
    idat_len = np.zeros(n, np.int64)
    sig = np.array([137, 80, 78, 71, 13, 10, 26, 10], np.uint8)
    for i in range(n):
        o = offs[i]
        end = o + sizes[i]
        if sizes[i] < 8 + 25:
            status[i] = 2
            continue
        ok = True
        for j in range(8):
            if buf[o + j] != sig[j]:
                ok = False
        if not ok:
            status[i] = 2
            continue
        p = o + 8
        found = 0
        st = 0
        first_chunk = True
        while p + 12 <= end:
            ln = (np.int64(buf[p]) << 24) | (np.int64(buf[p + 1]) << 16) | (np.int64(buf[p + 2]) << 8) | np.int64(buf[p + 3])
            t0 = buf[p + 4]
            t1 = buf[p + 5]
            t2 = buf[p + 6]
            t3 = buf[p + 7]
            data = p + 8
            if data + ln + 4 > end:
                st = 2
                break
            if first_chunk:
                first_chunk = False
                if not (t0 == 73 and t1 == 72 and t2 == 68 and t3 == 82) or ln != 13:  # IHDR
                    st = 2
                    break
                w = (np.int64(buf[data]) << 24) | (np.int64(buf[data + 1]) << 16) | (np.int64(buf[data + 2]) << 8) | np.int64(buf[data + 3])
                h = (np.int64(buf[data + 4]) << 24) | (np.int64(buf[data + 5]) << 16) | (np.int64(buf[data + 6]) << 8) | np.int64(buf[data + 7])
                if w != width or h != height:
                    st = 2
                    break
                if buf[data + 8] != 8 or buf[data + 9] != 2 or buf[data + 12] != 0:
                    st = 1
            elif t0 == 73 and t1 == 68 and t2 == 65 and t3 == 84:  # IDAT
                found += 1
                idat_at[i] = data
                idat_len[i] = ln
            elif t0 == 73 and t1 == 69 and t2 == 78 and t3 == 68:  # IEND
                break
            p = data + ln + 4
        if st == 0 and found != 1:
            st = 1 if found > 1 else 2
        status[i] = st
    return status, idat_at, idat_len


@njit(cache=True)
def png_unfilter(raw, n, height, stride, out):
    """Undo PNG row filters (3 bytes per pixel) for n images of `height` rows of `stride`
    bytes, each row prefixed by its filter byte; out is uint8 [n, height, stride].
    Returns the index of the first image with an unknown filter type, or -1."""
    flat = out.reshape(n * height * stride)
    for i in range(n):
        for y in range(height):
            r = (i * height + y) * (stride + 1)
            f = raw[r]
            r += 1
            o = (i * height + y) * stride
            p = o - stride  # the previous row (only read when y > 0)
            if f == 0 or (f == 2 and y == 0):
                for x in range(stride):
                    flat[o + x] = raw[r + x]
            elif f == 1 or (f == 4 and y == 0):  # Paeth with a zero row above is Sub
                for x in range(3):
                    flat[o + x] = raw[r + x]
                for x in range(3, stride):
                    flat[o + x] = (np.int32(raw[r + x]) + flat[o + x - 3]) & 255
            elif f == 2:
                for x in range(stride):
                    flat[o + x] = (np.int32(raw[r + x]) + flat[p + x]) & 255
            elif f == 3:
                if y == 0:
                    for x in range(3):
                        flat[o + x] = raw[r + x]
                    for x in range(3, stride):
                        flat[o + x] = (np.int32(raw[r + x]) + (flat[o + x - 3] >> 1)) & 255
                else:
                    for x in range(3):
                        flat[o + x] = (np.int32(raw[r + x]) + (flat[p + x] >> 1)) & 255
                    for x in range(3, stride):
                        avg = (np.int32(flat[o + x - 3]) + np.int32(flat[p + x])) >> 1
                        flat[o + x] = (np.int32(raw[r + x]) + avg) & 255
            elif f == 4:
                for x in range(3):
                    flat[o + x] = (np.int32(raw[r + x]) + flat[p + x]) & 255
                for x in range(3, stride):
                    a = np.int32(flat[o + x - 3])
                    b = np.int32(flat[p + x])
                    c = np.int32(flat[p + x - 3])
                    pa = abs(b - c)
                    pb = abs(a - c)
                    pc = abs(a + b - 2 * c)
                    if pa <= pb and pa <= pc:
                        pred = a
                    elif pb <= pc:
                        pred = b
                    else:
                        pred = c
                    flat[o + x] = (np.int32(raw[r + x]) + pred) & 255
            else:
                return i
    return -1


def decode_pil_one(payload, size: int) -> np.ndarray:
    """Any picture PIL reads → uint8 [size, size, 3]; ValueError with a reason otherwise."""
    try:
        with Image.open(io.BytesIO(payload)) as img:
            img.load()
            if img.mode != "RGB":
                img = img.convert("RGB")
            arr = np.asarray(img)
    except Exception as exc:  # PIL raises many types for broken data
        raise ValueError(f"cannot decode image ({type(exc).__name__}: {exc})") from None
    if arr.shape != (size, size, 3):
        raise ValueError(f"image is {arr.shape[1]}x{arr.shape[0]}, manifest says {size}x{size}")
    return arr


def decode_pil(buf, offs, sizes, size, out) -> None:
    for i in range(offs.size):
        try:
            out[i] = decode_pil_one(buf[offs[i] : offs[i] + sizes[i]], size)
        except ValueError as exc:
            raise PayloadError(i, str(exc)) from None


def decode_png(buf, offs, sizes, size, out) -> None:
    n = offs.size
    if n == 0:
        return
    status, at, ln = png_locate(buf, offs, sizes, size, size)
    fast = np.nonzero(status == 0)[0]
    stride = size * 3
    if fast.size:
        pieces = []
        mv = memoryview(buf)
        want = size * (stride + 1)
        for i in fast:
            try:
                raw = zlib.decompress(mv[at[i] : at[i] + ln[i]], 15, want)
            except zlib.error as exc:
                raise PayloadError(int(i), f"corrupt PNG data ({exc})") from None
            if len(raw) != want:
                raise PayloadError(int(i), "PNG data has the wrong length")
            pieces.append(raw)
        decoded = np.empty((fast.size, size, stride), np.uint8)
        bad = png_unfilter(np.frombuffer(b"".join(pieces), np.uint8), fast.size, size, stride, decoded)
        if bad >= 0:
            raise PayloadError(int(fast[bad]), "PNG row has an unknown filter type")
        if fast.size == n:
            out[...] = decoded.reshape(n, size, size, 3)
        else:
            out[fast] = decoded.reshape(-1, size, size, 3)
    for i in np.nonzero(status != 0)[0]:
        try:
            out[i] = decode_pil_one(buf[offs[i] : offs[i] + sizes[i]], size)
        except ValueError as exc:
            raise PayloadError(int(i), str(exc)) from None


BATCH_DECODERS = {"npy": decode_npy, "png": decode_png, "jpg": decode_pil, "webp": decode_pil}  # by FORMATS name


def decoder_for(field: str):
    """The batch decoder for a field name such as `png` or `aug1.png`."""
    fmt = image_format(field)
    if fmt is None:
        raise ValueError(f"field {field!r}: unknown image format {extension(field)!r} (png, jpg, webp or npy)")
    return BATCH_DECODERS[fmt.name]
