"""The members of a sample and the image formats they are stored in: the one table the shard
writer and every reader consult (no heavy imports, so the CLI can read it for its choices).

A sample is the tar members `<key>.<field>`, adjacent and in this order: the image fields
(`<fmt>` for one view, `clean.<fmt>`, `aug1.<fmt>`, `aug2.<fmt>` for the JSD triple), then
`cls` (the label as decimal text) and `json` (`{"index": source index, "pad": bool}`).
"""

from __future__ import annotations

from typing import NamedTuple


class ImageFormat(NamedTuple):
    name: str  # the field extension ipmix writes
    pil: str | None  # Pillow's format name; None for raw `np.save` bytes
    lossy: bool  # takes a quality 1..100
    raw_ratio: float  # bytes on disk / raw pixel bytes, measured; for --dry-run estimates


# In the order error messages and `--format` list them.
FORMATS: dict[str, ImageFormat] = {f.name: f for f in (
    ImageFormat("png", "PNG", False, 0.7),
    ImageFormat("npy", None, False, 1.0),
    ImageFormat("jpg", "JPEG", True, 0.19),
    ImageFormat("webp", "WEBP", True, 0.12),
)}
ALIASES = {"jpeg": "jpg"}  # read, and accepted by --format, but never written
READ_EXTENSIONS = tuple(FORMATS) + tuple(ALIASES)
LABEL = "cls"
META = "json"
VIEW_NAMES = ("clean", "aug1", "aug2")  # the JSD triple's image fields, in member order


def canonical(ext: str) -> str:
    """`jpeg`/`JPG` -> `jpg`; an unknown extension comes back lower-cased."""
    ext = ext.lower()
    return ALIASES.get(ext, ext)


def extension(field: str) -> str:
    """The part after the last dot: `aug1.png` -> `png`."""
    return field.rsplit(".", 1)[-1].lower()


def image_format(field: str) -> ImageFormat | None:
    """The format of an image field such as `png` or `aug1.jpeg`; None if it is not one."""
    return FORMATS.get(canonical(extension(field)))


def image_fields(views: int, fmt: str) -> list[str]:
    return [fmt] if views == 1 else [f"{name}.{fmt}" for name in VIEW_NAMES]


def sample_fields(image_field_names) -> list[str]:
    """Every member of a sample, in the order the writer puts them."""
    return list(image_field_names) + [LABEL, META]
