"""Common image corruptions at five severities, in NumPy and PIL, to build a CIFAR-10-C-style
test folder from any test set: `<corruption>.npy` (uint8 [5·N, S, S, 3], severity 1 first) and
`labels.npy` (int64 [5·N]).

Each op takes a float32 image [H, W, 3] in [0, 1], a severity 1–5 and a NumPy generator, and
returns a float image (clipped afterwards). Severity parameters follow Hendrycks & Dietterich's
CIFAR-10-C choices for 32 px; spatial sizes scale with the image side / 32. Every image draws from
its own generator seeded by (seed, corruption, severity, index), so the output does not depend on
which corruptions are chosen or in what order they run.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from fractalgen.files import atomic_write_json, ensure_writable_dir
from ipmix_cli.errors import IpmixError


# ------------------------------------------------------------------ filtering helpers
def _gaussian_kernel1d(sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / max(sigma, 1e-6)) ** 2)
    return k / k.sum()


def gaussian_filter(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of [H, W] or [H, W, C] with reflected borders."""
    k = _gaussian_kernel1d(sigma)
    r = len(k) // 2
    out = img.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode="symmetric" if r <= out.shape[axis] else "edge")
        n = out.shape[axis]
        out = sum(k[i] * np.take(padded, np.arange(i, i + n), axis=axis) for i in range(len(k)))
    return out


def convolve2d(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve every channel of [H, W, C] with a 2-D kernel (FFT, reflected borders)."""
    kh, kw = kernel.shape
    ph, pw = kh // 2, kw // 2
    padded = np.pad(img.astype(np.float64), ((ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)), mode="edge")
    shape = padded.shape[:2]
    spec = np.fft.rfft2(padded, s=shape, axes=(0, 1)) * np.fft.rfft2(kernel[::-1, ::-1], s=shape)[..., None]
    full = np.fft.irfft2(spec, s=shape, axes=(0, 1))
    return full[kh - 1:kh - 1 + img.shape[0], kw - 1:kw - 1 + img.shape[1]]


def _scale(img: np.ndarray) -> float:
    return img.shape[0] / 32.0


def _resize_float(chan: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D float array (size = (w, h))."""
    return np.asarray(Image.fromarray(chan.astype(np.float32), "F").resize(size, Image.BILINEAR))


def _to_pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray(np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8))


def _from_pil(pil: Image.Image) -> np.ndarray:
    return np.asarray(pil, dtype=np.float32) / 255.0


# ------------------------------------------------------------------ noise
def gaussian_noise(x, severity, rng):
    c = (0.04, 0.06, 0.08, 0.09, 0.10)[severity - 1]
    return x + rng.normal(0.0, c, x.shape)


def shot_noise(x, severity, rng):
    c = (500, 250, 100, 75, 50)[severity - 1]
    return rng.poisson(np.clip(x, 0, 1) * c) / c


def impulse_noise(x, severity, rng):
    amount = (0.01, 0.02, 0.03, 0.05, 0.07)[severity - 1]
    hit = rng.random(x.shape) < amount
    salt = rng.random(x.shape) < 0.5
    return np.where(hit, salt.astype(np.float32), x)


def speckle_noise(x, severity, rng):
    c = (0.06, 0.10, 0.12, 0.16, 0.20)[severity - 1]
    return x + x * rng.normal(0.0, c, x.shape)


# ------------------------------------------------------------------ blur
def gaussian_blur(x, severity, rng):
    sigma = (0.4, 0.6, 0.7, 0.8, 1.0)[severity - 1] * _scale(x)
    return gaussian_filter(x, sigma)


def defocus_blur(x, severity, rng):
    radius, alias = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))[severity - 1]
    radius *= _scale(x)
    r = max(1, int(math.ceil(radius)))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float64)
    disk /= disk.sum()
    return gaussian_filter(convolve2d(x, disk), alias * _scale(x))


def motion_blur(x, severity, rng):
    """Blur along a line of random direction, Gaussian-weighted toward its start."""
    length = (2.0, 3.0, 4.0, 5.0, 6.0)[severity - 1] * _scale(x)
    angle = rng.uniform(-math.pi / 4, math.pi / 4) + (math.pi if rng.random() < 0.5 else 0.0)
    r = int(math.ceil(length))
    kernel = np.zeros((2 * r + 1, 2 * r + 1))
    for d in np.linspace(0.0, length, 4 * r + 1):
        w = math.exp(-0.5 * (d / (length / 2)) ** 2)
        px, py = r + d * math.cos(angle), r + d * math.sin(angle)
        x0, y0 = int(math.floor(px)), int(math.floor(py))
        fx, fy = px - x0, py - y0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                if 0 <= y0 + dy <= 2 * r and 0 <= x0 + dx <= 2 * r:
                    kernel[y0 + dy, x0 + dx] += w * wy * wx
    kernel /= kernel.sum()
    return convolve2d(x, kernel)


def zoom_blur(x, severity, rng):
    top = (1.06, 1.11, 1.16, 1.21, 1.26)[severity - 1]
    h, w = x.shape[:2]
    pil = _to_pil(x)
    acc = x.astype(np.float64).copy()
    zooms = np.arange(1.01, top, 0.01)
    for z in zooms:
        zw, zh = int(math.ceil(w * z)), int(math.ceil(h * z))
        big = pil.resize((zw, zh), Image.BILINEAR)
        left, upper = (zw - w) // 2, (zh - h) // 2
        acc += _from_pil(big.crop((left, upper, left + w, upper + h)))
    return acc / (len(zooms) + 1)


# ------------------------------------------------------------------ colour and weather
def contrast(x, severity, rng):
    c = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    mean = x.mean(axis=(0, 1), keepdims=True)
    return (x - mean) * c + mean


def _value_and_chroma(x):
    v = x.max(axis=2, keepdims=True)
    return v, v - x.min(axis=2, keepdims=True)


def brightness(x, severity, rng):
    """Raise the HSV value by c, keeping hue and saturation."""
    c = (0.05, 0.1, 0.15, 0.2, 0.3)[severity - 1]
    v, _ = _value_and_chroma(x)
    new_v = np.clip(v + c, 0, 1)
    return np.where(v > 0, x * new_v / np.maximum(v, 1e-8), new_v)


def saturate(x, severity, rng):
    """Scale and shift the HSV saturation, keeping hue and value."""
    mul, add = ((0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2))[severity - 1]
    v, chroma = _value_and_chroma(x)
    s = np.where(v > 0, chroma / np.maximum(v, 1e-8), 0.0)
    new_s = np.clip(s * mul + add, 0, 1)
    factor = np.where(s > 0, new_s / np.maximum(s, 1e-8), 1.0)
    return v - (v - x) * factor


def fog(x, severity, rng):
    """Add smooth low-frequency noise (octaves of upsampled random grids), then renormalise."""
    strength, decay = ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75))[severity - 1]
    h, w = x.shape[:2]
    field = np.zeros((h, w))
    cells, amp = 2, 1.0
    while cells <= max(h, w):
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        field += amp * _resize_float(grid, (w, h))
        cells, amp = cells * 2, amp / decay
    field = (field - field.min()) / max(field.max() - field.min(), 1e-8)
    top = x.max()
    return (x + strength * field[..., None]) * top / (top + strength)


# ------------------------------------------------------------------ digital
def pixelate(x, severity, rng):
    c = (0.95, 0.9, 0.85, 0.75, 0.65)[severity - 1]
    h, w = x.shape[:2]
    small = _to_pil(x).resize((max(1, int(w * c)), max(1, int(h * c))), Image.BOX)
    return _from_pil(small.resize((w, h), Image.BOX))


def jpeg_compression(x, severity, rng):
    quality = (80, 65, 58, 50, 40)[severity - 1]
    buf = io.BytesIO()
    _to_pil(x).save(buf, format="JPEG", quality=quality)
    return _from_pil(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def elastic_transform(x, severity, rng):
    """Warp by a smooth random displacement field (bilinear sampling, clamped borders)."""
    amp, sigma = ((0.6, 2.5), (0.9, 2.5), (1.2, 2.0), (1.5, 2.0), (1.8, 1.5))[severity - 1]
    s = _scale(x)
    h, w = x.shape[:2]
    fields = []
    for _ in range(2):
        f = gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma * s)
        fields.append(f / max(np.abs(f).max(), 1e-8) * amp * s)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    sy, sx = np.clip(yy + fields[0], 0, h - 1), np.clip(xx + fields[1], 0, w - 1)
    y0, x0 = np.minimum(np.floor(sy).astype(int), h - 2), np.minimum(np.floor(sx).astype(int), w - 2)
    fy, fx = (sy - y0)[..., None], (sx - x0)[..., None]
    return ((1 - fy) * (1 - fx) * x[y0, x0] + (1 - fy) * fx * x[y0, x0 + 1]
            + fy * (1 - fx) * x[y0 + 1, x0] + fy * fx * x[y0 + 1, x0 + 1])


# Name → op. The position in this table is part of each image's seed: append, never reorder.
CORRUPTIONS = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise,
    "gaussian_blur": gaussian_blur,
    "defocus_blur": defocus_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "contrast": contrast,
    "brightness": brightness,
    "saturate": saturate,
    "fog": fog,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
    "elastic_transform": elastic_transform,
}
SEVERITIES = (1, 2, 3, 4, 5)


def corrupt_image(image: np.ndarray, name: str, severity: int, seed: int, index: int) -> np.ndarray:
    """One uint8 image [H, W, 3] corrupted by `name` at `severity` (1–5), deterministically."""
    if name not in CORRUPTIONS:
        raise IpmixError(f"unknown corruption {name!r}; choose from: {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise IpmixError(f"severity must be 1..5, got {severity}")
    op_id = list(CORRUPTIONS).index(name)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), op_id, int(severity), int(index)]))
    x = image.astype(np.float32) / 255.0
    y = CORRUPTIONS[name](x, severity, rng)
    return np.rint(np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8)


def parse_corruptions(text: str | None) -> list[str]:
    if not text:
        return list(CORRUPTIONS)
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown or not names:
        raise IpmixError(f"unknown corruption(s) {', '.join(unknown) or text!r}; choose from: {', '.join(CORRUPTIONS)}")
    return list(dict.fromkeys(names))


@contextlib.contextmanager
def bad_test_image_error():
    """A bad image in a test set: the build's hint (--skip-bad) does not apply to test sets."""
    from ipmix_cli.shards.sources import BadSourceImage

    try:
        yield
    except BadSourceImage as exc:
        raise IpmixError(f"bad test image {exc.path}: {exc.reason} (fix or remove it; test sets are "
                         "read whole)") from None


class _AtomicNpy:
    """An .npy file filled in place through a memory map under a temporary name, then renamed."""

    def __init__(self, path: Path, shape, dtype):
        self.path = path
        fd, self.tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=dtype, shape=shape)

    def __enter__(self):
        return self.array

    def __exit__(self, exc_type, *exc):
        try:
            if exc_type is None:
                self.array.flush()
                with open(self.tmp, "rb+") as f:
                    os.fsync(f.fileno())
        finally:
            del self.array
            if exc_type is None:
                os.replace(self.tmp, self.path)
            else:
                Path(self.tmp).unlink(missing_ok=True)
        return False


PLAN_NAME = ".ipmix-corrupt-plan.json"  # present while a set is being written


def make_corrupted_set(source, out, *, seed: int = 0, corruptions=None, image_size: int | None = None,
                       limit: int | None = None, overwrite: bool = False, progress=None) -> dict:
    """Write a CIFAR-10-C-style folder for `source` (a spec string or an opened source) into `out`.

    Returns the manifest, written last to `out/manifest.json`: a folder with a manifest is
    complete. Running the same request again returns at once (complete) or finishes the files
    still missing (interrupted); a folder holding other data is refused unless `overwrite`.
    """
    from ipmix_cli.testset import iter_test_batches, read_test_images

    if not 0 <= int(seed) < 2**63:
        raise IpmixError(f"seed must be in 0..2**63-1, got {seed}")
    names = parse_corruptions(corruptions) if (corruptions is None or isinstance(corruptions, str)) \
        else parse_corruptions(",".join(corruptions))
    if isinstance(source, str):
        from ipmix_cli.shards.sources import open_source
        spec, source = source, open_source(source)
    else:
        spec = getattr(source, "spec", type(source).__name__)
    n = len(source) if limit is None else min(len(source), int(limit))
    if n <= 0:
        raise IpmixError("the test set holds no samples")
    with bad_test_image_error():
        size = int(image_size or read_test_images(source, None, 1)[2])
    plan = {"schema": "ipmix-corrupted", "schema_version": 1, "source": spec,
            "source_fingerprint": getattr(source, "fingerprint", None), "seed": int(seed), "samples": n,
            "image_size": size, "severities": list(SEVERITIES), "corruptions": names}
    out = Path(out)
    resume = _check_output(out, plan, overwrite)
    if isinstance(resume, dict):
        return resume
    ensure_writable_dir(out)
    atomic_write_json(out / PLAN_NAME, plan)
    labels = np.asarray(source.labels[:n], dtype=np.int64)
    todo = [name for name in names if not (resume and (out / f"{name}.npy").exists())]
    with_progress = progress if progress is not None else (lambda total, desc: _NoProgress())
    with with_progress(len(todo) * n, "corrupt") as bar, bad_test_image_error():
        for name in todo:
            with _AtomicNpy(out / f"{name}.npy", (len(SEVERITIES) * n, size, size, 3), np.uint8) as stack:
                for lo, (images, _) in zip(range(0, n, 256), iter_test_batches(source, size, 256, np.arange(n))):
                    for j, image in enumerate(images):
                        for s in SEVERITIES:
                            stack[(s - 1) * n + lo + j] = corrupt_image(image, name, s, seed, lo + j)
                    bar.update(len(images))
    with _AtomicNpy(out / "labels.npy", (len(SEVERITIES) * n,), np.int64) as stack:
        stack[:] = np.tile(labels, len(SEVERITIES))
    describe = source.describe() if hasattr(source, "describe") else {}
    manifest = {**plan, "source_description": json.loads(json.dumps(describe, default=str)),
                "layout": "<corruption>.npy uint8 [5*samples, S, S, 3], severity 1 first; labels.npy int64 [5*samples]"}
    atomic_write_json(out / "manifest.json", manifest)
    (out / PLAN_NAME).unlink(missing_ok=True)
    return manifest


def _check_output(out: Path, plan: dict, overwrite: bool):
    """The finished manifest (same request, already done), True (resume an interrupted run of
    the same request), or False (start afresh); IpmixError if `out` holds something else."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise IpmixError(f"{out} is not a folder")

    def same(path):
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        return all(old.get(k) == v for k, v in plan.items())

    ours = [out / f"{name}.npy" for name in CORRUPTIONS] + [out / "labels.npy", out / "manifest.json", out / PLAN_NAME]
    try:
        foreign_manifest = json.loads((out / "manifest.json").read_text()).get("schema") != "ipmix-corrupted"
    except FileNotFoundError:
        foreign_manifest = False
    except (OSError, ValueError, AttributeError):
        foreign_manifest = True
    if foreign_manifest:  # a shard build, say: --overwrite must not delete its manifest
        raise IpmixError(f"{out} holds a manifest.json that is not a corrupted test set; choose another --out")
    others = sorted(p.name for p in out.iterdir() if p not in ours and not p.name.startswith(".")
                    and p.suffix != ".npy")
    if others and not overwrite:  # a dataset or other work: do not write into it unasked
        raise IpmixError(f"{out} holds other files (found {others[0]}); choose an empty or new --out "
                         "or pass --overwrite")
    if overwrite:
        for path in ours:
            path.unlink(missing_ok=True)
        return False
    if (out / "manifest.json").exists():
        if same(out / "manifest.json") and all((out / f"{n}.npy").exists() for n in plan["corruptions"]):
            return json.loads((out / "manifest.json").read_text())
        raise IpmixError(f"{out} already holds a different corrupted test set; choose another --out "
                         "or pass --overwrite")
    if (out / PLAN_NAME).exists() and same(out / PLAN_NAME):
        return True
    if any(p.suffix == ".npy" for p in out.iterdir()):
        raise IpmixError(f"{out} already holds .npy files; choose another --out or pass --overwrite")
    return False


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n=1):
        pass
