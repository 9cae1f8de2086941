"""Look at a rendered set: which pictures it holds (by family), their quality metrics and a
contact sheet. Works on any folder of pictures; the manifest, when present, names families."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fractalgen.errors import BadImage, FractalgenError
from fractalgen.images import contact_sheet, load_rgb, picture_files
from fractalgen.metrics import set_metrics
from fractalgen.render import read_manifest


def pictures_by_family(out) -> dict[str, list[Path]]:
    """Picture files in `out` and its sub-folders (`picture_files` order), grouped by family (manifest family, or
    the name's prefix before '-', or 'other')."""
    out = Path(out)
    if not out.is_dir():
        raise FractalgenError(f"{out} is not a folder")
    manifest = read_manifest(out)
    family_of = {e["file"]: e["family"] for e in (manifest or {}).get("images", [])}
    groups: dict[str, list[Path]] = {}
    for path in picture_files(out):
        fam = family_of.get(path.relative_to(out).as_posix()) or (path.name.split("-")[0] if "-" in path.name
                                                                    else "other")
        groups.setdefault(fam, []).append(path)
    if not groups:
        raise FractalgenError(f"{out} holds no pictures")
    return groups


def _spread(paths: list, k: int) -> list:
    """k items evenly spread over the list (all of them if k >= len)."""
    if k >= len(paths):
        return list(paths)
    return [paths[i] for i in np.linspace(0, len(paths) - 1, k).round().astype(int)]


def _load(paths):
    images = []
    for p in paths:
        try:
            images.append(load_rgb(p))
        except BadImage:
            continue
    return images


def set_stats(out, sample: int = 256) -> dict:
    """Quality metrics per family and for the whole set, on up to `sample` pictures per family
    (evenly spread). Families with fewer than two pictures report only their count."""
    groups = pictures_by_family(out)
    result, pooled = {}, []
    for fam, paths in groups.items():
        images = _load(_spread(paths, sample))  # any sizes: the metrics compare 32x32 thumbnails
        pooled.extend(images)
        result[fam] = set_metrics(images) if len(images) >= 2 else {"count": len(images)}
        result[fam]["files"] = len(paths)
    if len(groups) > 1 and len(pooled) >= 2:
        result["all"] = set_metrics(_spread(pooled, sample))
        result["all"]["files"] = sum(len(p) for p in groups.values())
    return result


def preview_sheet(out, count: int = 48, cols: int = 8, thumb: int = 128) -> Image.Image:
    """A contact sheet of up to `count` pictures spread over the families, `thumb` px each."""
    groups = pictures_by_family(out)
    per = max(1, count // len(groups))
    chosen, labels = [], []
    for fam, paths in groups.items():
        for p in _spread(paths, per):
            chosen.append(p)
            labels.append(p.stem)
    images = []
    for p in chosen:
        try:
            img = Image.open(p)
            img.draft("RGB", (thumb, thumb))
            images.append(np.asarray(img.convert("RGB").resize((thumb, thumb), Image.BILINEAR), dtype=np.uint8))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            images.append(np.zeros((thumb, thumb, 3), np.uint8))  # an unreadable file: a dark tile
    return contact_sheet(images, cols=cols, labels=labels)
