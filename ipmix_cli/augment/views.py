"""Train-time crop and flip, then the sample's views, for a whole batch.

Crop `pad` (CIFAR preset): 4 px zero padding + random crop back to S, inside the kernel.
`random-resized` (ImageNet preset): RandomResizedCrop(S, scale (0.08, 1), ratio (3/4, 4/3)) with
PIL's bilinear resize, per image (`Augmenter.crop`); `center` and `none` (see presets.CROPS) per
image with Pillow. Then the horizontal flip (drawn for every sample, applied when the
configuration's `flip` is on) and the same kernel.

Streams per sample (see rng.py): CROP for crop and flip, MIX for the mixing picture, and
VIEW + v for augmented view v. A one-view sample is exactly view 1 of the JSD triple.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from PIL import Image

from ipmix_cli.augment.ops import copy_all
from ipmix_cli.augment.chains import RECIPE_NONE, augment_view, make_scratch
from ipmix_cli.augment.rng import (STREAM_CROP, STREAM_MIX, STREAM_VIEW, new_state, randint,
                                   uniform)

CROP_PAD, CROP_NONE = 0, 1
PAD = 4


@njit(cache=True)
def pad_crop_flip(src, dst, oy, ox, flip):
    """dst = crop of src zero-padded by PAD at offset (oy, ox) in the padded frame, maybe mirrored."""
    H, W = dst.shape[0], dst.shape[1]
    sh, sw = src.shape[0], src.shape[1]
    for y in range(H):
        sy = y + oy - PAD
        for x in range(W):
            sx = (W - 1 - x if flip else x) + ox - PAD
            if sy < 0 or sy >= sh or sx < 0 or sx >= sw:
                dst[y, x, 0] = 0
                dst[y, x, 1] = 0
                dst[y, x, 2] = 0
            else:
                dst[y, x, 0] = src[sy, sx, 0]
                dst[y, x, 1] = src[sy, sx, 1]
                dst[y, x, 2] = src[sy, sx, 2]


@njit(cache=True)
def draw_pad_crop(seed, epoch, index, size):
    st = new_state(seed, epoch, index, STREAM_CROP)
    oy = randint(st, 2 * PAD + 1)
    ox = randint(st, 2 * PAD + 1)
    flip = uniform(st) < 0.5
    return oy, ox, flip


@njit(cache=True)
def mixing_crop(bank, seed, epoch, index, f):
    """Draw the sample's mixing picture and crop it to f's size (into f)."""
    st = new_state(seed, epoch, index, STREAM_MIX)
    j = randint(st, bank.shape[0])
    S = f.shape[0]
    oy = randint(st, bank.shape[1] - S + 1)
    ox = randint(st, bank.shape[2] - S + 1)
    f1 = f.reshape(-1)
    b1 = bank[j].reshape(-1)
    row = bank.shape[2] * 3
    n = S * 3
    for y in range(S):
        src = b1[(oy + y) * row + ox * 3:(oy + y) * row + ox * 3 + n]
        dst = f1[y * n:(y + 1) * n]
        for k in range(n):
            dst[k] = src[k]


@njit(cache=True)
def draw_flip(seed, epoch, index):
    """The flip of a sample whose crop draws nothing (`center`, `none`)."""
    return uniform(new_state(seed, epoch, index, STREAM_CROP)) < 0.5


# nogil: a shard's upload (or fsync) runs in a thread of the same worker while the next chunk is
# augmented; holding the GIL through a chunk made each 10 MB PUT take 3 to 5 times longer.
@njit(cache=True, nogil=True)
def augment_batch(images, crop_mode, flip_ok, bank, seed, epoch, indices, recipe, tables, out):
    """out[i] = the views of images[i]: [aug] (V = 1) or [clean, aug1, aug2] (V = 3).

    crop_mode CROP_PAD: pad + crop + flip drawn here (the flip applied only when flip_ok);
    CROP_NONE: images are already cropped and flipped (`Augmenter.crop`).
    """
    N = images.shape[0]
    V = out.shape[1]
    S = out.shape[2]
    x = np.empty((S, S, 3), np.uint8)
    f = np.zeros((S, S, 3), np.uint8)
    scratch = make_scratch(recipe.width, S)
    for i in range(N):
        idx = indices[i]
        if crop_mode == CROP_PAD:
            oy, ox, flip = draw_pad_crop(seed, epoch, idx, S)
            pad_crop_flip(images[i], x, oy, ox, flip and flip_ok)
        else:
            copy_all(images[i], x)
        if recipe.recipe == RECIPE_NONE:
            copy_all(x, out[i, 0])
            continue
        mixing_crop(bank, seed, epoch, idx, f)
        first_aug = 0
        if V == 3:
            copy_all(x, out[i, 0])
            first_aug = 1
        for v in range(first_aug, V):
            st = new_state(seed, epoch, idx, STREAM_VIEW + v - first_aug)
            augment_view(x, f, st, recipe, tables, out[i, v], scratch)


# ---------------------------------------------------------------- ImageNet crop (per image)


def random_resized_crop_box(seed: int, epoch: int, index: int, height: int, width: int,
                            scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop.get_params with this sample's CROP stream.

    Returns (top, left, h, w, flip).
    """
    st = new_state(seed, epoch, index, STREAM_CROP)
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    box = None
    for _ in range(10):
        target = area * (scale[0] + uniform(st) * (scale[1] - scale[0]))
        aspect = math.exp(log_lo + uniform(st) * (log_hi - log_lo))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = randint(st, height - h + 1)
            left = randint(st, width - w + 1)
            box = (top, left, h, w)
            break
    if box is None:
        in_ratio = width / height
        if in_ratio < min(ratio):
            w, h = width, int(round(width / min(ratio)))
        elif in_ratio > max(ratio):
            h, w = height, int(round(height * max(ratio)))
        else:
            w, h = width, height
        box = ((height - h) // 2, (width - w) // 2, h, w)
    flip = bool(uniform(st) < 0.5)
    return box + (flip,)


def imagenet_crop(image: np.ndarray, size: int, seed: int, epoch: int, index: int, flip_ok: bool = True) -> np.ndarray:
    """RandomResizedCrop(size) with PIL's bilinear resize (as torchvision does it on PIL images)
    + horizontal flip of one HxWx3 uint8 image, with PIL itself (the batch path uses the
    bit-identical kernel in resample.py)."""
    top, left, h, w, flip = random_resized_crop_box(seed, epoch, index, image.shape[0], image.shape[1])
    pil = Image.fromarray(np.ascontiguousarray(image[top:top + h, left:left + w]))
    pil = pil.resize((size, size), Image.BILINEAR)
    if flip and flip_ok:
        pil = pil.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(pil, dtype=np.uint8)


def fitted_picture(image, size: int, crop: str) -> np.ndarray:
    """The deterministic crops, as uint8 SxSx3: `center` resizes the shorter side to S and keeps
    the centre, `none` resizes the whole picture to S x S (both bicubic, as the `pad` crop fits
    pictures of another size). An S x S array is returned as it is."""
    from fractalgen.images import resize_center_crop

    if isinstance(image, np.ndarray) and image.shape[:2] == (size, size):
        return image
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image))
    pil = pil if pil.mode == "RGB" else pil.convert("RGB")
    if crop == "center":
        pil = resize_center_crop(pil, size)
    elif pil.size != (size, size):
        pil = pil.resize((size, size), Image.BICUBIC, reducing_gap=3.0)
    return np.asarray(pil, dtype=np.uint8)
