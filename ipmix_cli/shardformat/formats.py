"""Encoding and decoding of sample images inside shards, and the measurement that picks a default.

Formats: png (lossless), npy (raw `np.save` of uint8 HxWx3), jpg and webp (lossy, quality
1..100). The default per training size comes from `measure_formats` (`ipmix bench build
--formats`; table in docs/shards.md): at 32 px PNG saves about half the bytes but costs
~100x more to encode and ~50x more to decode than raw npy, which would make PNG encoding
alone most of the build time and a real cost in the training loader, so small sizes are
stored as npy. At 224 px JPEG q95 (4:4:4) is ~7x smaller than PNG, keeps the augmentation
speckle (PSNR of the round trip in the table) and encodes/decodes faster than WebP.
"""

from __future__ import annotations

import io
import time

import numpy as np

from ipmix_cli.common.errors import IpmixError, OptionError
from ipmix_cli.shardformat.fields import FORMATS, canonical, image_format
from ipmix_cli.shardformat.tario import TarFormatError

LOSSY = tuple(f.name for f in FORMATS.values() if f.lossy)
PNG_COMPRESS_LEVEL = 6
_NPY_HEADERS: dict[tuple, bytes] = {}
_CANVAS = None  # a Canvas (one per thread), made by the first picture encoded


def default_format(image_size: int) -> tuple[str, int | None]:
    """(format, quality) chosen by measurement for this training size."""
    if image_size <= 64:
        return "npy", None
    return "jpg", 95


def resolve_format(fmt: str | None, quality: int | None, image_size: int) -> tuple[str, int | None]:
    if fmt is None:
        d_fmt, d_q = default_format(image_size)
        if quality is not None and d_fmt not in LOSSY:  # was silently ignored
            raise OptionError("{quality} applies to jpg and webp only; the default format at {size} px is {fmt} "
                              "(add {format} jpg or {format} webp)", size=image_size, fmt=d_fmt)
        return d_fmt, (quality if quality is not None and d_fmt in LOSSY else d_q)
    fmt = canonical(fmt)
    if fmt not in FORMATS:
        raise IpmixError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt in LOSSY:
        quality = 95 if quality is None else int(quality)
        if not 1 <= quality <= 100:
            raise OptionError("{quality} must be 1..100, not {value}", value=quality)
        return fmt, quality
    if quality is not None:
        raise OptionError("{quality} applies to jpg and webp only, not {fmt}", fmt=fmt)
    return fmt, None


def _canvas():
    # imported here: the Canvas brings Numba, which the tools that only decode need not import
    global _CANVAS
    if _CANVAS is None:
        from ipmix_cli.common.pixels import Canvas

        _CANVAS = Canvas()
    return _CANVAS


def _npy_header(shape: tuple) -> bytes:
    head = _NPY_HEADERS.get(shape)
    if head is None:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            buf, {"descr": "|u1", "fortran_order": False, "shape": tuple(int(s) for s in shape)})
        head = _NPY_HEADERS[shape] = buf.getvalue()
    return head


def encode(arr: np.ndarray, fmt: str, quality: int | None = None) -> bytes:
    """uint8 HxWx3 -> bytes of the given format (deterministic for a given library build)."""
    if fmt == "npy":
        arr = np.ascontiguousarray(arr, dtype=np.uint8)
        return _npy_header(arr.shape) + arr.tobytes()
    arr = np.asarray(arr, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise IpmixError(f"encode takes HxWx3 uint8 images, not {list(arr.shape)}")
    img = _canvas().image_of(arr)
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif fmt == "jpg":
        img.save(buf, format="JPEG", quality=int(quality), subsampling=0)
    elif fmt == "webp":
        img.save(buf, format="WEBP", quality=int(quality), method=4)
    else:
        raise IpmixError(f"unknown format {fmt!r}")
    return buf.getvalue()


def encode_column(images: np.ndarray, fmt: str, quality: int | None = None):
    """`encode` of every image of a [n, H, W, 3] uint8 block: npy as `Rows` (the .npy header and
    each picture's bytes, the same bytes per row as `encode`, no copy of the pixels), other
    formats as a list of bytes."""
    from ipmix_cli.shardformat.tarwriter import Rows

    if fmt != "npy":
        return [encode(im, fmt, quality) for im in images]
    n = len(images)
    rows = images.reshape(n, -1)  # a view when each picture is contiguous, as views[:, v] are
    return Rows(_npy_header(images.shape[1:]), rows if rows.strides[1] == 1 else np.ascontiguousarray(rows))


def decode_image(field: str, data: bytes) -> np.ndarray:
    """Decode one image payload by its field's extension (`png`, `aug1.jpg`...) to uint8 HxWx3;
    TarFormatError (an IpmixError) if it is not an image or does not decode."""
    ext = field.rsplit(".", 1)[-1].lower()
    fmt = image_format(field)
    if fmt is None:
        raise TarFormatError(f"field {field!r} is not an image (png, jpg, webp or npy)")
    if fmt.pil is None:
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as exc:
            raise TarFormatError(f"cannot decode .{ext} payload: {exc}") from None
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise TarFormatError(f"npy payload is {arr.dtype} {arr.shape}, expected uint8 HxWx3")
        return arr
    from fractalgen.errors import BadImage
    from fractalgen.images import load_rgb

    try:
        return load_rgb(data)
    except BadImage as exc:
        raise TarFormatError(f"cannot decode .{ext} payload: {exc}") from None


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def measure_formats(images, candidates, repeats: int = 3) -> list[dict]:
    """Size, encode and decode time, and round-trip PSNR of each (format, quality).

    `images` are uint8 HxWx3 arrays (ideally augmented samples: the speckle IPMix adds is
    what lossy codecs soften). Times are medians over `repeats` passes, per image.
    """
    rows = []
    for fmt, q in candidates:
        enc_t, dec_t = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            blobs = [encode(im, fmt, q) for im in images]
            t1 = time.perf_counter()
            back = [decode_image(fmt, b) for b in blobs]
            t2 = time.perf_counter()
            enc_t.append(t1 - t0)
            dec_t.append(t2 - t1)
        n = len(images)
        ps = [psnr(a, b) for a, b in zip(images, back)]
        finite = [p for p in ps if p != float("inf")]
        rows.append({
            "format": fmt, "quality": q,
            "bytes": float(np.mean([len(b) for b in blobs])),
            "encode_us": float(np.median(enc_t)) / n * 1e6,
            "decode_us": float(np.median(dec_t)) / n * 1e6,
            "psnr_db": float(np.mean(finite)) if finite else float("inf"),
        })
    return rows
