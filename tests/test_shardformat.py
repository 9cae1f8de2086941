"""The shard format package: its table of image formats is the one every side uses, and its
tar reader indexes a shard without reading the payloads it is told to skip."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from ipmix_cli.common.errors import IpmixError
from ipmix_cli.shardformat import fields, formats
from ipmix_cli.shardformat.tario import TarFormatError, iter_entries
from ipmix_cli.shardformat.tarwriter import TarWriter


@pytest.mark.kernels  # encoding fills a Pillow image through a Numba kernel
def test_every_written_format_encodes_and_decodes_through_the_table():
    img = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    for name, fmt in fields.FORMATS.items():
        quality = 95 if fmt.lossy else None
        data = formats.encode(img, name, quality)
        back = formats.decode_image(f"aug1.{name}", data)
        assert back.shape == img.shape
        if not fmt.lossy:
            assert np.array_equal(back, img)
        if fmt.pil is not None:
            with Image.open(io.BytesIO(data)) as opened:
                assert opened.format == fmt.pil
    assert formats.LOSSY == ("jpg", "webp")
    with pytest.raises(IpmixError, match="use one of png, npy, jpg, webp"):
        formats.resolve_format("gif", None, 32)


def test_field_names_and_aliases():
    assert fields.image_fields(1, "npy") == ["npy"]
    assert fields.image_fields(3, "png") == ["clean.png", "aug1.png", "aug2.png"]
    assert fields.sample_fields(["png"]) == ["png", "cls", "json"]
    assert fields.image_format("clean.JPEG").name == "jpg"
    assert fields.image_format("cls") is None and fields.image_format("aug1.gif") is None
    assert formats.resolve_format("JPEG", 80, 32) == ("jpg", 80)


def test_the_cli_offers_the_formats_of_the_table():
    from ipmix_cli.cli.params import ImageFormat

    choice = ImageFormat()
    assert list(choice.choices) == list(fields.FORMATS)
    assert choice.convert("jpeg", None, None) == "jpg"


def _pax_shard() -> bytes:
    """Members as webdataset's writer leaves them: a float mtime makes tarfile add PAX headers."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("a.png", b"p" * 700), ("a.cls", b"3"), ("b.png", b"q" * 10), ("b.cls", b"4")):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1.5
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class _OneWay(io.RawIOBase):
    """A pipe: readable, not seekable."""

    def __init__(self, data):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, b):
        return self._data.readinto(b)


@pytest.mark.parametrize("make", [lambda: io.BytesIO(_pax_shard()), lambda: _OneWay(_pax_shard())])
def test_skipped_payloads_keep_their_offsets(make):
    raw = _pax_shard()
    full = list(iter_entries(io.BytesIO(raw)))
    f = make()
    skipped = list(iter_entries(f, read=lambda name: name.endswith(".cls")))
    assert [(e.name, e.offset, e.size) for e in skipped] == [(e.name, e.offset, e.size) for e in full]
    for mine, ref in zip(skipped, full):
        assert raw[ref.offset:ref.offset + ref.size] == ref.data
        if mine.name.endswith(".cls") or not f.seekable():
            assert mine.data == ref.data  # read, or a pipe that cannot skip
        else:
            assert mine.data is None


def test_a_shard_cut_inside_a_skipped_payload_is_still_truncated():
    buf = io.BytesIO()
    writer = TarWriter(buf)
    writer.add_sample("a", [("png", b"x" * 2000), ("cls", b"1")])
    writer.close()
    cut = buf.getvalue()[:1024]  # the header of a.png and half its payload
    with pytest.raises(TarFormatError, match="truncated"):
        list(iter_entries(io.BytesIO(cut), read=lambda name: False))


def test_wds_source_reads_shards_with_pax_headers(tmp_path):
    from ipmix_cli.data.sources import open_source

    imgs = [np.full((6, 6, 3), 40 * i, np.uint8) for i in range(3)]
    with tarfile.open(tmp_path / "s.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        for i, img in enumerate(imgs):
            png = io.BytesIO()
            Image.fromarray(img).save(png, format="PNG")
            for name, data in ((f"k{i}.png", png.getvalue()), (f"k{i}.cls", str(i + 1).encode())):
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), 2.5
                tar.addfile(info, io.BytesIO(data))
    src = open_source(f"wds:{tmp_path / 's.tar'}")
    assert list(src.labels) == [1, 2, 3]
    assert all(np.array_equal(src.read(i), imgs[i]) for i in range(3))
    (tmp_path / "s.tar").write_bytes((tmp_path / "s.tar").read_bytes()[:1500])
    with pytest.raises(IpmixError, match=r"cannot read shard .*s\.tar: truncated tar"):
        open_source(f"wds:{tmp_path / 's.tar'}")


def _doc(**changes) -> dict:
    """A manifest document as an older ipmix or a hand-made fixture writes it: some optional
    keys absent, one key this version does not know."""
    doc = {
        "schema": "ipmix-shards", "schema_version": 1, "complete": True, "config": {"seed": 1},
        "config_hash": "ab" * 32, "seed": 1, "image_size": 8, "views": 1, "format": "png", "quality": None,
        "fields": ["png"], "classes": ["a", "b"], "num_classes": 2, "samples_per_epoch": 4,
        "shards_per_epoch": 2, "samples_per_shard": 2, "base_url": "pipe:cat {path}",
        "epochs": [{"epoch": 0, "shards": [{"path": f"epoch-0000/shard-{s:05d}.tar", "count": 2, "bytes": 10240,
                                            "sha256": "cd" * 32} for s in range(2)]}],
    }
    doc.update(changes)
    return doc


def test_manifest_round_trip_keeps_absent_and_unknown_keys():
    from ipmix_cli.shardformat.manifest import Manifest

    doc = _doc()
    m = Manifest.from_json(doc)
    assert m.to_json() == doc
    assert m.fields == ("png",) and m.epochs[0].shards[1].path == "epoch-0000/shard-00001.tar"
    assert m.extra == {"base_url": "pipe:cat {path}"} and m.num_epochs is None
    assert m.validate() == []
    assert m.class_names() == ["a", "b"] and m.epoch(0) is m.epochs[0] and m.epoch(1) is None


@pytest.mark.parametrize("changes,message", [
    ({"schema": "other"}, "not an ipmix shards manifest"),
    ({"fields": None}, "'fields' should be list, is NoneType"),
    ({"num_classes": True}, "'num_classes' should be int, is bool"),
    ({"fields": ["png", "txt"]}, "unsupported fields"),
    ({"epochs": []}, "lists no epochs"),
    ({"epochs": [{"epoch": 0, "shards": []}]}, "materialized epoch 0 lists no shards"),
    ({"epochs": [{"epoch": 0, "shards": [{"path": "x.tar"}]}]}, "shard entry without a path and count"),
])
def test_manifest_faults_readers_cannot_use(changes, message):
    from ipmix_cli.shardformat.manifest import Manifest, ManifestError

    with pytest.raises(ManifestError, match=message):
        Manifest.from_json(_doc(**changes))


def test_manifest_validate_lists_what_a_finished_build_breaks():
    from ipmix_cli.shardformat.manifest import Manifest

    doc = _doc(schema_version=3, complete=False, views=3, samples_per_shard=3)
    doc["epochs"][0]["shards"][0].pop("sha256")
    problems = Manifest.from_json(doc).validate()
    assert problems == [
        "manifest schema_version 3 is not supported (this ipmix reads version 1, 2; a newer ipmix wrote it?)",
        "manifest says the build is not complete (run the build command again to finish it)",
        "manifest has 1 fields for 3 views",
        "manifest: 2 shards x 3 samples != samples_per_epoch 4",
        "epoch 0 shard 0 lacks path/count/bytes/sha256",
        "epoch-0000/shard-00001.tar: manifest count 2 != samples_per_shard 3",
    ]
    assert Manifest.from_json({k: v for k, v in _doc().items() if k != "seed"}).validate() == ["manifest lacks 'seed'"]


@pytest.mark.kernels
def test_a_built_manifest_reads_back_to_the_same_bytes(tmp_path):
    import json

    from fractalgen.render import render_set
    from ipmix_cli.shardformat.manifest import Manifest
    from ipmix_cli.shards import build_shards

    render_set(tmp_path / "mix", escape=1, ifs=1, size=32, seed=3)
    build_shards(source="digits:test", fractals=tmp_path / "mix", out=tmp_path / "out", epochs=2, shards=3,
                 seed=2, progress=False)
    raw = (tmp_path / "out" / "manifest.json").read_bytes()
    m = Manifest.from_json(json.loads(raw))
    assert (json.dumps(m.to_json(), indent=1, sort_keys=True) + "\n").encode() == raw
    assert m.validate() == [] and m.absent == frozenset() and m.extra == {}
    assert [len(e.shards) for e in m.epochs] == [3, 3] and m.totals["samples"] == 2 * m.samples_per_epoch


def test_a_shard_record_reads_back_and_a_damaged_one_means_a_rebuild(tmp_path):
    import json

    from ipmix_cli.shardformat.manifest import ShardRecord
    from ipmix_cli.shards.manifest import epoch_entry, read_record, record_path, write_record

    record = {"epoch": 1, "shard": 2, "path": "epoch-0001/ipmix-e0001-00002.tar", "count": 5, "bytes": 10240,
              "sha256": "ab" * 32, "md5": "cd" * 16, "config_hash": "ef" * 32, "bad_samples": []}
    write_record(tmp_path, record)
    path = record_path(tmp_path, 1, 2)
    assert path.read_bytes() == json.dumps(record, sort_keys=True).encode()
    assert read_record(tmp_path, 1, 2) == record
    assert epoch_entry(1, [record])["shards"] == [{"path": record["path"], "count": 5, "bytes": 10240,
                                                   "sha256": "ab" * 32}]
    older = {k: v for k, v in record.items() if k not in ("md5", "bad_samples")}  # as older builds wrote them
    path.write_text(json.dumps(older))
    assert read_record(tmp_path, 1, 2) == older and ShardRecord.from_json(older).md5 is None
    for damaged in ({k: v for k, v in record.items() if k != "bytes"}, dict(record, count="5"), [record]):
        path.write_text(json.dumps(damaged))
        assert read_record(tmp_path, 1, 2) is None
    with pytest.raises(IpmixError, match="'sha256' should be str"):
        write_record(tmp_path, dict(record, sha256=None))
