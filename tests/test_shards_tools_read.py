"""The tar reader, the wids and DALI indexes, and that stock readers read the shards."""

import io
import json
import re
import shutil
import tarfile

import numpy as np
import pytest

from _shards_tools_helpers import encode, make_shards, read_tar_members, write_tar
from ipmix_cli.shards.indexes import (dali_index_path, parse_dali_index, write_dali_index,
                                      write_wids_index)
from ipmix_cli.shardformat.formats import decode_image
from ipmix_cli.shardformat.tario import TarFormatError, iter_entries, iter_members, iter_samples


class OneWay(io.RawIOBase):
    """A non-seekable stream handing out at most 700 bytes per read, like a pipe."""

    def __init__(self, data):
        self.data, self.pos = data, 0

    def readable(self):
        return True

    def read(self, n=-1):
        n = min(700, len(self.data) - self.pos if n < 0 else n)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk


def test_members_and_offsets_match_tarfile(tmp_path):
    make_shards(tmp_path, views=3, shards=1, per_shard=2, pads=0)
    path = tmp_path / "epoch-0000" / "ipmix-e0000-00000.tar"
    with tarfile.open(path) as tar:
        expected = [(m.name, m.offset_data, m.size, tar.extractfile(m).read()) for m in tar.getmembers()]
    with open(path, "rb") as f:
        got = [tuple(e) for e in iter_entries(f)]
    assert got == expected
    assert list(iter_members(OneWay(path.read_bytes()))) == [(n, d) for n, _, _, d in expected]


def test_pax_and_long_names_and_directories(tmp_path):
    path = tmp_path / "pax.tar"
    long_key = "k" * 120
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo("sub")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
        for name, data in [(f"sub/{long_key}.png", b"a" * 10), (f"sub/{long_key}.cls", b"1"),
                           ("ü.cls", b"2")]:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1.5  # float mtime forces a PAX header
            tar.addfile(info, io.BytesIO(data))
    with open(path, "rb") as f:
        samples = list(iter_samples(f))
    assert samples == [(f"sub/{long_key}", {"png": b"a" * 10, "cls": b"1"}), ("ü", {"cls": b"2"})]
    gnu = tmp_path / "gnu.tar"
    with tarfile.open(gnu, "w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo(f"{long_key}.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with open(gnu, "rb") as f:
        assert list(iter_members(f)) == [(f"{long_key}.txt", b"x")]


def test_samples_with_fields_filter_and_missing_field(tmp_path):
    make_shards(tmp_path, views=1, shards=1, per_shard=2, pads=0)
    data = (tmp_path / "epoch-0000" / "ipmix-e0000-00000.tar").read_bytes()
    got = list(iter_samples(io.BytesIO(data), fields=["cls"]))
    assert [k for k, _ in got] == ["e0000s0000000", "e0000s0000001"]
    assert all(set(s) == {"cls"} for _, s in got)
    with pytest.raises(TarFormatError, match="sample e0000s0000000 lacks field 'npy'"):
        list(iter_samples(io.BytesIO(data), fields=["npy"]))


def test_truncation_anywhere_is_an_error(tmp_path):
    make_shards(tmp_path, shards=1, per_shard=2, pads=0)
    data = (tmp_path / "epoch-0000" / "ipmix-e0000-00000.tar").read_bytes()
    end_of_members = max(e.offset + e.size for e in iter_entries(io.BytesIO(data)))
    for cut in (100, 512, 700, 1024, end_of_members):
        with pytest.raises(TarFormatError, match="truncated"):
            list(iter_members(io.BytesIO(data[:cut])))


@pytest.mark.parametrize("fmt", ["png", "npy", "webp", "jpg"])
def test_decode_image(fmt):
    rng = np.random.default_rng(1)
    img = (rng.integers(0, 4, (6, 5, 3)) * 60).astype(np.uint8)
    got = decode_image(f"aug1.{fmt}", encode(img, fmt))
    assert got.shape == (6, 5, 3) and got.dtype == np.uint8
    if fmt in ("png", "npy"):
        np.testing.assert_array_equal(got, img)
    with pytest.raises(TarFormatError, match="cannot decode"):
        decode_image(fmt, b"not an image at all")
    with pytest.raises(TarFormatError, match="not an image"):
        decode_image("cls", b"1")


def test_decode_npy_refuses_wrong_dtype_and_pickles():
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 2, 3), np.float32))
    with pytest.raises(TarFormatError, match="float32"):
        decode_image("npy", buf.getvalue())
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(TarFormatError, match="cannot decode"):
        decode_image("npy", buf.getvalue())


@pytest.mark.parametrize("views", [1, 3])
def test_dali_index_points_at_every_member(tmp_path, views):
    make_shards(tmp_path, views=views, shards=1, per_shard=3, pads=0)
    tar_path = tmp_path / "epoch-0000" / "ipmix-e0000-00000.tar"
    idx = write_dali_index(tar_path)
    assert idx == tmp_path / "epoch-0000" / "ipmix-e0000-00000.idx" == dali_index_path(tar_path)
    text = idx.read_text()
    assert text.splitlines()[0] == "v1.2 3"
    samples = parse_dali_index(idx)
    raw = tar_path.read_bytes()
    with tarfile.open(tar_path) as tar:
        members = tar.getmembers()
        flat = [c for s in samples for c in s]
        assert len(flat) == len(members) == 3 * (views + 2)
        for (ext, offset, size, name), member in zip(flat, members):
            assert (name, offset, size) == (member.name, member.offset_data, member.size)
            assert name.split(".", 1)[1] == ext and offset % 512 == 0
            assert raw[offset : offset + size] == tar.extractfile(member).read()
    # one line per sample, all of that sample's components on it
    assert [{c[3].split(".")[0] for c in s} for s in samples] == [{f"e0000s{i:07d}"} for i in range(3)]


def test_wids_index_reads_every_sample_and_survives_a_move(tmp_path, monkeypatch):
    import wids

    out = tmp_path / "a"
    m = make_shards(out, views=3, shards=2, per_shard=3, pads=1)
    doc = json.loads((out / "epoch-0000" / "wids-index.json").read_text())
    assert doc["__kind__"] == "wids-shard-index-v1" and doc["wids_version"] == 1
    assert [s["url"] for s in doc["shardlist"]] == ["ipmix-e0000-00000.tar", "ipmix-e0000-00001.tar"]
    assert [s["nsamples"] for s in doc["shardlist"]] == [3, 3]
    moved = tmp_path / "moved"
    shutil.move(out, moved)
    monkeypatch.chdir(moved)
    ds = wids.ShardListDataset("epoch-0000/wids-index.json", cache_dir=str(tmp_path / "cache"))
    assert len(ds) == 6
    expected = [mb for i in range(2) for mb in read_tar_members(moved / "epoch-0000" / f"ipmix-e0000-{i:05d}.tar")]
    for i in range(6):
        sample = ds[i]
        assert sample["__key__"] == f"e0000s{i:07d}"
        assert sample[".cls"] == int(dict(expected)[f"e0000s{i:07d}.cls"])
        clean = np.asarray(sample[".clean.png"].convert("RGB"))
        np.testing.assert_array_equal(clean, decode_image("png", dict(expected)[f"e0000s{i:07d}.clean.png"]))
    assert m["epochs"][0]["index"] == "epoch-0000/wids-index.json"


def test_wids_index_names_a_missing_shard(tmp_path):
    m = make_shards(tmp_path, shards=2, per_shard=2, pads=0)
    (tmp_path / "epoch-0000" / "ipmix-e0000-00001.tar").unlink()
    with pytest.raises(Exception, match="ipmix-e0000-00001.tar is missing"):
        write_wids_index(tmp_path, m["epochs"][0], "x")


@pytest.mark.parametrize("views,fmt", [(1, "png"), (3, "npy")])
def test_stock_webdataset_reads_every_sample(tmp_path, views, fmt):
    import webdataset as wds

    m = make_shards(tmp_path, views=views, fmt=fmt, shards=2, per_shard=3, pads=1)
    urls = str(tmp_path / "epoch-0000" / "ipmix-e0000-{00000..00001}.tar")
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8"))
    assert [s["__key__"] for s in samples] == [f"e0000s{i:07d}" for i in range(6)]
    for s in samples:
        assert set(m["fields"]) | {"cls", "json"} <= set(s)
        for field in m["fields"]:
            assert s[field].shape == (8, 8, 3) and s[field].dtype == np.uint8
        assert isinstance(s["cls"], int) and set(s["json"]) == {"index", "pad"}
    assert sum(s["json"]["pad"] for s in samples) == 1


def test_plain_tar_lists_the_members(tmp_path):
    import subprocess

    make_shards(tmp_path, shards=1, per_shard=2, pads=0)
    listing = subprocess.run(["tar", "tvf", str(tmp_path / "epoch-0000" / "ipmix-e0000-00000.tar")],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    assert [re.split(r"\s+", line)[-1] for line in listing] == [
        "e0000s0000000.png", "e0000s0000000.cls", "e0000s0000000.json",
        "e0000s0000001.png", "e0000s0000001.cls", "e0000s0000001.json"]


def test_a_field_twice_in_one_sample_is_a_duplicate(tmp_path):
    path = tmp_path / "d.tar"
    write_tar(path, [(name, b"1") for name in ("a.png", "a.cls", "a.png")])
    with open(path, "rb") as f, pytest.raises(TarFormatError, match="duplicate key a .member 'a.png' appears twice"):
        list(iter_samples(f))
