"""Tiny shard sets laid out by the shard format's writer (fields, tar writer, manifest names),
so the tools can be tested without the builder; read back with `tarfile`, an independent reader."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from fractalgen.files import atomic_write_json, sha256_file
from ipmix_cli.shardformat.fields import LABEL, META, image_fields
from ipmix_cli.shardformat.manifest import MANIFEST, SCHEMA
from ipmix_cli.shardformat.tarwriter import TarWriter
from ipmix_cli.shards.indexes import write_wids_index
from ipmix_cli.shards.manifest import config_hash
from ipmix_cli.shards.plan import shard_name

def encode(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "npy":
        np.save(buf, arr)
    else:
        Image.fromarray(arr).save(buf, format={"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[fmt])
    return buf.getvalue()


def write_tar(path: Path, members) -> None:
    """Members (name, data) in the given order, damaged ones included, by the shard writer."""
    with open(path, "wb") as f:
        tar = TarWriter(f)
        for name, data in members:
            tar.add(name, data)
        tar.close()


def sample_members(key, images, label, index, pad, fields):
    out = [(f"{key}.{field}", encode(img, field.rsplit(".", 1)[-1])) for field, img in zip(fields, images)]
    out.append((f"{key}.{LABEL}", str(label).encode()))
    out.append((f"{key}.{META}", json.dumps({"index": index, "pad": pad}).encode()))
    return out


def make_shards(out, *, epochs=1, shards=2, per_shard=3, views=1, fmt="png", size=8,
                classes=("cat", "dog", "eel"), pads=1, seed=0, schema_version=2) -> dict:
    """Write OUT with `epochs` x `shards` shards of `per_shard` samples; the last `pads`
    samples of each epoch are padding draws. Returns the manifest. `schema_version=1` names
    the shards as ipmix did before (shard-SSSSS.tar in every epoch folder)."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    fields = image_fields(views, fmt)
    total = shards * per_shard
    source_size = total - pads
    manifest = {
        "schema": SCHEMA, "schema_version": schema_version, "complete": True,
        "config": {"preset": "cifar", "recipe": "ipmix", "views": views, "epochs": epochs,
                   "augment": {"preset": "cifar", "recipe": "ipmix", "views": views, "image_size": size}},
        "config_hash": None, "seed": seed, "image_size": size, "views": views,
        "format": fmt, "quality": 95 if fmt in ("jpg", "webp") else None, "fields": fields,
        "classes": list(classes), "num_classes": len(classes),
        "samples_per_epoch": total, "shards_per_epoch": shards, "samples_per_shard": per_shard,
        "source_samples": source_size, "pads_per_epoch": pads,
        "epochs": [], "source": {"kind": "fixture", "size": source_size},
        "mixing_set": {"path": "fractals", "fingerprint": "cd" * 32}, "versions": {"ipmix": "test"},
    }
    manifest["config_hash"] = config_hash(manifest["config"])
    for epoch in range(epochs):
        edir = out / f"epoch-{epoch:04d}"
        edir.mkdir(parents=True, exist_ok=True)
        order = rng.permutation(total) % source_size
        entry = {"epoch": epoch, "index": f"epoch-{epoch:04d}/wids-index.json", "shards": []}
        for s in range(shards):
            members = []
            for j in range(per_shard):
                pos = s * per_shard + j
                index = int(order[pos])
                images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in fields]
                members += sample_members(f"e{epoch:04d}s{pos:07d}", images, index % len(classes),
                                          index, pos >= source_size, fields)
            rel = shard_name(epoch, s) if schema_version == 2 else f"epoch-{epoch:04d}/shard-{s:05d}.tar"
            path = out / rel
            write_tar(path, members)
            entry["shards"].append({"path": rel, "count": per_shard,
                                    "bytes": path.stat().st_size, "sha256": sha256_file(path)})
        write_wids_index(out, entry, "fixture")
        manifest["epochs"].append(entry)
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def read_tar_members(path):
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def rewrite_shard(out, manifest, rel, members, *, fix_manifest=True):
    """Replace one shard's members; optionally refresh its bytes/sha256 in the manifest
    and its wids index (so that only the damage under test remains)."""
    path = Path(out) / rel
    write_tar(path, members)
    if fix_manifest:
        for epoch in manifest["epochs"]:
            for shard in epoch["shards"]:
                if shard["path"] == rel:
                    shard["bytes"], shard["sha256"] = path.stat().st_size, sha256_file(path)
                    write_wids_index(out, epoch, "fixture")
        atomic_write_json(Path(out) / "manifest.json", manifest)


def write_mixing_pictures(path, n=3, size=40):
    """A few smooth random pictures standing in for the fractal mixing set."""
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        a, b, c = rng.uniform(1, 6, (3, 3))
        img = np.stack([0.5 + 0.5 * np.sin(a[k] * x + b[k] * y + c[k]) for k in range(3)], -1)
        Image.fromarray((img * 255).astype(np.uint8)).save(path / f"mix-{i}.png")
    return path


def write_digits_subset(root, n=14):
    """The first `n` training digits as an image folder `root/<class>/<i>.png`."""
    from ipmix_cli.data.sources import open_source

    src = open_source("digits")
    for i in range(n):
        folder = root / src.classes[int(src.labels[i])]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(src.read(i)).save(folder / f"{i:03d}.png")
    return root
