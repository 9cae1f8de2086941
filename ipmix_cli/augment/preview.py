"""A picture of what training will see: rows of input | mixing picture | augmented views."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image

from fractalgen.errors import BadImage
from fractalgen.images import contact_sheet, open_rgb, picture_files, resize_center_crop
from ipmix_cli.augment.api import Augmenter, ipmix_one, view_state
from ipmix_cli.augment.bank import MixingBank
from ipmix_cli.augment.config import AugmentConfig
from ipmix_cli.augment.views import mixing_crop
from ipmix_cli.common.errors import IpmixError


def input_files(path, limit: int) -> list[Path]:
    """One picture, or the first `limit` pictures of a folder and its sub-folders (a class
    folder, say), in `picture_files` order."""
    path = Path(path)
    if path.is_dir():
        files = picture_files(path)[:limit]
        if not files:
            raise IpmixError(f"{path} holds no pictures (in it or its sub-folders)")
        return files
    if not path.is_file():
        raise IpmixError(f"{path} does not exist")
    return [path]


def train_crop(path: Path, cfg: AugmentConfig, seed: int, index: int) -> np.ndarray:
    """The picture as training crops (and flips) it before augmentation: cfg's crop and flip,
    drawn for this seed and index, as a build does it (a `pad` crop first fits the picture to
    S x S, resize and centre crop, as builds fit sources of another size)."""
    try:
        img = open_rgb(path)
    except BadImage as exc:
        raise IpmixError(f"{path}: {exc}") from None
    if cfg.crop == "pad":
        img = resize_center_crop(img, cfg.image_size)
    cropper = Augmenter(dataclasses.replace(cfg, recipe="none", views=1), None)
    return cropper.make_views([np.asarray(img, dtype=np.uint8)], seed, 0, [index])[0, 0]


def preview_grid(inputs, bank: MixingBank, cfg: AugmentConfig, n: int = 6, seed: int = 0,
                 zoom: int | None = None) -> Image.Image:
    """Rows: the training crop of each input (labelled with the crop and flip) | its mixing
    picture | n augmented views of that crop (independent draws)."""
    S = cfg.image_size
    zoom = zoom or max(1, 128 // S)
    crop_label = cfg.crop + (" + flip" if cfg.flip else "")
    tiles, labels = [], []
    for row, path in enumerate(inputs):
        x = train_crop(Path(path), cfg, seed, row)
        f = np.empty((S, S, 3), np.uint8)
        mixing_crop(bank.pixels, seed, 0, row, f)
        tiles += [x, f]
        labels += [crop_label, "mixing"]
        for v in range(n):
            tiles.append(ipmix_one(x, f, view_state(seed, 0, row, v), cfg))
            labels.append(f"{cfg.recipe} {v + 1}")
    if zoom > 1:
        tiles = [np.repeat(np.repeat(t, zoom, axis=0), zoom, axis=1) for t in tiles]
    return contact_sheet(tiles, cols=n + 2, labels=labels)
