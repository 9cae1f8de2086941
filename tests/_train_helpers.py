"""Shard sets of real digits for the train/eval tests, written with the shard-tools test writer
(contracts D layout) so these tests need neither the builder nor the augmentation engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from _shards_tools_helpers import sample_members, write_tar
from fractalgen.files import atomic_write_json, sha256_file
from ipmix_cli.shards.indexes import write_wids_index
from ipmix_cli.data.sources import open_source

FIELDS = {1: ["png"], 3: ["clean.png", "aug1.png", "aug2.png"]}


def _views(image: np.ndarray, views: int, rng) -> list[np.ndarray]:
    if views == 1:
        return [image]
    noisy = [np.clip(image.astype(int) + rng.integers(-40, 41, image.shape), 0, 255).astype(np.uint8) for _ in range(2)]
    return [image, *noisy]


def make_digit_shards(out, *, views=1, epochs=1, shards=4, per_shard=None, limit=None, seed=0) -> dict:
    """OUT with `epochs` materialized epochs of the digits train split (first `limit` samples),
    `shards` equal shards each; returns the manifest."""
    out = Path(out)
    src = open_source("digits")
    n = len(src) if limit is None else min(limit, len(src))
    per_shard = per_shard or n // shards
    total = per_shard * shards
    rng = np.random.default_rng(seed)
    fields = FIELDS[views]
    manifest = {
        "schema": "ipmix-shards", "schema_version": 1, "complete": True,
        "config": {"preset": "cifar", "recipe": "none", "views": views, "epochs": epochs},
        "config_hash": f"{views:02d}{epochs:02d}{total:08d}" + "0" * 52, "seed": seed, "image_size": 32,
        "views": views, "format": "png", "quality": None, "fields": fields, "classes": list(src.classes),
        "num_classes": len(src.classes), "samples_per_epoch": total, "shards_per_epoch": shards,
        "samples_per_shard": per_shard, "epochs": [], "source": {"kind": "digits", "size": n},
        "mixing_set": {"path": "none", "fingerprint": "0" * 64}, "versions": {"ipmix": "test"},
    }
    for epoch in range(epochs):
        edir = out / f"epoch-{epoch:04d}"
        edir.mkdir(parents=True, exist_ok=True)
        order = rng.permutation(total) % n
        entry = {"epoch": epoch, "index": f"epoch-{epoch:04d}/wids-index.json", "shards": []}
        for s in range(shards):
            members = []
            for j in range(per_shard):
                pos = s * per_shard + j
                index = int(order[pos])
                members += sample_members(f"e{epoch:04d}s{pos:07d}", _views(src.read(index), views, rng),
                                          int(src.labels[index]), index, False, fields)
            path = edir / f"shard-{s:05d}.tar"
            write_tar(path, members)
            entry["shards"].append({"path": f"epoch-{epoch:04d}/shard-{s:05d}.tar", "count": per_shard,
                                    "bytes": path.stat().st_size, "sha256": sha256_file(path)})
        write_wids_index(out, entry, "digits")
        manifest["epochs"].append(entry)
    atomic_write_json(out / "manifest.json", manifest)
    return manifest
