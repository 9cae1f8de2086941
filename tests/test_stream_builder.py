"""The loader on shards written by the real builder (`ipmix_cli.shards.build_shards`),
held against the shard tools' own strict tar reader."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from _stream_helpers import collect
from ipmix_cli.shards import build_shards
from ipmix_cli.shards.tario import decode_image, iter_samples
from ipmix_cli.stream import ShardLoader


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("built")
    mix = root / "mix"
    mix.mkdir()
    y, x = np.mgrid[0:40, 0:40]
    for i in range(3):
        pattern = np.stack([np.sin(x / (3 + i)) * 120 + 128, np.cos(y / (2 + i)) * 120 + 128, (x + y) * 3.0], -1)
        Image.fromarray(pattern.astype(np.uint8)).save(mix / f"p{i}.png")
    manifest = build_shards(source="digits:test", fractals=str(mix), out=str(root / "shards"), epochs=2,
                            views=3, seed=1, progress=False)
    table = {}
    for ep in manifest["epochs"]:
        for shard in ep["shards"]:
            with open(root / "shards" / shard["path"], "rb") as fh:
                for key, fields in iter_samples(fh, fields=manifest["fields"] + ["cls"]):
                    views = np.stack([decode_image(f, fields[f]).transpose(2, 0, 1) for f in manifest["fields"]])
                    table[views.tobytes()] = (key, int(fields["cls"]))
    return root / "shards", manifest, table


def test_builder_triples_arrive_intact(built):
    shards, manifest, table = built
    assert manifest["fields"] == ["clean.png", "aug1.png", "aug2.png"]
    keys = []
    for rank in range(2):
        loader = ShardLoader(shards, 16, rank=rank, world_size=2, num_workers=1)
        assert (loader.views, loader.image_size, loader.num_classes) == (3, 32, 10)
        images, labels = collect(loader)
        assert images.shape == (len(loader) * 16, 3, 3, 32, 32)
        for img, label in zip(images, labels):
            key, want = table[img.tobytes()]
            assert label == want
            keys.append(key)
    assert len(keys) == len(set(keys))
    assert all(k.startswith("e0000") for k in keys)


def test_builder_epoch_mapping(built):
    shards, manifest, table = built
    loader = ShardLoader(shards, 16)
    loader.set_epoch(3)
    images, _ = collect(loader)
    keys = [table[img.tobytes()][0] for img in images]
    assert all(k.startswith("e0001") for k in keys)
    assert len(keys) == manifest["samples_per_epoch"] // 16 * 16
