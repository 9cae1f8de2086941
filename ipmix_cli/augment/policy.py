"""The augmentation policy on one screen: every image-level op as one row of a table.

In the shape of timm's `NAME_TO_OP` / `LEVEL_TO_ARG`. Each call draws `level ~ U(0.1, severity)`
and turns it into the op's argument:

    M   = coef, or image size / coef where `by_size` (AugMix's `IMAGE_SIZE / 3`)
    mag = level * M / div, truncated to an int where `integer`
    arg = base + mag, or base - mag (probability 1/2) where `signed`

The Numba kernel (`ops.apply_op`) reads `TABLE`, these rows as an array; the per-image reference
(`reference.py`) calls each row's `pillow` function, the library call the kernel reproduces
byte for byte; `docs/augment.md` prints the same rows (a test holds the three together).

Where the authors' code differ, an op has one row per definition and each recipe names the row
it uses: IPMix's autocontrast clips `10 - level` percent from each tail, AugMix's and PixMix's
is Pillow's plain `ImageOps.autocontrast(img)` (cutoff 0, level unused).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

# ---------------------------------------------------------------- kernel ids (ops.apply_op)
# BYTE_TABLE: a per-byte op (posterize, solarize, invert), run as its table for the argument.
EQUALIZE, BYTE_TABLE, ROTATE, SHEAR_X, SHEAR_Y, TRANSLATE_X, TRANSLATE_Y = range(7)
MIRROR, AUTOCONTRAST, COLOR, CONTRAST, BRIGHTNESS, SHARPNESS = range(7, 13)

_BILINEAR = Image.BILINEAR


def _affine(img, matrix):
    return img.transform(img.size, Image.AFFINE, matrix, resample=_BILINEAR)


@dataclass(frozen=True)
class OpRow:
    name: str          # its name in op lists (`--aug ops=...`)
    kernel: int        # the Numba kernel that runs it
    base: float
    coef: float
    div: float
    integer: bool
    signed: bool
    by_size: bool      # M = size along the op's axis / coef
    pillow: Callable   # (PIL image, arg) -> PIL image
    source: str        # whose definition it is
    table_args: range = range(0)  # a BYTE_TABLE op: the integer arguments that have a table


_AUGMIX = "AugMix (IPMix and PixMix share it)"

ROWS = (
    #     name            kernel        base  coef  div integer signed by_size pillow
    OpRow("equalize",     EQUALIZE,     0,    0,    10, False, False, False,
          lambda img, arg: ImageOps.equalize(img), _AUGMIX),
    OpRow("posterize",    BYTE_TABLE,   4,    -4,   10, True,  False, False,
          lambda img, bits: ImageOps.posterize(img, int(bits)), _AUGMIX, range(1, 9)),
    OpRow("rotate",       ROTATE,       0,    30,   10, True,  True,  False,
          lambda img, deg: img.rotate(int(deg), resample=_BILINEAR), _AUGMIX),
    OpRow("solarize",     BYTE_TABLE,   256,  -256, 10, True,  False, False,
          lambda img, t: ImageOps.solarize(img, int(t)), _AUGMIX, range(0, 257)),
    OpRow("shear_x",      SHEAR_X,      0,    0.3,  10, False, True,  False,
          lambda img, s: _affine(img, (1, s, 0, 0, 1, 0)), _AUGMIX),
    OpRow("shear_y",      SHEAR_Y,      0,    0.3,  10, False, True,  False,
          lambda img, s: _affine(img, (1, 0, 0, s, 1, 0)), _AUGMIX),
    OpRow("translate_x",  TRANSLATE_X,  0,    3,    10, True,  True,  True,
          lambda img, t: _affine(img, (1, 0, int(t), 0, 1, 0)), _AUGMIX),
    OpRow("translate_y",  TRANSLATE_Y,  0,    3,    10, True,  True,  True,
          lambda img, t: _affine(img, (1, 0, 0, 0, 1, int(t))), _AUGMIX),
    OpRow("mirror",       MIRROR,       0,    0,    10, False, False, False,
          lambda img, arg: ImageOps.mirror(img), "IPMix"),
    OpRow("invert",       BYTE_TABLE,   0,    0,    10, False, False, False,
          lambda img, arg: ImageOps.invert(img), "IPMix", range(0, 1)),
    OpRow("autocontrast", AUTOCONTRAST, 10,   -1,   1,  False, False, False,
          lambda img, cutoff: ImageOps.autocontrast(img, cutoff), "IPMix (cutoff 10 - level %)"),
    OpRow("color",        COLOR,        0.1,  1.8,  10, False, False, False,
          lambda img, f: ImageEnhance.Color(img).enhance(f), _AUGMIX),
    OpRow("contrast",     CONTRAST,     0.1,  1.8,  10, False, False, False,
          lambda img, f: ImageEnhance.Contrast(img).enhance(f), _AUGMIX),
    OpRow("brightness",   BRIGHTNESS,   0.1,  1.8,  10, False, False, False,
          lambda img, f: ImageEnhance.Brightness(img).enhance(f), _AUGMIX),
    OpRow("sharpness",    SHARPNESS,    0.1,  1.8,  10, False, False, False,
          lambda img, f: ImageEnhance.Sharpness(img).enhance(f), _AUGMIX),
    OpRow("autocontrast", AUTOCONTRAST, 0,    0,    10, False, False, False,
          lambda img, arg: ImageOps.autocontrast(img), "AugMix, PixMix (cutoff 0)"),
)

IPMIX_AUTOCONTRAST, PLAIN_AUTOCONTRAST = 10, 15



def byte_tables() -> tuple[list[int], np.ndarray]:
    """Every table of the BYTE_TABLE rows, uint8 [n, 3, 256] (one table per channel, as the
    kernel applies equalize's), and where each row's tables start (-1 for other rows). The
    table for argument a is the row's Pillow call with argument a on an image that holds each
    byte value once: the op's own definition, so the kernel needs no code of its own for it."""
    values = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
    every_byte = Image.fromarray(values)  # 1 x 256 pixels, pixel v = (v, v, v)
    first, tables = [], []
    for row in ROWS:
        first.append(len(tables) if row.table_args else -1)
        tables.extend(np.asarray(row.pillow(every_byte, arg))[0].T for arg in row.table_args)
    return first, np.ascontiguousarray(np.stack(tables), dtype=np.uint8)


def mask_flip_form(table: np.ndarray) -> tuple[int, int]:
    """(mask, threshold) such that each channel of `table` (uint8 [3, 256]) maps v to `v & mask`,
    inverted where v >= threshold (0 <= threshold <= 256), or (-1, 0) when it has no such form.
    Posterize (threshold 256), solarize (mask 255) and invert have it: the kernel then computes
    the bytes instead of looking them up (ops.apply_lut3)."""
    v = np.arange(256)
    for mask in (int(table[0, 255]), int(table[0, 255]) ^ 255):  # v = 255 gives mask or ~mask
        flipped = (table[0].astype(int) ^ (v & mask)) == 255
        threshold = 256 - int(flipped.sum())
        expect = (v & mask) ^ np.where(v >= threshold, 255, 0)
        if (table == expect).all():
            return mask, threshold
    return -1, 0


_FIRST_TABLE, BYTE_TABLES = byte_tables()
BYTE_TABLE_FORMS = np.array([mask_flip_form(t) for t in BYTE_TABLES], dtype=np.int64)

# The columns of TABLE, the array the kernel reads (row i = op id i). A BYTE_TABLE row's
# argument a, clamped to [ARG_MIN, ARG_MAX], runs table FIRST_TABLE + a - ARG_MIN.
COL_KERNEL, COL_BASE, COL_COEF, COL_DIV, COL_INTEGER, COL_SIGNED, COL_BY_SIZE = range(7)
COL_FIRST_TABLE, COL_ARG_MIN, COL_ARG_MAX = range(7, 10)
TABLE = np.array([[r.kernel, r.base, r.coef, r.div, r.integer, r.signed, r.by_size, first,
                   r.table_args.start if r.table_args else 0, r.table_args[-1] if r.table_args else 0]
                  for r, first in zip(ROWS, _FIRST_TABLE)], dtype=np.float64)

# ---------------------------------------------------------------- each recipe's op lists
# IPMix's default list: AugMix's without autocontrast, plus mirror and invert; "all ops" adds
# autocontrast and the four enhance ops.
IPMIX_OPS = ("equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y",
             "translate_x", "translate_y", "mirror", "invert")
IPMIX_ALL_OPS = IPMIX_OPS + ("autocontrast", "color", "contrast", "brightness", "sharpness")
# AugMix's `augmentations` and `augmentations_all` (PixMix's pixmix_utils.py has the same two).
AUGMIX_OPS = ("autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y",
              "translate_x", "translate_y")
AUGMIX_ALL_OPS = AUGMIX_OPS + ("color", "contrast", "brightness", "sharpness")

OP_NAMES = tuple(dict.fromkeys(r.name for r in ROWS))  # every op name a list may hold
_AUTOCONTRAST_ROW = {"ipmix": IPMIX_AUTOCONTRAST, "augmix": PLAIN_AUTOCONTRAST,
                     "pixmix": PLAIN_AUTOCONTRAST, "none": PLAIN_AUTOCONTRAST}


def row_id(recipe: str, name: str) -> int:
    """The row (op id) `recipe` uses for the op `name`."""
    if name == "autocontrast":
        return _AUTOCONTRAST_ROW[recipe]
    return next(i for i, r in enumerate(ROWS) if r.name == name)


def argument(row: OpRow, level: float, size: int, negate: bool):
    """The op's argument for `level` (the kernel's arithmetic, step for step); `size` is the
    image's size along the op's axis, `negate` the sign draw of a signed row."""
    m = size / row.coef if row.by_size else row.coef
    mag = level * m / row.div
    if row.integer:
        mag = int(mag)
    if row.signed and negate:
        mag = -mag
    return row.base + mag


def rule_text(row: OpRow) -> str:
    """The level-to-argument rule of a row as a formula (what docs/augment.md prints)."""
    if row.coef == 0:
        return "none" if row.base == 0 else f"{row.base:g}"
    m = f"(size / {row.coef:g})" if row.by_size else f"{abs(row.coef):g}"
    mag = "level" if (abs(row.coef), row.div) == (1, 1) else f"level * {m} / {row.div:g}"
    if row.integer:
        mag = f"int({mag})"
    sign = "+-" if row.signed else ("-" if row.coef < 0 else "")
    if row.base == 0:
        return f"{sign}{mag}"
    return f"{row.base:g} {'-' if row.coef < 0 else '+'} {mag}"


def markdown_table() -> str:
    """The table as docs/augment.md prints it (a test holds the page to this text)."""
    lines = ["| id | op | argument from `level` | definition from |", "|---|---|---|---|"]
    for i, row in enumerate(ROWS):
        lines.append(f"| {i} | `{row.name}` | `{rule_text(row)}` | {row.source} |")
    return "\n".join(lines)
