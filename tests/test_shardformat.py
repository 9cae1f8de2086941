"""The shard format package: its table of image formats is the one every side uses, and its
tar reader indexes a shard without reading the payloads it is told to skip."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from ipmix_cli.errors import IpmixError
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
    from ipmix_cli.commands.params import ImageFormat

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
    from ipmix_cli.shards.sources import open_source

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
