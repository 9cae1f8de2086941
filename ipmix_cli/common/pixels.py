"""The pixels of a decoded Pillow RGB image as a NumPy view, without a copy.

`np.asarray(img)` packs Pillow's storage (4 bytes per pixel: R, G, B, padding) into a new RGB
buffer through `tobytes()`, which costs about as much as the resize that follows it. Pillow
(11.2 and later) also exports that storage through the Arrow C data interface; `rgbx_view`
reads the export as an HxWx4 array. Where the export is not offered or not as expected (an
image spread over several memory blocks, another mode, an older Pillow) it falls back to
`np.asarray`, an HxWx3 copy. The resize kernels read either layout.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np
from numba import njit
from PIL import Image


class _ArrowSchema(ctypes.Structure):
    pass


_ArrowSchema._fields_ = [
    ("format", ctypes.c_char_p), ("name", ctypes.c_char_p), ("metadata", ctypes.c_char_p),
    ("flags", ctypes.c_int64), ("n_children", ctypes.c_int64),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowSchema))), ("dictionary", ctypes.POINTER(_ArrowSchema)),
    ("release", ctypes.c_void_p), ("private_data", ctypes.c_void_p)]


class _ArrowArray(ctypes.Structure):
    pass


_ArrowArray._fields_ = [
    ("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64),
    ("buffers", ctypes.POINTER(ctypes.c_void_p)), ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))),
    ("dictionary", ctypes.POINTER(_ArrowArray)), ("release", ctypes.c_void_p), ("private_data", ctypes.c_void_p)]

_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def _export_view(img: Image.Image) -> np.ndarray | None:
    try:
        schema_capsule, array_capsule = img.__arrow_c_array__()
    except (AttributeError, ValueError, OSError):
        return None
    schema = _ArrowSchema.from_address(_capsule_pointer(schema_capsule, b"arrow_schema"))
    array = _ArrowArray.from_address(_capsule_pointer(array_capsule, b"arrow_array"))
    w, h = img.size
    if schema.format != b"+w:4" or schema.n_children != 1 or schema.children[0].contents.format != b"C":
        return None
    if array.n_children != 1 or array.offset != 0 or array.length != w * h:
        return None
    child = array.children[0].contents
    if child.offset != 0 or child.length != 4 * w * h or child.n_buffers != 2 or not child.buffers[1]:
        return None
    data = (ctypes.c_uint8 * (4 * w * h)).from_address(child.buffers[1])
    # The capsules release the export when collected: tie them to the buffer the view holds.
    data._keep = (schema_capsule, array_capsule)
    return np.frombuffer(data, np.uint8).reshape(h, w, 4)


def rgbx_view(img: Image.Image) -> np.ndarray:
    """HxWx4 (zero-copy, fourth byte meaningless) or HxWx3 uint8 pixels of an RGB image."""
    if img.mode != "RGB":
        raise ValueError(f"rgbx_view needs an RGB image, not {img.mode}")
    img.load()
    view = _export_view(img)
    return view if view is not None else np.asarray(img)


@njit(cache=True)
def _rgb_into(src, dst):
    """dst[..., :3] = src for HxWx3 src and HxWx4 dst (both C-contiguous). Row slices with
    constant strides: twice as fast as one flat loop over the pixels."""
    H, W = src.shape[0], src.shape[1]
    s1 = src.reshape(-1)
    d1 = dst.reshape(-1)
    for y in range(H):
        s = s1[y * W * 3:(y + 1) * W * 3]
        d = d1[y * W * 4:(y + 1) * W * 4]
        for x in range(W):
            d[4 * x] = s[3 * x]
            d[4 * x + 1] = s[3 * x + 1]
            d[4 * x + 2] = s[3 * x + 2]


class Canvas(threading.local):
    """One reusable RGB Pillow image per size (and thread) to encode arrays from: filling its
    storage in place skips allocating and unpacking a new image per sample (`Image.fromarray`).
    The image returned is valid until the next call from the same thread."""

    def __init__(self):
        self._images: dict[tuple[int, int], tuple[Image.Image, np.ndarray | None]] = {}

    def image_of(self, arr: np.ndarray) -> Image.Image:
        arr = np.ascontiguousarray(arr, dtype=np.uint8)
        h, w = arr.shape[:2]
        entry = self._images.get((h, w))
        if entry is None:
            if len(self._images) >= 8:  # a stream of odd sizes does not pile up images
                self._images.clear()
            img = Image.new("RGB", (w, h))
            entry = self._images[(h, w)] = (img, _export_view(img))
        img, view = entry
        if view is None:
            return Image.fromarray(arr, "RGB")
        _rgb_into(arr, view)
        return img
