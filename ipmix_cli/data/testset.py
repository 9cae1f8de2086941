"""A test source as one uint8 array at the model's input size (no torch here)."""

from __future__ import annotations

import contextlib

import numpy as np
from PIL import Image

from ipmix_cli.common.errors import IpmixError


def check_classes(test_classes, trained_classes, spec: str) -> None:
    """Refuse a test set whose labels would mean something else than in training."""
    test_classes, trained_classes = list(test_classes), list(trained_classes or [])
    if trained_classes and len(test_classes) != len(trained_classes):
        raise IpmixError(f"test set {spec} has {len(test_classes)} classes; the model was trained on "
                         f"{len(trained_classes)}")
    if trained_classes and set(test_classes) == set(trained_classes) and test_classes != trained_classes:
        raise IpmixError(f"test set {spec} orders its classes differently from the training shards "
                         "(its labels would be scored against the wrong classes)")


def eval_transform(image: np.ndarray, size: int) -> np.ndarray:
    """The evaluation transform of the recipe: an S×S image as is; for ImageNet-size models
    resize the shorter side to S·256/224 and centre-crop S; otherwise resize the shorter side to
    S and centre-crop."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return np.ascontiguousarray(image, dtype=np.uint8)
    short = round(size * 256 / 224) if size >= 64 else size
    scale = short / min(h, w)
    nw, nh = max(short, round(w * scale)), max(short, round(h * scale))
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(pil.crop((left, top, left + size, top + size)), dtype=np.uint8)


def read_test_images(source, size: int | None = None, limit: int | None = None):
    """(images uint8 [N, S, S, 3], labels int64 [N], S) from an opened source (contracts C).

    `size=None` takes the size of the first image, which must then be square.
    `limit` keeps the first `limit` samples.
    """
    n = len(source) if limit is None else min(len(source), int(limit))
    if n <= 0:
        raise IpmixError("the test set holds no samples")
    first = np.asarray(source.read(0))
    if size is None:
        if first.shape[0] != first.shape[1]:
            raise IpmixError(f"test images are {first.shape[1]}x{first.shape[0]}, not square: give the image size")
        size = int(first.shape[0])
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        img = first if i == 0 else np.asarray(source.read(i))
        if img.ndim != 3 or img.shape[2] != 3:
            raise IpmixError(f"test sample {i} is not an RGB image (shape {img.shape})")
        out[i] = eval_transform(img, size)
    labels = np.asarray(source.labels[:n], dtype=np.int64)
    return out, labels, size


def iter_test_batches(source, size: int, batch_size: int, indices=None):
    """(uint8 images [b, S, S, 3], int64 labels [b]) over `indices` (default: all) of an opened
    source, decoding one batch at a time so large test sets never sit in memory whole."""
    indices = np.arange(len(source)) if indices is None else np.asarray(indices, dtype=np.int64)
    all_labels = np.asarray(source.labels, dtype=np.int64)
    for lo in range(0, len(indices), batch_size):
        chunk = indices[lo:lo + batch_size]
        images = np.empty((len(chunk), size, size, 3), np.uint8)
        for j, i in enumerate(chunk):
            img = np.asarray(source.read(int(i)))
            if img.ndim != 3 or img.shape[2] != 3:
                raise IpmixError(f"test sample {int(i)} is not an RGB image (shape {img.shape})")
            images[j] = eval_transform(img, size)
        yield images, all_labels[chunk]


@contextlib.contextmanager
def bad_test_image_error():
    """A bad image in a test set: the build's hint (--skip-bad) does not apply to test sets."""
    from ipmix_cli.data.sources import BadSourceImage

    try:
        yield
    except BadSourceImage as exc:
        raise IpmixError(f"bad test image {exc.path}: {exc.reason} (fix or remove it; test sets are "
                         "read whole)") from None
