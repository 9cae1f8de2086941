"""The loader on shards written by the real builder (`ipmix_cli.shards.build_shards`),
held against the shard tools' own strict tar reader."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from _stream_helpers import collect
from ipmix_cli.shards import build_shards
from ipmix_cli.shardformat.formats import decode_image
from ipmix_cli.shardformat.tario import iter_samples
from ipmix_cli.stream import ShardLoader

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


def _mixing_folder(root):
    mix = root / "mix"
    mix.mkdir()
    y, x = np.mgrid[0:40, 0:40]
    for i in range(3):
        pattern = np.stack([np.sin(x / (3 + i)) * 120 + 128, np.cos(y / (2 + i)) * 120 + 128, (x + y) * 3.0], -1)
        Image.fromarray(pattern.astype(np.uint8)).save(mix / f"p{i}.png")
    return mix


def _build(root, **kw):
    manifest = build_shards(source="digits:test", fractals=str(_mixing_folder(root)), out=str(root / "shards"),
                            seed=1, progress=False, **kw)
    table = {}
    for ep in manifest["epochs"]:
        for shard in ep["shards"]:
            with open(root / "shards" / shard["path"], "rb") as fh:
                for key, fields in iter_samples(fh, fields=manifest["fields"] + ["cls"]):
                    views = np.stack([decode_image(f, fields[f]).transpose(2, 0, 1) for f in manifest["fields"]])
                    table[views.tobytes()] = (key, int(fields["cls"]))
    return root / "shards", manifest, table


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    # the builder's default format at 32 px
    return _build(tmp_path_factory.mktemp("built"), epochs=2, views=3)


def test_builder_triples_arrive_intact(built):
    shards, manifest, table = built
    assert [f.split(".")[0] for f in manifest["fields"]] == ["clean", "aug1", "aug2"]
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


def test_builder_png_shards(tmp_path):
    shards, manifest, table = _build(tmp_path, epochs=1, views=1, format="png")
    assert manifest["fields"] == ["png"]
    images, labels = collect(ShardLoader(shards, 8, drop_last=False))
    assert images.shape[0] == manifest["samples_per_epoch"]
    keys = {table[img.tobytes()][0] for img in images}
    assert len(keys) == manifest["samples_per_epoch"]
