"""The public entry points: the batch Augmenter and the per-image `ipmix_one`.

The kernels' modules are imported where they are first needed, so that the `none` recipe's pad
crop (plain NumPy, `plain_crop`) never imports Numba."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ipmix_cli.augment import plain_crop
from ipmix_cli.augment.bank import MixingBank
from ipmix_cli.augment.presets import MIXING_RECIPES
from ipmix_cli.augment.config import AugmentConfig
from ipmix_cli.common.errors import IpmixError


class Augmenter:
    """Makes the views of a batch: row i depends only on (cfg, bank, seed, epoch, indices[i], images[i])."""

    def __init__(self, cfg: AugmentConfig, bank: MixingBank | None):
        if bank is None and cfg.recipe in MIXING_RECIPES:
            raise IpmixError(f"recipe {cfg.recipe!r} needs a mixing folder")
        if bank is not None and cfg.recipe in MIXING_RECIPES and bank.size != cfg.mixing_size:
            raise IpmixError(f"the mixing bank holds {bank.size}px pictures but this configuration resizes them "
                             f"to {cfg.mixing_size}px: load it with MixingBank.from_folder(folder, cfg)")
        self.cfg = cfg
        self.bank = bank
        self._recipe = None  # cfg.kernel_recipe(), made with the first batch that needs a kernel
        S = cfg.image_size
        self._no_bank = _readonly(np.zeros((1, S, S, 3), np.uint8))

    def crop(self, image, seed: int, epoch: int, index: int, out: np.ndarray | None = None) -> np.ndarray:
        """The train-time crop of one sample, then its flip (when the configuration's `flip` is
        on), as uint8 SxSx3, for the crops made per picture: `random-resized` (torchvision's
        RandomResizedCrop with PIL's bilinear resize), `center` and `none` (see presets.CROPS).
        `make_views` starts with it; a reader can call it right after decoding each picture
        (while its pixels are still in cache) and pass the crops with `cropped=True`.

        image: a uint8 HxWx3 array of any size, or a decoded PIL image (read without a copy);
        out: an optional C-contiguous uint8 SxSx3 array to write the crop into."""
        cfg = self.cfg
        if cfg.crop == "pad":
            raise IpmixError("crop() is the per-picture crop; the pad crop happens in make_views")
        S = cfg.image_size
        if out is None:
            out = np.empty((S, S, 3), np.uint8)
        elif out.shape != (S, S, 3) or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise IpmixError(f"crop() writes into a C-contiguous uint8 {S}x{S}x3 array, not {out.dtype} {list(out.shape)}")
        if not isinstance(image, Image.Image):
            image = np.asarray(image)
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise IpmixError(f"image {index} is not an HxWx3 uint8 array (shape {image.shape}, {image.dtype})")
        seed, epoch, index = int(seed), int(epoch), int(index)
        from ipmix_cli.augment.ops import mirror
        from ipmix_cli.augment.views import draw_flip, fitted_picture, random_resized_crop_box

        if cfg.crop == "random-resized":
            from ipmix_cli.augment.resample import resized_window
            from ipmix_cli.common.pixels import rgbx_view

            im = rgbx_view(image if image.mode == "RGB" else image.convert("RGB")) \
                if isinstance(image, Image.Image) else image
            if not (im.flags.c_contiguous and im.flags.writeable):
                im = np.array(im, order="C")
            top, left, h, w, flip = random_resized_crop_box(seed, epoch, index, im.shape[0], im.shape[1])
            crop = np.empty((S, S, 3), np.uint8) if flip and cfg.flip else out
            resized_window(im, top, left, h, w, S, S, crop)
        else:
            flip = draw_flip(seed, epoch, index)
            crop = np.ascontiguousarray(fitted_picture(image, S, cfg.crop))
        if flip and cfg.flip:
            mirror(crop, out, 0, S, 0, S)
        elif crop is not out:
            out[...] = crop
        return out

    def make_views(self, images, seed: int, epoch: int, indices, cropped: bool = False) -> np.ndarray:
        """uint8 [N, V, S, S, 3]: [aug] or [clean, aug1, aug2] per row (see contracts B).

        images: uint8 HxWx3 arrays; with a per-picture crop (every crop but `pad`) they may be
        of any size, and may also be decoded PIL images (read without a copy). cropped=True:
        they are already `crop(image, seed, epoch, index)` of the same seed, epoch and index."""
        cfg = self.cfg
        S = cfg.image_size
        indices = np.array(indices, dtype=np.int64).reshape(-1)
        seed, epoch = int(seed), int(epoch)
        if not (0 <= seed < 2**63 and 0 <= epoch < 2**63) or (len(indices) and indices.min() < 0):
            raise IpmixError("seed, epoch and indices must be non-negative integers below 2**63")
        pad = cfg.crop == "pad"  # the pad crop is made here, cropped or not (see crop())
        if pad or cropped:
            batch = _as_batch(images, S)
        else:
            items = list(images)
            if len(items) != len(indices):
                raise IpmixError(f"{len(items)} images but {len(indices)} indices")
            batch = np.empty((len(items), S, S, 3), np.uint8)
            for i, im in enumerate(items):
                self.crop(im, seed, epoch, indices[i], out=batch[i])
        if len(batch) != len(indices):
            raise IpmixError(f"{len(batch)} images but {len(indices)} indices")
        out = np.empty((len(batch), cfg.views, S, S, 3), np.uint8)
        if len(batch) == 0:
            return out
        if cfg.recipe == "none":  # the crop (and flip) is the whole view
            if pad:
                plain_crop.pad_crop_flip(batch, seed, epoch, indices, cfg.flip, out[:, 0])
            else:
                out[:, 0] = batch
            return out
        from ipmix_cli.augment.ops import TABLES
        from ipmix_cli.augment.views import CROP_NONE, CROP_PAD, augment_batch

        if self._recipe is None:
            self._recipe = cfg.kernel_recipe()
        bank = _readonly(self.bank.pixels) if self.bank is not None else self._no_bank
        augment_batch(batch, CROP_PAD if pad else CROP_NONE, cfg.flip, bank, seed, epoch, indices, self._recipe,
                      TABLES, out)
        return out


def _as_batch(images, S: int) -> np.ndarray:
    if isinstance(images, np.ndarray):
        batch = images
    else:
        items = [np.asarray(im) for im in images]
        shapes = {im.shape for im in items}
        if len(shapes) > 1:
            raise IpmixError(f"images in a batch must share one size, got {sorted(shapes)[:3]}")
        batch = np.stack(items) if items else np.empty((0, S, S, 3), np.uint8)
    if batch.ndim != 4 or batch.shape[1:] != (S, S, 3) or batch.dtype != np.uint8:
        raise IpmixError(f"images must be uint8 [N, {S}, {S}, 3] for this preset, got {batch.dtype} {list(batch.shape)}")
    if not (batch.flags.c_contiguous and batch.flags.writeable):
        batch = np.array(batch, order="C")  # one compiled signature: writable, C-contiguous
    return batch


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only C-contiguous view: banks always reach the kernel with this one type."""
    a = np.ascontiguousarray(a)
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def view_state(seed: int, epoch: int, index: int, view: int = 0) -> np.ndarray:
    """The random stream of augmented view `view` (0 or 1) of one sample."""
    from ipmix_cli.augment.rng import STREAM_VIEW, new_state

    return new_state(int(seed), int(epoch), int(index), STREAM_VIEW + int(view))


def ipmix_one(image: np.ndarray, mixing_picture: np.ndarray, rng: np.ndarray, cfg: AugmentConfig) -> np.ndarray:
    """One augmented view of one already cropped image under cfg's recipe.

    image, mixing_picture: uint8 SxSx3 of the same size; rng: a stream from `view_state`
    (advanced in place). Same draws as the batch path, so `make_views` rows equal this.
    """
    image = np.ascontiguousarray(image, dtype=np.uint8)
    f = np.ascontiguousarray(mixing_picture, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        raise IpmixError(f"image must be a square SxSx3 array, not {image.shape}")
    if f.shape != image.shape:
        raise IpmixError(f"mixing picture {f.shape} and image {image.shape} differ in size")
    from ipmix_cli.augment.chains import augment_view, make_scratch
    from ipmix_cli.augment.ops import TABLES

    S = image.shape[0]
    out = np.empty_like(image)
    augment_view(image.copy(), f.copy(), rng, cfg.kernel_recipe(), TABLES, out, make_scratch(cfg.width, S))
    return out
