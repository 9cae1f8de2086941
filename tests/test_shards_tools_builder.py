"""The tools on real `build_shards` output (a tiny digits subset)."""

import json
import tarfile

import pytest

from _shards_tools_helpers import write_digits_subset, write_mixing_pictures
from ipmix_cli.cli import main as cli
from ipmix_cli.shards import build_shards
from ipmix_cli.shards.indexes import parse_dali_index
from ipmix_cli.shards.inspect import inspect
from ipmix_cli.shards.preview import preview
from ipmix_cli.shardformat.tario import iter_samples
from ipmix_cli.shards.verify import VerifyError, verify

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    return write_digits_subset(root / "digits"), write_mixing_pictures(root / "mix")


@pytest.mark.parametrize("recipe,views", [("none", 1), ("ipmix", 3)])
def test_tools_on_builder_output(tmp_path, monkeypatch, capsys, inputs, recipe, views):
    digits, mix = inputs
    out = tmp_path / "out"
    m = build_shards(source=str(digits), fractals=mix, out=out, recipe=recipe, views=views, epochs=2,
                     shards=4, seed=3, dali_index=True, progress=False)
    report = verify(out, deep=True, progress=False)
    assert report["ok"] and report["samples"] == 2 * m["samples_per_epoch"] == 32
    assert report["pads"] == 2 * m["pads_per_epoch"] == 4

    summary = inspect(out, scan_epoch=1)
    assert summary["samples"] == 32 and summary["bytes"] == report["bytes"]
    assert sum(summary["class_histogram"].values()) == 16 and summary["pads"] == 2

    result = preview(out, tmp_path / "p.png", epoch=1, n=6)
    assert result["tiles"] == 6 * views

    # every DALI index line points at the members' bytes
    for entry in m["epochs"]:
        for shard in entry["shards"]:
            tar_path = out / shard["path"]
            flat = [c for s in parse_dali_index(tar_path.with_suffix(".idx")) for c in s]
            with tarfile.open(tar_path) as tar:
                assert [(c[3], c[1], c[2]) for c in flat] == [(i.name, i.offset_data, i.size) for i in tar]

    # wids reads every sample through the index the builder wrote
    import wids

    monkeypatch.chdir(out)
    ds = wids.ShardListDataset("epoch-0001/wids-index.json", cache_dir=str(tmp_path / "wids"))
    with open(out / "epoch-0001" / "ipmix-e0001-00000.tar", "rb") as f:
        first = dict(iter_samples(f))
    assert len(ds) == 16
    for i in range(len(ds)):
        sample = ds[i]
        assert set(m["fields"]) == {k[1:] for k in sample if k.startswith(".") and k[1:] not in ("cls", "json")}
        if sample["__key__"] in first:
            mine = first[sample["__key__"]]
            assert sample[".cls"] == int(mine["cls"]) and sample[".json"] == json.loads(mine["json"])

    # stock webdataset
    import webdataset as wds

    urls = [str(out / s["path"]) for s in m["epochs"][0]["shards"]]
    rows = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8").to_tuple(*m["fields"], "cls", "json"))
    assert len(rows) == 16 and sum(r[-1]["pad"] for r in rows) == 2
    assert all(r[i].shape == (32, 32, 3) for r in rows for i in range(views))

    if views == 3:  # the card's ipmix recipe, with no worker processes and a batch the tiny set can fill
        card = (out / "README.md").read_text()
        code = card[card.index("## Load with ipmix"):].split("```python\n", 1)[1].split("```", 1)[0]
        for old, new in (("num_workers=4", "num_workers=0"), ("batch_size=128", "batch_size=4"),
                         ("        ...", "        seen.append(images.shape)")):
            assert old in code
            code = code.replace(old, new)
        scope = {"train_epochs": 1, "seen": []}
        exec(code, scope)
        assert scope["seen"] and all(tuple(s)[1:] == (3, 3, 32, 32) for s in scope["seen"])

    # the CLI on the same output; then one damaged byte is caught
    assert cli.run(["shards", "verify", str(out), "--deep", "--quiet"]) == 0
    assert "32 samples (4 pads)" in capsys.readouterr().out
    tar_path = out / m["epochs"][1]["shards"][1]["path"]
    data = bytearray(tar_path.read_bytes())
    data[700] ^= 1
    tar_path.write_bytes(bytes(data))
    with pytest.raises(VerifyError, match="epoch-0001/ipmix-e0001-00001.tar: sha256"):
        verify(out, progress=False)
