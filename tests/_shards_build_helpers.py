"""Small fixtures for the shard-build tests: fake CIFAR batches, image folders, mixing sets."""

from __future__ import annotations

import struct

import numpy as np
from PIL import Image


def _p2(obj) -> bytes:
    """Encode obj the way Python 2's cPickle (protocol 2) wrote the CIFAR batches."""
    if isinstance(obj, dict):
        out = b"}(" if obj else b"}"
        for k, v in obj.items():
            out += _p2(k) + _p2(v)
        return out + (b"u" if obj else b"")
    if isinstance(obj, list):
        out = b"]"
        if obj:
            out += b"(" + b"".join(_p2(v) for v in obj) + b"e"
        return out
    if isinstance(obj, str):
        return _p2(obj.encode())
    if isinstance(obj, bytes):
        if len(obj) < 256:
            return b"U" + bytes([len(obj)]) + obj
        return b"T" + struct.pack("<I", len(obj)) + obj
    if isinstance(obj, (int, np.integer)):
        obj = int(obj)
        if 0 <= obj < 256:
            return b"K" + bytes([obj])
        return b"J" + struct.pack("<i", obj)
    if isinstance(obj, np.ndarray):
        assert obj.dtype == np.uint8 and obj.ndim == 2
        dtype = (b"cnumpy\ndtype\n" + _p2("u1") + b"K\x00K\x01\x87R"
                 + b"(K\x03" + _p2("|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
        head = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _p2("b") + b"\x87R"
        state = b"(K\x01" + _p2(obj.shape[0]) + _p2(obj.shape[1]) + b"\x86" + dtype + b"\x89" + _p2(obj.tobytes()) + b"tb"
        return head + state
    raise TypeError(type(obj))


def py2_pickle(obj) -> bytes:
    return b"\x80\x02" + _p2(obj) + b"."


def cifar_images(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def write_cifar_python(root, kind="cifar10", per_batch=6, seed=0):
    """An extracted python-version archive with tiny batches; returns (train imgs, labels, test...)."""
    n_cls = 10 if kind == "cifar10" else 100
    folder = root / ("cifar-10-batches-py" if kind == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if kind == "cifar10" else ["train", "test"]
    key = "labels" if kind == "cifar10" else "fine_labels"
    store = {}
    for b, name in enumerate(names):
        imgs = cifar_images(per_batch, seed * 100 + b)
        labels = [(seed + b * 3 + i) % n_cls for i in range(per_batch)]
        data = imgs.transpose(0, 3, 1, 2).reshape(per_batch, 3072)
        batch = {"batch_label": f"batch {b}", key: labels, "data": data,
                 "filenames": [f"img_{b}_{i}.png" for i in range(per_batch)]}
        if kind == "cifar100":
            batch["coarse_labels"] = [l % 20 for l in labels]
        (folder / name).write_bytes(py2_pickle(batch))
        store[name] = (imgs, np.asarray(labels))
    meta = {"label_names": [f"c{i}" for i in range(n_cls)]} if kind == "cifar10" else \
        {"fine_label_names": [f"f{i}" for i in range(n_cls)], "coarse_label_names": [f"k{i}" for i in range(20)]}
    (folder / ("batches.meta" if kind == "cifar10" else "meta")).write_bytes(py2_pickle(meta))
    return folder, store


def write_cifar_binary(root, kind="cifar10", per_batch=5, seed=1):
    n_cls = 10 if kind == "cifar10" else 100
    folder = root / ("cifar-10-batches-bin" if kind == "cifar10" else "cifar-100-binary")
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"] if kind == "cifar10" \
        else ["train.bin", "test.bin"]
    store = {}
    for b, name in enumerate(names):
        imgs = cifar_images(per_batch, seed * 100 + b)
        labels = np.asarray([(seed + 7 * b + i) % n_cls for i in range(per_batch)], dtype=np.uint8)
        planar = imgs.transpose(0, 3, 1, 2).reshape(per_batch, 3072)
        if kind == "cifar10":
            recs = np.concatenate([labels[:, None], planar], axis=1)
        else:
            recs = np.concatenate([(labels % 20)[:, None], labels[:, None], planar], axis=1)
        (folder / name).write_bytes(recs.astype(np.uint8).tobytes())
        store[name] = (imgs, labels.astype(np.int64))
    if kind == "cifar10":
        (folder / "batches.meta.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n\n")
    else:
        (folder / "fine_label_names.txt").write_text("\n".join(f"f{i}" for i in range(100)) + "\n")
    return folder, store


def smooth_picture(size, seed):
    """A smooth random RGB pattern (mixing-set stand-in; no fractal rendering)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    chans = []
    for _ in range(3):
        a, b, c, d = rng.uniform(1, 6, 4)
        chans.append(0.5 + 0.5 * np.sin(a * x * 3 + b * y * 2 + c) * np.cos(d * (x - y)))
    return (np.stack(chans, -1) * 255).astype(np.uint8)


def write_mixing_folder(path, n=4, size=48):
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(smooth_picture(size, 1000 + i)).save(path / f"mix-{i:02d}.png")
    return path


def write_image_folder(root, per_class=3, classes=("cat", "dog"), size=40):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = smooth_picture(size + 4 * i, 10 * c + i)
            Image.fromarray(arr).save(root / name / f"{i:03d}.png")
    return root
