"""A contact sheet of the first samples of one epoch, labelled with their class names."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from fractalgen.files import atomic_write_bytes
from fractalgen.images import contact_sheet
from ipmix_cli.common.errors import IpmixError, OptionError
from ipmix_cli.shardformat.fields import LABEL, META, sample_fields
from ipmix_cli.shardformat.formats import decode_image
from ipmix_cli.shardformat.manifest import MANIFEST
from ipmix_cli.shardformat.tario import iter_samples
from ipmix_cli.shards.verify import read_checked_manifest
from ipmix_cli.common.objstore import is_store_url

# Tiles smaller than this are enlarged (nearest neighbour, integer factor) so labels fit.
MIN_TILE = 64


def _first_samples(root, m, entry, n):
    fields = sample_fields(m.fields)
    for shard in entry.shards:
        path = root / shard.path
        if not path.is_file():
            raise IpmixError(f"{shard.path} is missing (run ipmix shards verify)")
        with path.open("rb") as f:
            for key, sample in iter_samples(f, fields=fields):
                yield key, sample
                n -= 1
                if n == 0:
                    return


def default_destination(out, epoch: int) -> Path:
    """`OUT-preview-epoch-EEEE.png` beside the shard folder, not inside it (like `fractals
    preview`): the folder holds only what the build wrote, so verify and stock readers see
    nothing foreign. For a shard folder in object storage: in the current folder."""
    if is_store_url(out):
        name = str(out).rstrip("/").removesuffix(f"/{MANIFEST}").rsplit("/", 1)[-1]
        return Path(f"{name}-preview-epoch-{epoch:04d}.png")
    root = Path(out)
    if root.is_file():
        root = root.parent
    if root.name in ("", ".", ".."):  # `preview .` has no name of its own
        root = root.resolve()
    return root.parent / f"{root.name}-preview-epoch-{epoch:04d}.png"


def preview(out, dest_png=None, epoch: int = 0, n: int = 32, storage_options: dict | None = None) -> dict:
    """Write a PNG contact sheet of the first `n` samples of `epoch` to `dest_png` (default:
    `default_destination(out, epoch)`).

    One tile per sample labelled with its class name (a trailing `*` marks a padding draw);
    with three views each sample is three tiles side by side: clean | aug1 | aug2.
    """
    if n < 1:
        raise OptionError("{n} must be at least 1, got {got}", got=n)
    dest = Path(dest_png) if dest_png is not None else default_destination(out, epoch)
    if dest.is_dir():
        raise IpmixError(f"cannot write {dest}: it is a folder; give a file name, e.g. {dest / 'preview.png'}")
    if dest.suffix.lower() != ".png":  # never write a picture over a shard, a manifest or other data
        raise IpmixError(f"the contact sheet is a PNG: give a file name ending in .png, not {dest.name}")
    root, m = read_checked_manifest(out, storage_options)
    entry = m.epoch(epoch)
    if entry is None:
        raise IpmixError(f"epoch {epoch} is not in {root} (it has epochs 0..{len(m.epochs) - 1})")
    scale = max(1, MIN_TILE // m.image_size)
    tiles, labels, count = [], [], 0
    for key, sample in _first_samples(root, m, entry, n):
        label = int(sample[LABEL])
        name = m.classes[label] if 0 <= label < len(m.classes) else f"?{label}"
        if json.loads(sample[META]).get("pad"):
            name += "*"
        for i, field in enumerate(m.fields):
            arr = decode_image(field, sample[field])
            if scale > 1:
                arr = np.repeat(np.repeat(arr, scale, axis=0), scale, axis=1)
            tiles.append(arr)
            labels.append(name if i == 0 else field.split(".", 1)[0])
        count += 1
    if not tiles:
        raise IpmixError(f"epoch {epoch} of {root} holds no samples")
    per_row = 8 if m.views == 1 else 4
    sheet = contact_sheet(tiles, cols=per_row * m.views, labels=labels)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    if dest.parent and not dest.parent.is_dir():
        raise IpmixError(f"cannot write {dest}: folder {dest.parent} does not exist")
    atomic_write_bytes(dest, buf.getvalue())
    return {"path": str(dest), "epoch": epoch, "samples": count, "tiles": len(tiles),
            "width": sheet.size[0], "height": sheet.size[1]}
