"""Small shard sets laid out by the shard format's writer (fields, tar writer, manifest
names), for the loader's tests, plus an independent reader (tarfile + PIL) to hold the loader
against."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from ipmix_cli.shardformat.fields import LABEL, META, image_fields
from ipmix_cli.shardformat.manifest import MANIFEST, SCHEMA
from ipmix_cli.shardformat.tarwriter import TarWriter
from ipmix_cli.shards.plan import shard_name


def sample_pixels(epoch: int, pos: int, view: int, size: int) -> np.ndarray:
    rng = np.random.default_rng([epoch, pos, view])
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def encode(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "npy":
        np.save(buf, arr)
    elif fmt == "jpg":
        Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    else:
        Image.fromarray(arr).save(buf, format=fmt.upper())
    return buf.getvalue()


def fields_for(views: int, fmt: str) -> list[str]:
    return image_fields(views, fmt)


def make_shards(out, *, shard_counts=(6, 6, 6), epochs: int = 2, views: int = 1, size: int = 8,
                fmt: str = "png", num_classes: int = 3, config_hash: str = "test-hash",
                schema_version: int = 2) -> dict:
    """Write OUT/epoch-EEEE/ipmix-eEEEE-SSSSS.tar + OUT/manifest.json. Sample (epoch e, position p)
    holds sample_pixels(e, p, v) for view v and label p % num_classes. `schema_version=1` names
    the shards as ipmix did before (shard-SSSSS.tar in every epoch folder)."""
    out = Path(out)
    fields = fields_for(views, fmt)
    epochs_meta = []
    for e in range(epochs):
        (out / f"epoch-{e:04d}").mkdir(parents=True, exist_ok=True)
        shards = []
        pos = 0
        for s, count in enumerate(shard_counts):
            rel = shard_name(e, s) if schema_version == 2 else f"epoch-{e:04d}/shard-{s:05d}.tar"
            with open(out / rel, "wb") as f:
                tar = TarWriter(f)
                for _ in range(count):
                    members = [(field, encode(sample_pixels(e, pos, v, size), fmt)) for v, field in enumerate(fields)]
                    members.append((LABEL, str(pos % num_classes).encode()))
                    members.append((META, json.dumps({"index": pos, "pad": False}).encode()))
                    tar.add_sample(f"e{e:04d}s{pos:07d}", members)
                    pos += 1
                tar.close()
            data = (out / rel).read_bytes()
            shards.append({"path": rel, "count": count, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        epochs_meta.append({"epoch": e, "index": f"epoch-{e:04d}/wids-index.json", "shards": shards})
    manifest = {
        "schema": SCHEMA, "schema_version": schema_version, "complete": True,
        "config": {}, "config_hash": config_hash, "seed": 0, "image_size": size, "views": views,
        "format": fmt, "quality": None, "fields": fields,
        "classes": [str(i) for i in range(num_classes)], "num_classes": num_classes,
        "samples_per_epoch": sum(shard_counts), "shards_per_epoch": len(shard_counts),
        "samples_per_shard": max(shard_counts), "epochs": epochs_meta,
        "source": {}, "mixing_set": {}, "versions": {},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def read_tar_samples(path) -> dict:
    """key -> (list of decoded views in field order as uint8 HxWx3, label), via tarfile + PIL/np.load."""
    samples: dict = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, field = m.name.split(".", 1)
            data = tar.extractfile(m).read()
            entry = samples.setdefault(key, {})
            entry[field] = data
    out = {}
    for key, entry in samples.items():
        views = []
        for field in [f for f in entry if f not in ("cls", "json")]:  # tar order
            data = entry[field]
            if field.endswith("npy"):
                views.append(np.load(io.BytesIO(data)))
            else:
                views.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        out[key] = (views, int(entry["cls"]))
    return out


def collect(loader) -> tuple[np.ndarray, np.ndarray]:
    """All batches of one pass: images uint8 [N, V, 3, S, S], labels [N]."""
    images, labels = [], []
    for x, y in loader:
        images.append(x.numpy())
        labels.append(y.numpy())
    if not images:
        return np.zeros((0,)), np.zeros((0,), np.int64)
    return np.concatenate(images), np.concatenate(labels)
