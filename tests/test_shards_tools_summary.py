"""`inspect`, `preview` and the dataset card (whose code recipes are run as written)."""

import re
from collections import Counter

import numpy as np
import pytest

from _shards_tools_helpers import make_shards, read_tar_members
from fractalgen.images import load_rgb
from ipmix_cli.common.errors import IpmixError
from ipmix_cli.shards.card import all_epochs_pattern, render_card, shard_pattern, write_dataset_card
from ipmix_cli.shards.inspect import inspect, render_inspect
from ipmix_cli.shards.preview import MIN_TILE, preview
from ipmix_cli.shardformat.formats import decode_image


def labels_of(path):
    return [int(d) for n, d in read_tar_members(path) if n.endswith(".cls")]


def real_labels_of(path):
    """Labels of the samples that are not padding draws, in shard order."""
    members = read_tar_members(path)
    pads = {n.split(".")[0] for n, d in members if n.endswith(".json") and b'"pad": true' in d}
    return [int(d) for n, d in members if n.endswith(".cls") and n.split(".")[0] not in pads]


def test_inspect_counts_sizes_and_histogram(tmp_path):
    m = make_shards(tmp_path, epochs=2, shards=3, per_shard=4, pads=2, fmt="jpg")
    s = inspect(tmp_path, scan_epoch=1)
    sizes = [sum(sh["bytes"] for sh in e["shards"]) for e in m["epochs"]]
    assert (s["epochs"], s["shards_per_epoch"], s["samples_per_shard"], s["samples"]) == (2, 3, 4, 24)
    assert s["bytes_per_epoch"] == sizes and s["bytes"] == sum(sizes)
    assert s["bytes_per_sample"] == pytest.approx(sum(sizes) / 24)
    labels = Counter(l for i in range(3) for l in labels_of(tmp_path / "epoch-0001" / f"ipmix-e0001-{i:05d}.tar"))
    assert s["class_histogram"] == {name: labels.get(i, 0) for i, name in enumerate(m["classes"])}
    assert s["pads"] == 2 and s["scanned_samples"] == 12 and s["scan_errors"] == []
    assert (s["format"], s["quality"], s["preset"], s["recipe"], s["views"]) == ("jpg", 95, "cifar", "ipmix", 1)
    text = render_inspect(s)
    assert "2 x 3 shards x 4 samples = 12 samples per epoch" in text
    assert "jpg q95" in text and "pads       2 padding draws in scan of epoch 1" in text
    for name in m["classes"]:
        assert re.search(rf"^  {name}\s+{labels.get(m['classes'].index(name), 0)}\b", text, re.M)


def test_inspect_without_scan_and_with_missing_shard(tmp_path):
    make_shards(tmp_path, shards=2, per_shard=2, pads=0)
    (tmp_path / "epoch-0000" / "ipmix-e0000-00001.tar").unlink()
    s = inspect(tmp_path, scan_epoch=None)
    assert s["missing_shards"] == 1 and "class_histogram" not in s
    assert "1 shard files listed in the manifest are not on disk" in render_inspect(s)
    s = inspect(tmp_path)
    assert s["scan_errors"] == ["epoch-0000/ipmix-e0000-00001.tar: missing"] and s["scanned_samples"] == 2
    with pytest.raises(IpmixError, match="epoch 5 is not in"):
        inspect(tmp_path, scan_epoch=5)


@pytest.mark.parametrize("views", [1, 3])
def test_preview_tiles_are_the_samples(tmp_path, views):
    m = make_shards(tmp_path / "out", views=views, shards=2, per_shard=3, pads=1)
    dest = tmp_path / "sheet.png"
    result = preview(tmp_path / "out", dest, epoch=0, n=5)
    assert result["samples"] == 5 and result["tiles"] == 5 * views
    sheet = load_rgb(str(dest))
    tile, pad, label_h = 8 * (MIN_TILE // 8), 2, 12
    cols = min(5 * views, (8 if views == 1 else 4) * views)
    assert sheet.shape == (pad + -(-5 * views // cols) * (tile + pad + label_h), pad + cols * (tile + pad), 3)
    members = dict(read_tar_members(tmp_path / "out" / "epoch-0000" / "ipmix-e0000-00000.tar"))
    for j, field in enumerate(m["fields"]):  # first sample, each view side by side
        want = decode_image(field, members[f"e0000s0000000.{field}"])
        x = pad + j * (tile + pad)
        got = sheet[pad : pad + tile, x : x + tile]
        np.testing.assert_array_equal(got[:: tile // 8, :: tile // 8], want)


def test_preview_refuses_bad_requests(tmp_path):
    make_shards(tmp_path, shards=1, per_shard=2, pads=0)
    with pytest.raises(IpmixError, match="epoch 3 is not in"):
        preview(tmp_path, tmp_path / "p.png", epoch=3)
    with pytest.raises(IpmixError, match="at least 1"):
        preview(tmp_path, tmp_path / "p.png", n=0)
    with pytest.raises(IpmixError, match="does not exist"):
        preview(tmp_path, tmp_path / "no" / "p.png")
    assert not (tmp_path / "p.png").exists()
    with pytest.raises(IpmixError, match="it is a folder"):
        preview(tmp_path, tmp_path / "epoch-0000")
    shard = tmp_path / "epoch-0000" / "ipmix-e0000-00000.tar"
    before = shard.read_bytes()
    with pytest.raises(IpmixError, match="ending in .png"):  # a typo must not overwrite a shard
        preview(tmp_path, shard)
    assert shard.read_bytes() == before


def _code_block(card, after):
    section = card[card.index(after):]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize("views,fmt", [(1, "png"), (3, "jpg")])
def test_card_recipes_run_as_written(tmp_path, monkeypatch, views, fmt):
    m = make_shards(tmp_path, views=views, fmt=fmt, epochs=2, shards=3, per_shard=2, pads=1)
    path = write_dataset_card(tmp_path, m)
    card = path.read_text()
    assert path == tmp_path / "README.md"
    assert m["config_hash"] in card and "| epochs | 2 " in card
    assert "3 shards x 2 samples = 6 samples" in card and "preset `cifar`" in card
    assert "5 source images once plus 1 padding draw(s)" in card and "counts 6 samples per epoch" in card
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WIDS_CACHE", str(tmp_path / "wids-cache"))
    snippet = _code_block(card, "## Load with plain webdataset")
    every_epoch = re.search(r'urls = "[^"]+"  # every epoch: ("[^"]+")', snippet).group(1)
    for epochs, urls in (([0], None), ([0, 1], every_epoch)):
        code = snippet if urls is None else re.sub(r'urls = "[^"]+"', f"urls = {urls}", snippet, count=1)
        scope = {}
        exec(code, scope)
        rows = list(scope["dataset"])  # the padding draw of each epoch is filtered out
        assert len(rows) == 5 * len(epochs) and len(rows[0]) == views + 1
        assert all(r[i].shape == (8, 8, 3) for r in rows for i in range(views))
        assert [r[-1] for r in rows] == [l for e in epochs for i in range(3)
                                         for l in real_labels_of(tmp_path / f"epoch-{e:04d}" / f"ipmix-e{e:04d}-{i:05d}.tar")]
    scope = {}
    exec(_code_block(card, "## Load with wids"), scope)
    assert len(scope["dataset"]) == 6
    for field in m["fields"]:
        assert f'sample[".{field}"]' in card and f".{field}" in scope["sample"]


def test_shard_pattern():
    entry = {"shards": [{"path": f"epoch-0002/ipmix-e0002-{i:05d}.tar"} for i in range(12)]}
    assert shard_pattern(entry) == "epoch-0002/ipmix-e0002-{00000..00011}.tar"
    assert shard_pattern({"shards": entry["shards"][:1]}) == "epoch-0002/ipmix-e0002-00000.tar"
    odd = {"shards": [entry["shards"][0], entry["shards"][2]]}
    assert shard_pattern(odd) == "epoch-0002/ipmix-e0002-00000.tar epoch-0002/ipmix-e0002-00002.tar"


def test_card_mentions_webp_limits_of_wids(tmp_path):
    m = make_shards(tmp_path, fmt="webp", shards=1, per_shard=1, pads=0)
    assert "webp stays as bytes" in render_card(m)


def test_card_lists_dali_indexes_only_when_built(tmp_path):
    m = make_shards(tmp_path, views=3, shards=2, per_shard=1, pads=0)
    assert "DALI" not in render_card(m)
    m["config"]["dali_index"] = True
    card = render_card(m)
    assert "ipmix-e0000-00000.idx" in card and 'ext=["clean.png", "aug1.png", "aug2.png", "cls", "json"]' in card
    dali = _code_block(card, "## Load with NVIDIA DALI")
    compile(dali, "card", "exec")  # DALI is not installed here: the recipe must at least parse
    assert "clean, aug1, aug2, labels, meta = fn.readers.webdataset(" in dali and '["pad"]' in dali


def test_all_epochs_pattern_expands_to_every_shard_and_nothing_else():
    from webdataset.shardlists import expand_urls

    epochs = [{"shards": [{"path": f"epoch-{e:04d}/ipmix-e{e:04d}-{i:05d}.tar"} for i in range(4)]} for e in range(3)]
    pattern = all_epochs_pattern(epochs)
    assert pattern == "{epoch-0000/ipmix-e0000-,epoch-0001/ipmix-e0001-,epoch-0002/ipmix-e0002-}{00000..00003}.tar"
    assert expand_urls(pattern) == [s["path"] for e in epochs for s in e["shards"]]
    for e in epochs:
        assert expand_urls(shard_pattern(e)) == [s["path"] for s in e["shards"]]
    assert all_epochs_pattern(epochs[:1]) == "epoch-0000/ipmix-e0000-{00000..00003}.tar"
    uneven = [epochs[0], {"shards": epochs[1]["shards"][:3]}]  # not one numbering: one pattern per epoch
    assert expand_urls("::".join(all_epochs_pattern(uneven).split())) == [s["path"] for e in uneven for s in e["shards"]]
