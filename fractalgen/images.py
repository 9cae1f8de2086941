"""Decode any common picture into uint8 RGB, safely, and lay pictures out on a sheet."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fractalgen.errors import BadImage

# Pictures above this many pixels are refused before decoding (decompression-bomb guard).
MAX_PIXELS = 64_000_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def picture_files(folder: str | os.PathLike) -> list[Path]:
    """Every picture file in `folder` and its sub-folders (hidden ones skipped), sorted by path
    parts: class folders in name order, as an ImageFolder lists them. Empty if there are none."""
    folder = Path(folder)
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root, n) for n in names if is_image_name(n) and not n.startswith(".")]
    return sorted((p for p in found if p.is_file()), key=lambda p: p.relative_to(folder).parts)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: alpha is composited on black, 16-bit scaled to 8-bit."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        return Image.fromarray(np.nan_to_num(arr).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")
    return img


def open_rgb(source: str | os.PathLike | bytes, min_size: int = 1, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open, fully decode and convert a picture to RGB with EXIF orientation applied.

    Raises BadImage with a short reason: unreadable, not-an-image, truncated, too-large,
    too-small.
    """
    try:
        fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    except OSError as exc:
        raise BadImage("unreadable", str(exc.strerror or exc)) from None
    with fp:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                img = Image.open(fp)
                w, h = img.size
                if w * h > max_pixels:
                    raise BadImage("too-large", f"{w}x{h} pixels exceeds {max_pixels}")
                img.load()
            except BadImage:
                raise
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise BadImage("too-large", str(exc)) from None
            except Image.UnidentifiedImageError:
                raise BadImage("not-an-image", "not a recognised picture format") from None
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                raise BadImage("truncated", str(exc) or type(exc).__name__) from None
    if min(img.size) < min_size:
        raise BadImage("too-small", f"{img.size[0]}x{img.size[1]} is below {min_size} px")
    try:
        # in place: without an orientation tag this costs nothing instead of a full copy
        ImageOps.exif_transpose(img, in_place=True)
    except Exception:  # a broken EXIF block is not worth losing the picture over
        pass
    return to_rgb(img)


def load_rgb(source, min_size: int = 1, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """`open_rgb` as an HxWx3 uint8 array."""
    return np.asarray(open_rgb(source, min_size, max_pixels), dtype=np.uint8)


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is `size` (bicubic, antialiased) and centre-crop a square."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def contact_sheet(images, cols: int = 8, pad: int = 2, labels=None, background=(24, 24, 24)) -> Image.Image:
    """Lay equal-size HxWx3 uint8 arrays on a grid; optional short text label under each."""
    images = [np.asarray(im, dtype=np.uint8) for im in images]
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    h, w = images[0].shape[:2]
    cols = max(1, min(cols, len(images)))
    rows = -(-len(images) // cols)
    label_h = 12 if labels is not None else 0
    sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad + label_h) + pad), background)
    if labels is not None:
        from PIL import ImageDraw

        draw = ImageDraw.Draw(sheet)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        x, y = pad + c * (w + pad), pad + r * (h + pad + label_h)
        if im.shape[:2] != (h, w):
            im = np.asarray(Image.fromarray(im).resize((w, h), Image.BILINEAR))
        sheet.paste(Image.fromarray(im), (x, y))
        if labels is not None:
            draw.text((x + 1, y + h), str(labels[i])[: max(1, w // 6)], fill=(230, 230, 230))
    return sheet
