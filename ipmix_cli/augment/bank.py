"""MixingBank: a folder of pictures loaded once into one uint8 array shared by workers.

Each picture is resized (bilinear) so its shorter side is the preset's mixing size (36 or 256)
and, if it is not square, its central square is kept, so all pictures fit one [N, R, R, 3]
array; per sample a picture is drawn and randomly cropped to the training size in the kernel.

The array is written once as a .npy file in a cache folder keyed by the pictures' content and
the size; a bank pickles as that file's path and is memory-mapped again on the other side, so
joblib/dask workers share the pages instead of receiving the pixels with every task.
Cache folder: the one given (`--cache-dir`), else `default_cache_dir()`; never inside the
mixing folder (an input is only read). Where the cache folder cannot be written, the bank stays
in memory (and pickles with its pixels).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from fractalgen.errors import BadImage
from fractalgen.files import atomic_write_bytes, sha256_file
from fractalgen.images import open_rgb, picture_files
from ipmix_cli.common.errors import IpmixError
from ipmix_cli.common.cachedir import default_cache_dir


def resize_mixing_picture(img: Image.Image, size: int) -> np.ndarray:
    """Shorter side to `size` (bilinear, torchvision's Resize(size) arithmetic), then the
    central size x size square, as uint8 HxWx3."""
    w, h = img.size
    if min(w, h) != size:
        if w <= h:
            nw, nh = size, int(size * h / w)
        else:
            nw, nh = int(size * w / h), size
        img = img.resize((nw, nh), Image.BILINEAR)
        w, h = nw, nh
    left, top = (w - size) // 2, (h - size) // 2
    if (w, h) != (size, size):
        img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8)


def _picture_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise IpmixError(f"mixing folder {folder} does not exist or is not a folder")
    files = picture_files(folder)
    if not files:
        raise IpmixError(f"mixing folder {folder} holds no pictures (in it or its sub-folders)")
    return files


def _cache_folder(cache_dir, folder: Path) -> Path:
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    inside = cache.resolve()
    if inside == folder.resolve() or folder.resolve() in inside.parents:
        raise IpmixError(f"cache folder {cache} is inside the mixing folder {folder}; "
                         "give a --cache-dir outside it (inputs are never written)")
    return cache


class MixingBank:
    """The mixing pictures as one uint8 array [N, R, R, 3]."""

    def __init__(self, pixels: np.ndarray, fingerprint: str, path: str | None = None, note: str = ""):
        self.pixels = pixels
        self.fingerprint = fingerprint
        self.path = path  # the .npy file backing `pixels`, if any
        self.note = note  # why there is no cache file, if there is none

    @classmethod
    def from_folder(cls, folder, cfg=None, *, size: int | None = None, cache_dir=None) -> "MixingBank":
        """Load every picture in `folder` and its sub-folders (see `picture_files`), resized for
        `cfg`, through the cache file in `cache_dir` (default: `default_cache_dir()`)."""
        if size is None:
            if cfg is None:
                raise ValueError("give cfg or size")
            size = cfg.mixing_size
        folder = Path(folder)
        files = _picture_files(folder)
        cache = _cache_folder(cache_dir, folder)
        digest = hashlib.sha256(f"ipmix-bank-v1 size={size}\n".encode())
        for p in files:
            try:
                digest.update(sha256_file(p).encode())
            except OSError as exc:
                raise IpmixError(f"cannot read mixing picture {p}: {exc.strerror or exc}") from None
        key = digest.hexdigest()
        cached = cache / f"bank-{key[:32]}.npy"
        if cached.is_file():
            try:
                return cls._from_cache(cached, key)
            except (OSError, ValueError):
                pass  # a damaged cache file: rebuild it below
        pixels = cls._decode(files, size)
        try:
            cache.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            np.save(buf, pixels)
            atomic_write_bytes(cached, buf.getvalue())
            os.chmod(cached, 0o644)
            return cls._from_cache(cached, key)
        except OSError as exc:
            return cls(pixels, key, note=f"cache folder {cache} not writable: {exc.strerror or exc}")

    @classmethod
    def from_array(cls, pixels: np.ndarray) -> "MixingBank":
        """A bank from an [N, R, R, 3] uint8 array (kept in memory)."""
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        if pixels.ndim != 4 or pixels.shape[3] != 3 or pixels.shape[1] != pixels.shape[2] or not len(pixels):
            raise IpmixError(f"a mixing bank needs an [N, R, R, 3] array, not {pixels.shape}")
        return cls(pixels, hashlib.sha256(pixels.tobytes()).hexdigest())

    @staticmethod
    def _decode(files: list[Path], size: int) -> np.ndarray:
        out = np.empty((len(files), size, size, 3), np.uint8)
        for i, p in enumerate(files):
            try:
                img = open_rgb(p, min_size=1)
            except BadImage as exc:
                raise IpmixError(f"mixing picture {p} is unusable: {exc}") from None
            out[i] = resize_mixing_picture(img, size)
        return out

    @classmethod
    def _from_cache(cls, path: Path, key: str) -> "MixingBank":
        mm = np.load(path, mmap_mode="r")
        if mm.ndim != 4 or mm.dtype != np.uint8:
            raise ValueError("not a bank array")
        return cls(mm.view(np.ndarray), key, str(path))

    def describe(self) -> str:
        """One line for the user: how many pictures, and where the cache file is and its size."""
        head = f"mixing bank: {len(self)} pictures at {self.size} px"
        if self.path is None:
            return f"{head}, kept in memory ({self.note or 'no cache file'})"
        return f"{head}, cached in {self.path} ({os.path.getsize(self.path) / 1e6:.1f} MB)"

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def size(self) -> int:
        return int(self.pixels.shape[1])

    def __getstate__(self):
        if self.path is not None:
            return {"path": self.path, "fingerprint": self.fingerprint}
        return {"pixels": np.asarray(self.pixels), "fingerprint": self.fingerprint}

    def __setstate__(self, state):
        self.fingerprint = state["fingerprint"]
        self.path = state.get("path")
        if self.path is not None:
            try:
                self.pixels = np.load(self.path, mmap_mode="r").view(np.ndarray)
            except OSError as exc:
                raise IpmixError(f"mixing bank cache {self.path} is gone: {exc.strerror or exc}") from None
        else:
            self.pixels = state["pixels"]

    def __repr__(self) -> str:
        return f"MixingBank({len(self)} pictures, {self.size}px, {self.fingerprint[:12]})"
