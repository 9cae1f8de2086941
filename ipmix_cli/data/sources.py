"""Datasets a build reads from, behind one small interface.

    src = open_source(spec)
    len(src); src.classes; src.labels; src.read(i) -> uint8 HxWx3; src.fingerprint; src.describe()

Specs: "digits", "digits:test", "cifar10:PATH", "cifar10-test:PATH", "cifar100:PATH",
"cifar100-test:PATH", "folder:PATH" (or a bare existing folder), "wds:URL_OR_GLOB".

Every source pickles cheaply (paths, offsets and labels; never the pixels), so a worker
process receives it once and reads only the samples of the shard it builds.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import re
from pathlib import Path

import numpy as np

from fractalgen.errors import BadImage
from fractalgen.images import is_image_name, load_rgb, open_rgb
from ipmix_cli.common.errors import IpmixError
from ipmix_cli.shardformat.fields import LABEL, READ_EXTENSIONS, extension
from ipmix_cli.shardformat.manifest import MANIFEST, Manifest
from ipmix_cli.shardformat.tario import TarFormatError, group_samples, iter_entries, split_name

DIGITS_SIZE = 32


def printable(text: str) -> str:
    """`text` with the bytes of a file name that is not valid UTF-8 shown as \\xNN escapes
    (Python hands such names over as lone surrogates, which no stream can print)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class BadSourceImage(IpmixError):
    """One source sample could not be decoded; `path` names it (file, or tar#member) and keeps
    the name's original bytes (as surrogates) for the manifest."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"bad source image {printable(path)}: {printable(reason)} "
                         f"(use --skip-bad to skip such images)")

    def __reduce__(self):  # survive the trip back from a worker process
        return (BadSourceImage, (self.path, self.reason))


class Source:
    kind = "?"
    path: str | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def read_many(self, indices) -> list:
        """`read` for several samples (sources with a faster batch path override it)."""
        return [self.read(int(i)) for i in indices]

    def read_image(self, i: int):
        """Sample i as the Augmenter's random-resized crop takes it: an array, or a decoded
        PIL image where the source decodes pictures (its pixels are then read in place)."""
        return self.read(i)

    def name_of(self, i: int) -> str:
        """A human-readable name of sample i (used in error messages and skip lists)."""
        return f"{self.kind}[{i}]"

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.classes)) if len(self.labels) else []
        return {name: int(c) for name, c in zip(self.classes, counts)}

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "path": self.path,
            "size": len(self),
            "num_classes": len(self.classes),
            "classes": list(self.classes),
            "class_counts": self.class_counts(),
            "fingerprint": self.fingerprint,
        }


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(np.ascontiguousarray(p).tobytes())
        elif isinstance(p, bytes):
            h.update(p)
        else:
            # file names that are not valid UTF-8 arrive as lone surrogates (Python's
            # surrogateescape): hash their original bytes; valid text hashes as plain UTF-8
            h.update(str(p).encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()


# --------------------------------------------------------------------------- digits

class DigitsSource(Source):
    """scikit-learn's handwritten digits, 8x8 grey 0..16, upscaled to 32x32 RGB (bilinear).

    Sample i of the full set is TEST iff i % 5 == 0.
    """

    kind = "digits"

    def __init__(self, split: str = "train"):
        from sklearn.datasets import load_digits

        if split not in ("train", "test"):
            raise IpmixError(f"digits split must be train or test, not {split!r}")
        d = load_digits()
        keep = (np.arange(len(d.target)) % 5 == 0) == (split == "test")
        self.split = split
        self.path = None
        self._small = np.ascontiguousarray(d.images[keep], dtype=np.uint8)  # 0..16, small to pickle
        self.labels = d.target[keep].astype(np.int64)
        self.classes = [str(c) for c in range(10)]
        self.fingerprint = _digest("digits", split, self._small, self.labels)
        self._big = None

    def _upscale(self, i: int) -> np.ndarray:
        from PIL import Image

        grey = np.clip(np.rint(self._small[i].astype(np.float64) * (255.0 / 16.0)), 0, 255).astype(np.uint8)
        big = Image.fromarray(grey, "L").resize((DIGITS_SIZE, DIGITS_SIZE), Image.BILINEAR)
        return np.asarray(big, dtype=np.uint8)

    def _grey(self) -> np.ndarray:
        """Every upscaled picture (1.8 MB), made once per process instead of once per read."""
        if self._big is None:
            self._big = np.stack([self._upscale(i) for i in range(len(self._small))])
        return self._big

    def read(self, i: int) -> np.ndarray:
        return self.read_many([i])[0]

    def read_many(self, indices) -> np.ndarray:
        grey = self._grey()[np.asarray(indices, dtype=np.int64)]
        return np.repeat(grey[:, :, :, None], 3, axis=3)

    def __getstate__(self):
        return {**self.__dict__, "_big": None}  # workers upscale their own copy

    def name_of(self, i):
        return f"digits:{self.split}[{i}]"

    def describe(self):
        return {**super().describe(), "split": self.split}


# --------------------------------------------------------------------------- image folder

def _size_or_minus_one(path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


class FolderSource(Source):
    """root/<class>/<image>: classes are the sub-folder names (sorted), images sorted by name."""

    kind = "folder"

    def __init__(self, root):
        root = Path(root)
        if not root.exists():
            raise IpmixError(f"source not found: {root}")
        if not root.is_dir():
            raise IpmixError(f"source is not a folder: {root}")
        try:
            class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError as exc:
            raise IpmixError(f"cannot read source folder {root}: {exc.strerror or exc}") from None
        if not class_dirs:
            raise IpmixError(f"source folder {root} has no class sub-folders (expected root/<class>/<image>)")
        files, labels = [], []
        for label, d in enumerate(class_dirs):
            names = sorted(n for n in os.listdir(d) if is_image_name(n) and not n.startswith("."))
            if not names:
                raise IpmixError(f"class folder {d} holds no pictures")
            files.extend(f"{d.name}/{n}" for n in names)
            labels.extend([label] * len(names))
        self.root = root
        self.path = str(root)
        self.files = files
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = [d.name for d in class_dirs]
        # Names and sizes: cheap for a million files, and it changes when a picture does.
        # An unreadable entry (a broken link, say) fails or is skipped (--skip-bad) when read.
        sizes = [_size_or_minus_one(root / f) for f in files]
        self.fingerprint = _digest("folder", "\n".join(files), np.asarray(sizes, dtype=np.int64))

    def read(self, i: int) -> np.ndarray:
        return np.asarray(self.read_image(i), dtype=np.uint8)

    def read_image(self, i: int):
        path = self.root / self.files[i]
        try:
            return open_rgb(path)
        except BadImage as exc:
            raise BadSourceImage(str(path), str(exc)) from None

    def name_of(self, i):
        return str(self.root / self.files[i])


# --------------------------------------------------------------------------- CIFAR

_CIFAR_LAYOUT = {
    # kind: (python folder, python train files, python test files, binary folder,
    #        binary train files, binary test files, bytes of labels per binary record)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"], 1),
    "cifar100": ("cifar-100-python", ["train"], ["test"],
                 "cifar-100-binary", ["train.bin"], ["test.bin"], 2),
}


class CifarSource(Source):
    """CIFAR-10/100 as distributed: the python pickle batches or the binary version.

    `path` is the extracted folder (cifar-10-batches-py, cifar-10-batches-bin, ...) or the
    folder that holds it. Pickles are parsed without running any code (see safepickle);
    pixels stay in the files and each row is read where it lies, never the whole set.
    """

    def __init__(self, kind: str, path, split: str = "train"):
        self.kind, self.split = kind, split
        root = Path(path)
        if not root.exists():
            raise IpmixError(f"source not found: {root}")
        if str(root).endswith((".tar.gz", ".tgz")):
            raise IpmixError(f"{root} is the compressed archive; extract it first (tar xzf {root.name}) "
                             f"and pass the extracted folder")
        pyname, pytrain, pytest_, binname, bintrain, bintest, label_bytes = _CIFAR_LAYOUT[kind]
        self._label_bytes = label_bytes
        self._parts: list[tuple[str, str, int, int]] = []  # (file, "py"|"bin", offset, count)
        for folder in (root, root / pyname, root / binname):
            names = pytrain if split == "train" else pytest_
            if all((folder / n).is_file() for n in names):
                self._open_python(folder, names)
                break
            names = bintrain if split == "train" else bintest
            if all((folder / n).is_file() for n in names):
                self._open_binary(folder, names)
                break
        else:
            for folder in (root, root / pyname, root / binname):
                for names in ((pytrain, pytest_)[split != "train"], (bintrain, bintest)[split != "train"]):
                    missing = [n for n in names if not (folder / n).is_file()]
                    if len(missing) < len(names):  # a partial copy: say what is missing
                        raise IpmixError(f"{folder} lacks {', '.join(missing)} of the {kind} {split} set "
                                         f"(copy or extract the official archive again)")
            raise IpmixError(f"no {kind} {split} batches found in {root} "
                             f"(expected {pyname}/ or {binname}/ as extracted from the official archive)")
        self.path = str(root)
        self._arrays = None
        self.fingerprint = _digest(kind, split, self.labels,
                                   *[f"{Path(f).name}:{os.path.getsize(f)}" for f, *_ in self._parts])

    # python pickles -------------------------------------------------------------
    def _open_python(self, folder: Path, names):
        from ipmix_cli.data import safepickle

        labels = []
        for n in names:
            f = folder / n
            try:
                batch = safepickle.load(f)
            except safepickle.UnsafePickle as exc:
                raise IpmixError(f"{f} is not a usable CIFAR batch: {exc}") from None
            if not isinstance(batch, dict) or "data" not in batch:
                raise IpmixError(f"{f} is not a CIFAR batch (no 'data' entry)")
            ref = batch["data"]
            key = "labels" if self.kind == "cifar10" else "fine_labels"
            if not isinstance(ref, safepickle.ArrayRef) or key not in batch:
                raise IpmixError(f"{f} is not a CIFAR batch (needs 'data' array and '{key}')")
            if ref.dtype != np.uint8 or len(ref.shape) != 2 or ref.shape[1] != 3072 or ref.fortran:
                raise IpmixError(f"{f}: 'data' has shape {ref.shape} {ref.dtype}, expected N x 3072 uint8")
            lab = np.asarray(batch[key], dtype=np.int64)
            if len(lab) != ref.shape[0]:
                raise IpmixError(f"{f}: {len(lab)} labels for {ref.shape[0]} images")
            labels.append(lab)
            if isinstance(ref.data, safepickle.Raw):
                self._parts.append((str(f), "py", ref.data.offset, ref.shape[0]))
            else:  # written by Python 3 at protocol 2: bytes were re-encoded, keep them in memory
                self._parts.append((str(f), "mem", ref.load(mmap=False).copy(), ref.shape[0]))
        self.labels = np.concatenate(labels)
        meta_name = "batches.meta" if self.kind == "cifar10" else "meta"
        key = "label_names" if self.kind == "cifar10" else "fine_label_names"
        names_list = None
        if (folder / meta_name).is_file():
            try:
                meta = safepickle.load(folder / meta_name)
                names_list = [str(x) for x in meta[key]]
            except (safepickle.UnsafePickle, KeyError, TypeError):
                names_list = None
        self.classes = self._class_names(names_list)

    # binary version --------------------------------------------------------------
    def _open_binary(self, folder: Path, names):
        rec = 3072 + self._label_bytes
        labels = []
        for n in names:
            f = folder / n
            size = os.path.getsize(f)
            if size == 0 or size % rec:
                raise IpmixError(f"{f} is not a CIFAR binary batch ({size} bytes is not a multiple of {rec})")
            mm = np.memmap(f, dtype=np.uint8, mode="r", shape=(size // rec, rec))
            labels.append(np.asarray(mm[:, self._label_bytes - 1], dtype=np.int64))
            del mm
            self._parts.append((str(f), "bin", 0, size // rec))
        self.labels = np.concatenate(labels)
        meta = "batches.meta.txt" if self.kind == "cifar10" else "fine_label_names.txt"
        names_list = None
        if (folder / meta).is_file():
            names_list = [s.strip() for s in (folder / meta).read_text(errors="replace").splitlines() if s.strip()]
        self.classes = self._class_names(names_list)

    def _class_names(self, names):
        n = 10 if self.kind == "cifar10" else 100
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= n):
            raise IpmixError(f"{self.kind} labels outside 0..{n - 1}")
        if names and len(names) == n:
            return names
        return [str(i) for i in range(n)]

    def _open_files(self):
        # Rows are read with pread, not memory-mapped: mapped pages (and the kernel maps 64 KB
        # around each touched page) would count in the worker's RSS and grow with the dataset.
        rec = 3072 + self._label_bytes
        files = []
        for f, how, off, count in self._parts:
            if how == "mem":
                files.append((None, 0, 3072, off))
            else:
                fd = os.open(f, os.O_RDONLY)
                files.append((fd, off if how == "py" else self._label_bytes, 3072 if how == "py" else rec, None))
        self._arrays = files
        self._starts = np.cumsum([0] + [p[3] for p in self._parts])

    def _read_rows(self, part: int, local: np.ndarray, planar: np.ndarray, at: np.ndarray) -> None:
        """planar[at[k]] = planar row local[k] of one batch file, read straight there in file order."""
        fd, base, stride, mem = self._arrays[part]
        if mem is not None:
            planar[at] = mem[local]
            return
        flat = memoryview(planar.reshape(-1))
        order = np.argsort(local, kind="stable")
        for k, offset in zip(at[order].tolist(), (base + local[order] * stride).tolist()):
            if os.preadv(fd, [flat[k * 3072:(k + 1) * 3072]], offset) != 3072:
                raise IpmixError(f"{self._parts[part][0]} is shorter than its batch header says")

    def read(self, i: int) -> np.ndarray:
        return self.read_many([i])[0]

    def __del__(self):
        for fd, *_ in self.__dict__.get("_arrays") or []:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def read_many(self, indices) -> np.ndarray:
        if self._arrays is None:
            self._open_files()
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"sample index out of range 0..{len(self) - 1}")
        parts = np.searchsorted(self._starts, indices, side="right") - 1
        planar = np.empty((len(indices), 3, 32, 32), np.uint8)
        for part in np.unique(parts).tolist():
            sel = np.nonzero(parts == part)[0]
            self._read_rows(part, indices[sel] - self._starts[part], planar, sel)
        out = np.empty((len(indices), 32, 32, 3), np.uint8)
        for c in range(3):  # one channel at a time: 4x faster than one transposing copy
            out[..., c] = planar[:, c]
        return out

    def name_of(self, i):
        return f"{self.kind}:{self.split}[{i}]"

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_arrays"] = None  # files are reopened in the worker, not pickled
        return state

    def describe(self):
        return {**super().describe(), "split": self.split,
                "format": "binary" if self._parts and self._parts[0][1] == "bin" else "python"}


# --------------------------------------------------------------------------- WebDataset

# the shard image formats, and pictures other WebDataset writers store that Pillow reads
_IMAGE_FIELDS = READ_EXTENSIONS + ("ppm", "bmp")


def _expand_urls(spec: str) -> list[str]:
    if re.match(r"^[a-z][a-z0-9+.-]*:", spec) and not spec.startswith("file:") and not os.path.exists(spec):
        raise IpmixError(f"wds source {spec!r}: only local shard files can be read for building "
                         f"(copy remote shards to a local folder first)")
    spec = spec[5:] if spec.startswith("file:") else spec
    m = re.search(r"\{(\d+)\.\.(\d+)\}", spec)
    if m:
        lo, hi = m.group(1), m.group(2)
        width = len(lo)
        urls = []
        for k in range(int(lo), int(hi) + 1):
            urls.extend(_expand_urls(spec[: m.start()] + str(k).zfill(width) + spec[m.end():]))
        return urls
    if os.path.isdir(spec):
        found = sorted(glob.glob(os.path.join(spec, "**", "*.tar"), recursive=True))
    elif any(c in spec for c in "*?["):
        found = sorted(glob.glob(spec))
    else:
        found = [spec] if os.path.exists(spec) else []
    return found


class WdsSource(Source):
    """Existing WebDataset shards: each sample needs one image field and a `cls` field.

    The shards are indexed once (member offsets), then every read is one seek.
    """

    kind = "wds"

    def __init__(self, spec: str):
        urls = _expand_urls(spec)
        if not urls:
            raise IpmixError(f"source not found: no tar shards match {spec}")
        self.path = spec
        self.urls = urls
        entries, labels, sizes = [], [], []
        for t, url in enumerate(urls):
            try:
                n = self._index_tar(t, url, entries, labels)
            except (TarFormatError, OSError) as exc:
                raise IpmixError(f"cannot read shard {url}: {exc}") from None
            if n == 0:
                raise IpmixError(f"shard {url} holds no samples with an image and a cls field")
            sizes.append(os.path.getsize(url))
        self._entries = np.asarray(entries, dtype=np.int64).reshape(-1, 3)  # (tar, offset, size)
        self._fields: list[str] = self._fields_tmp
        del self._fields_tmp
        self.labels = np.asarray(labels, dtype=np.int64)
        if self.labels.size and self.labels.min() < 0:
            raise IpmixError(f"wds source {spec}: negative class labels")
        n_classes = int(self.labels.max()) + 1 if self.labels.size else 0
        self.classes = self._class_names(urls, n_classes)
        self.fingerprint = _digest("wds", *[f"{Path(u).name}:{s}" for u, s in zip(urls, sizes)], self.labels)
        self._files = {}

    def _index_tar(self, t, url, entries, labels) -> int:
        if not hasattr(self, "_fields_tmp"):
            self._fields_tmp, self._keys = [], []
        count = 0
        with open(url, "rb") as f:
            # only the labels are read; an image member is located, then skipped
            members = ((e.name, e) for e in iter_entries(f, read=lambda name: split_name(name)[1] == LABEL))
            for key, sample in group_samples(members):
                field = next((f for f in _IMAGE_FIELDS if f in sample), None)
                if field is None:
                    field = next((f for f in sample if extension(f) in _IMAGE_FIELDS), None)
                if field is None or LABEL not in sample:
                    continue
                raw = sample[LABEL].data.strip()
                try:
                    label = int(raw)
                except ValueError:
                    raise IpmixError(f"{url}: sample {key} has a non-integer cls {raw[:20]!r}") from None
                im = sample[field]
                entries.extend((t, im.offset, im.size))
                self._fields_tmp.append(field)
                self._keys.append(f"{url}#{key}")
                labels.append(label)
                count += 1
        return count

    @staticmethod
    def _class_names(urls, n):
        # Shards written by ipmix carry their class names in the manifest beside them.
        for parent in {Path(urls[0]).parent, Path(urls[0]).parent.parent}:
            mf = parent / MANIFEST
            if mf.is_file():
                try:
                    names = Manifest.from_json(json.loads(mf.read_text())).class_names()
                except (OSError, ValueError, IpmixError):
                    continue
                if len(names) >= n:
                    return names
        return [str(i) for i in range(n)]

    def read(self, i: int) -> np.ndarray:
        t, off, size = (int(x) for x in self._entries[i])
        f = self._files.get(t)
        if f is None:
            f = self._files[t] = open(self.urls[t], "rb")
        f.seek(off)
        data = f.read(size)
        field = self._fields[i]
        try:
            if extension(field) == "npy":
                arr = np.load(io.BytesIO(data), allow_pickle=False)
                if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
                    raise BadImage("not-an-image", f"npy array {arr.shape} {arr.dtype}")
                return np.ascontiguousarray(np.repeat(arr[:, :, None], 3, 2) if arr.ndim == 2 else arr[:, :, :3])
            return load_rgb(data)
        except BadImage as exc:
            raise BadSourceImage(self._keys[i], str(exc)) from None
        except ValueError as exc:
            raise BadSourceImage(self._keys[i], f"unreadable: {exc}") from None

    def name_of(self, i):
        return self._keys[i]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_files"] = {}
        return state

    def describe(self):
        return {**super().describe(), "shards": len(self.urls)}


# --------------------------------------------------------------------------- entry point

def open_source(spec: str) -> Source:
    """Open a source from its spec string (see the module docstring)."""
    spec = str(spec)
    if spec in ("digits", "digits:train"):
        return DigitsSource("train")
    if spec == "digits:test":
        return DigitsSource("test")
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("cifar10", "cifar100", "cifar10-test", "cifar100-test"):
        if not rest:
            raise IpmixError(f"source {spec!r} needs a path: {kind}:PATH")
        base, _, test = kind.partition("-")
        return CifarSource(base, rest, "test" if test else "train")
    if sep and kind == "folder":
        return FolderSource(rest)
    if sep and kind == "wds":
        return WdsSource(rest)
    if os.path.isdir(spec):
        return FolderSource(spec)
    if sep and len(kind) > 1 and not os.path.exists(spec):
        raise IpmixError(f"unknown source kind {kind!r} in {spec!r} (use digits, cifar10:PATH, cifar100:PATH, "
                         f"folder:PATH or wds:URLS)")
    if os.path.exists(spec):  # a file: say what to write instead of "not found"
        raise IpmixError(f"source {spec} is a file, not an image folder; for WebDataset shards write wds:{spec}, "
                         f"for CIFAR give the extracted folder as cifar10:PATH")
    raise IpmixError(f"source not found: {spec}")
