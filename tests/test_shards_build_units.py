import io
import math
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ipmix_cli.common.errors import IpmixError
from ipmix_cli.shardformat import formats
from ipmix_cli.shards.plan import Plan, choose_shard_count, node_tasks, sample_key
from ipmix_cli.shardformat.tarwriter import Rows, TarWriter

from _shards_build_helpers import smooth_picture


def test_tar_writer_matches_python_tarfile_ustar():
    members = [("e0000s0000000.png", b"\x89PNG" * 300), ("e0000s0000000.cls", b"7"),
               ("e0000s0000000.json", b'{"index":3,"pad":false}'), ("e0000s0000001.png", b""),
               ("e0000s0000001.cls", b"12"), ("e0000s0000001.json", b"x" * 512)]
    mine = io.BytesIO()
    w = TarWriter(mine)
    for name, data in members:
        w.add(name, data)
    w.close()
    assert mine.getvalue() == _tarfile_bytes(members)
    assert w.bytes == len(mine.getvalue()) and w.bytes % 10240 == 0
    grouped = io.BytesIO()
    g = TarWriter(grouped)
    g.add_sample("e0000s0000000", [(n.split(".", 1)[1], d) for n, d in members[:3]])
    g.add_sample("e0000s0000001", [(n.split(".", 1)[1], d) for n, d in members[3:]])
    g.close()
    assert grouped.getvalue() == mine.getvalue() and g.sha256 == w.sha256 and g.members == 6
    import hashlib

    assert w.sha256 == hashlib.sha256(mine.getvalue()).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(mine.getvalue())) as tf:
        infos = tf.getmembers()
        assert [i.name for i in infos] == [n for n, _ in members]
        assert all(i.mtime == 0 and i.uid == 0 and i.mode == 0o644 and i.uname == "" for i in infos)
        assert tf.extractfile(infos[0]).read() == members[0][1]


def test_tar_writer_refuses_dotted_keys():
    w = TarWriter(io.BytesIO())
    with pytest.raises(ValueError):
        w.add_sample("img.v2_0001", [("png", b"")])
    assert "." not in sample_key(3, 1234567) and sample_key(3, 12) == "e0003s0000012"


@pytest.mark.parametrize("n,shards", [(10, 3), (1437, 32), (100, 7), (5, 5), (17, 4)])
def test_plan_equal_shards_every_sample_once_plus_marked_pads(n, shards):
    plan = Plan(n, shards, seed=3)
    assert plan.samples_per_epoch == plan.samples_per_shard * shards >= n
    assert plan.pads_per_epoch == plan.samples_per_epoch - n < shards
    for epoch in (0, 1):
        index, is_pad = plan.epoch_order(epoch)
        assert np.array_equal(np.sort(index[~is_pad]), np.arange(n))
        assert is_pad.sum() == plan.pads_per_epoch
        rows = [plan.shard_rows(epoch, s) for s in range(shards)]
        assert all(len(r[0]) == plan.samples_per_shard for r in rows)
        assert np.array_equal(np.concatenate([r[1] for r in rows]), index)
    a, b = plan.epoch_order(0)[0], plan.epoch_order(1)[0]
    if n > 5:
        assert not np.array_equal(a, b)  # each epoch is its own shuffle
        assert not np.array_equal(a[~plan.epoch_order(0)[1]], np.arange(n))  # pre-shuffled
    assert np.array_equal(Plan(n, shards, 3).epoch_order(1)[0], b)  # pure function of (seed, epoch)
    assert not np.array_equal(Plan(n, shards, 4).epoch_order(1)[0], b)


def test_default_shard_count_divides_common_reader_counts():
    for n in (1437, 50_000, 1_281_167):
        s = choose_shard_count(n, 4000)
        assert n / s >= 32
        for readers in (1, 2, 4, 8, 16, 32, 64):
            assert s % readers == 0 or readers > s, (n, s, readers)
    assert choose_shard_count(50_000, 4000) == 64
    assert choose_shard_count(1_281_167, 24_000) == 128  # ~240 MB shards
    assert choose_shard_count(12) == 1
    assert choose_shard_count(100) in (2, 3)


def test_node_partition_covers_every_task_once():
    parts = [node_tasks(range(3), 5, 4, r) for r in range(4)]
    flat = sorted(t for p in parts for t in p)
    assert flat == [(e, s) for e in range(3) for s in range(5)]
    assert all(abs(len(p) - 15 / 4) < 1 for p in parts)


def test_node_tasks_are_counted_and_walked_in_constant_memory():
    import itertools
    import tracemalloc

    tracemalloc.start()
    tasks = node_tasks(range(1000), 65_536, 3, 1)  # 65.5 million tasks in all
    n = len(tasks)
    head = list(itertools.islice(tasks, 4))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == len(range(1, 1000 * 65_536, 3)) and head == [(0, 1), (0, 4), (0, 7), (0, 10)]
    assert peak < 64 << 10  # a list of the tasks would take gigabytes
    assert list(node_tasks(range(2, 4), 3, 2, 0)) == [(2, 0), (2, 2), (3, 1)]  # task numbers 6, 8, 10


@pytest.mark.kernels
def test_formats_round_trip():
    img = smooth_picture(32, 5)
    img[::3, ::2] = 255 - img[::3, ::2]  # speckle like an augmented sample
    buf = io.BytesIO()
    np.save(buf, img)
    assert formats.encode(img, "npy") == buf.getvalue()
    for fmt in ("png", "npy"):
        assert np.array_equal(formats.decode_image(fmt, formats.encode(img, fmt)), img)
    for fmt in ("jpg", "webp"):
        back = formats.decode_image(fmt, formats.encode(img, fmt, 95))
        assert back.shape == img.shape
        p95 = formats.psnr(img, back)
        p30 = formats.psnr(img, formats.decode_image(fmt, formats.encode(img, fmt, 30)))
        assert math.isfinite(p95) and p95 > p30 > 10
    rows = formats.measure_formats([img] * 3, [("png", None), ("jpg", 90)], repeats=1)
    assert rows[0]["psnr_db"] == float("inf") and rows[1]["psnr_db"] < 100
    assert all(r["bytes"] > 0 and r["encode_us"] > 0 for r in rows)


def test_format_resolution():
    assert formats.resolve_format(None, None, 32) == formats.default_format(32) == ("npy", None)
    assert formats.resolve_format(None, None, 224) == ("jpg", 95)
    assert formats.resolve_format("jpeg", 80, 32) == ("jpg", 80)
    assert formats.resolve_format("webp", None, 32) == ("webp", 95)
    with pytest.raises(IpmixError, match="quality"):
        formats.resolve_format("png", 90, 32)
    with pytest.raises(IpmixError, match="default format at 32 px is npy"):  # not silently ignored
        formats.resolve_format(None, 90, 32)
    assert formats.resolve_format(None, 90, 224) == ("jpg", 90)
    with pytest.raises(IpmixError, match="unknown format"):
        formats.resolve_format("gif", None, 32)


@pytest.mark.kernels
def test_encoding_through_the_reused_canvas_gives_pillows_bytes():
    import threading

    encode = formats.encode
    rs = np.random.default_rng(5)
    arrays = [rs.integers(0, 256, shape, dtype=np.uint8) for shape in ((48, 48, 3), (17, 31, 3), (48, 48, 3))]

    def pillow(a, fmt):
        buf = io.BytesIO()
        if fmt == "jpg":
            Image.fromarray(a).save(buf, format="JPEG", quality=95, subsampling=0)
        else:
            Image.fromarray(a).save(buf, format="PNG", compress_level=6)
        return buf.getvalue()

    for fmt, q in (("jpg", 95), ("png", None)):
        assert [encode(a, fmt, q) for a in arrays] == [pillow(a, fmt) for a in arrays]
    # threads (a Dask worker runs several) each get their own canvas
    results = {}

    def run(t):
        results[t] = [encode(arrays[(t + i) % 3], "png") for i in range(30)]

    threads = [threading.Thread(target=run, args=(t,)) for t in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for t, blobs in results.items():
        assert blobs == [pillow(arrays[(t + i) % 3], "png") for i in range(30)]


@pytest.mark.kernels
def test_bench_reference_pipeline_encodes_224_views(tmp_path):
    # the 224 px baseline of `ipmix bench build`: per sample a mixing picture loaded from the
    # folder (or taken from a pre-loaded bank), the same JPEG settings as the build
    from ipmix_cli.augment import MixingBank, resolve_config
    from ipmix_cli.bench.build import reference_pipeline, write_mixing_folder, write_photo_folder

    files = sorted(write_photo_folder(tmp_path / "photos", 2).glob("*/*.jpg"))
    mix = write_mixing_folder(tmp_path / "mix", n=2, size=256)
    Image.fromarray(np.zeros((256, 300, 3), np.uint8)).save(mix / "wide.png")  # resized by its shorter side
    cfg = resolve_config("imagenet", views=1)
    for mixing in (sorted(mix.glob("*.png")), MixingBank.from_folder(mix, cfg).pixels):
        blobs = reference_pipeline(files, cfg, mixing, seed=3)
        assert len(blobs) == 4 and blobs == reference_pipeline(files, cfg, mixing, seed=3)
        for b in blobs:
            img = Image.open(io.BytesIO(b))
            assert img.format == "JPEG" and img.size == (224, 224)


def test_peak_rss_is_read_in_the_units_of_each_platform():
    from ipmix_cli.shards.build import peak_rss_mb

    # getrusage's ru_maxrss: KiB on Linux, bytes on macOS; both mean 300 MiB here
    assert peak_rss_mb(300 * 1024, platform="linux") == 300.0
    assert peak_rss_mb(300 * 1024 * 1024, platform="darwin") == 300.0
    here = peak_rss_mb()  # this process (the test runner with numpy loaded) is tens of MiB, not GiB or KiB
    assert 10 < here < 8192


def test_peak_rss_of_a_process_is_its_own_not_that_of_the_process_that_started_it():
    # Linux carries getrusage's ru_maxrss over fork and exec: a small process started by a big
    # one reported the big one's peak (the bench's 2-worker build reported its own 280 MB)
    import subprocess
    import sys

    import numpy as np

    big = np.ones(400 << 20, np.uint8)  # 400 MiB resident in this process
    code = "from ipmix_cli.shards.build import peak_rss_mb; print(peak_rss_mb())"
    small = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout)
    assert big.sum() == big.size and small < 300


def _tarfile_bytes(members) -> bytes:
    ref = io.BytesIO()
    with tarfile.open(fileobj=ref, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode, ti.uname, ti.gname = len(data), 0, 0o644, "", ""
            tf.addfile(ti, io.BytesIO(data))
    return ref.getvalue()


@pytest.mark.parametrize("pixels", [3072, 5000])  # one block layout for every sample; or members of mixed sizes
def test_tar_writer_blocks_of_samples_match_python_tarfile(pixels):
    # add_samples makes all headers of a block at once with NumPy: the bytes must still be
    # what tarfile writes member by member (keys of two lengths, labels of 1-3 digits, a
    # payload of exactly one block, an empty one, and with `pixels` 5000 pictures whose
    # padded sizes differ from the json's)
    rng = np.random.default_rng(0)
    keys = ["e0000s0000007", "e0001s0000012", "e12345s12345678"]
    views = rng.integers(0, 256, (3, pixels), dtype=np.uint8)
    cls = [b"7", b"12", b"345"]
    meta = [b'{"index":7,"pad":false}', b"x" * 512, b""]
    extra = [b"a" * 600, b"b", b"c" * 1100] if pixels != 3072 else [b"a", b"b", b"c"]
    members = []
    for r, k in enumerate(keys):
        members += [(f"{k}.npy", views[r].tobytes()), (f"{k}.cls", cls[r]), (f"{k}.json", meta[r]),
                    (f"{k}.txt", extra[r])]
    w = TarWriter(io.BytesIO())
    w.add_samples(keys, [("npy", Rows(b"HEAD", views[:, 4:])), ("cls", cls),
                         ("json", meta), ("txt", extra)])
    w.close()
    members = [(n, b"HEAD" + d[4:] if n.endswith(".npy") else d) for n, d in members]
    expected = _tarfile_bytes(members)
    assert w.f.getvalue() == expected and w.members == 12 and w.bytes == len(expected)
    one_by_one = TarWriter(io.BytesIO())
    for r, k in enumerate(keys):
        one_by_one.add_sample(k, [("npy", b"HEAD" + views[r, 4:].tobytes()), ("cls", cls[r]), ("json", meta[r]),
                                  ("txt", extra[r])])
    one_by_one.close()
    assert one_by_one.f.getvalue() == expected and one_by_one.sha256 == w.sha256


def test_tar_writer_blocks_refuse_bad_columns_and_names():
    w = TarWriter(io.BytesIO())
    with pytest.raises(ValueError, match="uint8"):
        w.add_samples(["a", "b"], [("npy", np.zeros((2, 4), np.int16))])
    with pytest.raises(ValueError, match="payloads for 2 keys"):
        w.add_samples(["a", "b"], [("cls", [b"1"])])
    with pytest.raises(ValueError, match="longer than 100 bytes"):
        w.add_samples(["k" * 97], [("json", [b"{}"])])
    with pytest.raises(ValueError, match="must not contain"):
        w.add_samples(["a.b"], [("cls", [b"1"])])
    assert w.bytes == 0 and w.f.getvalue() == b""


@pytest.mark.kernels
def test_encode_column_npy_rows_equal_encode_of_each_image():
    images = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    for block_of in (images[:, ::-1], np.stack([images, images], axis=1)[:, 1]):  # strided; a view like views[:, v]
        head, rows = formats.encode_column(block_of, "npy")
        assert len(head) == 128 and rows.shape == (5, 3072)
        assert [head + row.tobytes() for row in rows] == [formats.encode(im, "npy") for im in block_of]
    assert formats.encode_column(np.stack([images, images], axis=1)[:, 1], "npy").rows.base is not None  # no copy
    assert formats.encode_column(images[:2], "png") == [formats.encode(im, "png") for im in images[:2]]


def test_sample_json_is_what_json_dumps_writes():
    import json

    from ipmix_cli.shards.build import _meta_json

    for index, pad, replaces in ((0, False, None), (49999, True, None), (12, False, 7), (3, True, 123456)):
        m = {"index": index, "pad": pad}
        if replaces is not None:
            m["replaces"] = replaces
        assert _meta_json(index, pad, replaces) == json.dumps(m, separators=(",", ":")).encode()


def test_early_writeback_file_writes_every_byte_in_order(tmp_path, monkeypatch):
    # the shard file asks for writeback every WRITEBACK_BYTES: what lands on disk is unchanged
    from ipmix_cli.shards.build import _EarlyWriteback

    monkeypatch.setattr(_EarlyWriteback, "WRITEBACK_BYTES", 1000)
    parts = [bytes([i]) * (300 + 97 * i) for i in range(20)]
    with open(tmp_path / "x.bin", "wb") as f:
        early = _EarlyWriteback(f)
        for p in parts:
            assert early.write(memoryview(p)) == len(p)
    assert (tmp_path / "x.bin").read_bytes() == b"".join(parts)
    assert 0 < early.done <= early.written == sum(map(len, parts))


@pytest.mark.kernels
def test_build_reports_the_seconds_of_each_stage(tmp_path):
    from ipmix_cli.shards import build_shards
    from ipmix_cli.shards.build import STAGES

    m = build_shards(source="digits:test", out=tmp_path / "o", recipe="none", shards=2, progress=False)
    st = m["build_stats"]["stage_seconds"]
    assert set(st) == {*STAGES, "fsync_background"}  # fsync: what the worker waited; background: the fsync itself
    assert all(st[k] > 0 for k in STAGES if k != "fsync") and st["fsync"] >= 0
    assert sum(st[k] for k in STAGES) <= m["build_stats"]["seconds"]  # the worker's own time


@pytest.mark.kernels
def test_shard_fsync_in_the_background_keeps_record_after_fsync_and_fails_cleanly(tmp_path, monkeypatch):
    # while shard k+1 is made, shard k is fsynced in a thread: its record exists only once its
    # fsync returned, and a failing fsync (a full disk) ends the build with one clear error, the
    # failed shard's temporary file removed and the shards before it recorded
    import errno
    import os as _os

    from ipmix_cli.shards import build as build_mod
    from ipmix_cli.shards import build_shards
    from ipmix_cli.shards import manifest as mf

    out = tmp_path / "o"
    synced, real_fsync = [], _os.fsync

    def fsync(fd):  # os.fsync of every file; the third shard's fails
        name = _os.readlink(f"/proc/self/fd/{fd}")
        if name.endswith(".tar.%d.tmp" % _os.getpid()):
            if len(synced) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            synced.append(name)
        real_fsync(fd)

    monkeypatch.setattr(build_mod.os, "fsync", fsync)
    with pytest.raises(IpmixError, match="no space left on device"):
        build_shards(source="digits:test", out=out, recipe="none", shards=4, progress=False)
    records = [mf.read_record(out, 0, s) for s in range(4)]
    assert [r is not None for r in records] == [True, True, False, False]
    assert all(r["bytes"] == _os.path.getsize(out / r["path"]) for r in records[:2])
    assert not list(out.rglob("*.tmp"))
    monkeypatch.setattr(build_mod.os, "fsync", real_fsync)
    m = build_shards(out=out, progress=False)
    assert m["complete"] and m["build_stats"]["shards_kept"] == 2


@pytest.mark.kernels
def test_bench_build_times_the_real_command_beside_floor_disk_and_stages(tmp_path):
    # `ipmix bench build` runs `ipmix shards build` as a process (wall and CPU seconds, OUT
    # removed afterwards), a failing command is a one-line error, and the floor, the disk's
    # rate and the per-stage breakdown come from real writes and a real build

    from ipmix_cli.bench import build as bb
    from ipmix_cli.shards.build import STAGES

    src = f"cifar10:{bb.write_digits_cifar(tmp_path / 'cifar', 300)}"
    mix = bb.write_mixing_folder(tmp_path / "mix", n=4, size=64)
    cmd = bb.build_command(src, mix, tmp_path / "o", epochs=1, recipe="none", views=1, workers=1)
    wall, cpu = bb.time_command(cmd, tmp_path / "o", core=None)
    assert wall > 0 and cpu > 0 and not (tmp_path / "o").exists()
    with pytest.raises(IpmixError, match="source not found"):
        bb.time_command(bb.build_command("cifar10:" + str(tmp_path / "nothing"), mix, tmp_path / "o", epochs=1,
                                         recipe="none", views=1, workers=1), tmp_path / "o", core=None)
    floor = bb.floor_command(tmp_path / "cifar", tmp_path / "floor.bin", 2)
    subprocess.run(floor, check=True)  # every record of the source, in order, once per epoch
    records = b"".join(p.read_bytes() for p in sorted((tmp_path / "cifar" / "cifar-10-batches-bin").glob("data_batch_*")))
    assert len(records) == 300 * 3073 and (tmp_path / "floor.bin").read_bytes() == records * 2
    wall, cpu = bb.time_command(floor, tmp_path / "floor.bin", core=None)
    assert wall > 0 and cpu > 0 and not (tmp_path / "floor.bin").exists()
    assert bb.disk_rate(tmp_path / "disk", 5 << 20) > 0 and not list((tmp_path / "disk").iterdir())
    us = bb.stage_breakdown(src, mix, tmp_path / "s", recipe="ipmix", views=3, epochs=1)
    assert set(us) == {*STAGES, "rest"} and us["augment"] > 0 and us["hash"] > 0 and us["rest"] > 0
    rates = bb.engine_rates(src, mix, 300, min_seconds=0.05)
    # Rates only: which of two timings is larger is for the benchmark, not a test on a shared machine.
    assert all(rates[k] > 0 and math.isfinite(rates[k]) for k in ("view", "jsd", "view_cpu", "jsd_cpu"))


def test_bench_caches_the_bytecode_of_every_module_it_times():
    # the timed commands import ipmix as an installed package does: from current bytecode
    import importlib.util

    import fractalgen
    import ipmix_cli
    from ipmix_cli.bench.build import cache_bytecode

    cache_bytecode()
    for package in (ipmix_cli, fractalgen):
        for source in Path(package.__file__).parent.rglob("*.py"):
            cached = Path(importlib.util.cache_from_source(str(source)))
            assert cached.is_file(), source
            assert cached.stat().st_mtime >= source.stat().st_mtime - 1, source


def test_tar_writer_reused_block_buffer_leaves_nothing_of_the_previous_block():
    # the second block has shorter labels and json than the first: no byte of the first may show
    rng = np.random.default_rng(2)
    blocks = [(["e0000s0000000", "e0000s0000001"], rng.integers(0, 256, (2, 700), dtype=np.uint8),
               [b"123", b"456"], [b"j" * 300, b"k" * 290]),
              (["e0000s0000002"], rng.integers(0, 256, (1, 700), dtype=np.uint8), [b"7"], [b"{}"])]
    w = TarWriter(io.BytesIO())
    members = []
    for keys, pics, cls, meta in blocks:
        w.add_samples(keys, [("npy", pics), ("cls", cls), ("json", meta)])
        for r, k in enumerate(keys):
            members += [(f"{k}.npy", pics[r].tobytes()), (f"{k}.cls", cls[r]), (f"{k}.json", meta[r])]
    w.close()
    assert w.f.getvalue() == _tarfile_bytes(members)


def test_tar_writer_splits_big_blocks_into_pieces_with_the_same_bytes(monkeypatch):
    # a block bigger than LAYOUT_BYTES goes out in several pieces (a buffer of a few samples)
    from ipmix_cli.shardformat import tarwriter

    monkeypatch.setattr(tarwriter, "LAYOUT_BYTES", 5000)  # 2 samples of 2,560 bytes per piece
    rng = np.random.default_rng(3)
    keys = [f"e0000s{i:07d}" for i in range(5)]
    pics = rng.integers(0, 256, (5, 900), dtype=np.uint8)
    cls = [b"%d" % i for i in range(5)]
    w = TarWriter(io.BytesIO())
    w.add_samples(keys, [("npy", Rows(b"H" * 7, pics)), ("cls", cls)])
    w.close()
    members = []
    for r, k in enumerate(keys):
        members += [(f"{k}.npy", b"H" * 7 + pics[r].tobytes()), (f"{k}.cls", cls[r])]
    assert w.f.getvalue() == _tarfile_bytes(members) and w.members == 10


def test_config_hash_of_a_fixed_spec_is_the_one_builds_already_carry(tmp_path):
    # Resuming or extending a build compares this hash with the one in its manifest: a change
    # of how the spec is assembled must not change it (recorded from a build made before
    # BuildSpec existed). Resolving writes nothing.
    from ipmix_cli.shards import manifest as mf
    from ipmix_cli.shards.build import resolve
    from ipmix_cli.shards.spec import BuildRequest, RunOptions

    out = tmp_path / "o"
    build = resolve(BuildRequest(source="digits:test", recipe="none", shards=3), RunOptions(out=out, dry_run=True))
    assert build.spec.config_hash == "5a6bc77cdf6cc9da05cd9144d8315935927b4aee67eb4073595ff1d188557bed"
    assert mf.config_hash(build.spec.config()) == build.spec.config_hash
    assert list(build.spec.config())[:4] == ["source", "fractals", "preset", "recipe"]  # the manifest's order
    assert build.spec.crop == "pad" and build.spec.fields == ["npy"] and build.epochs == 1
    assert not out.exists()


def test_the_task_runner_does_not_import_the_builder():
    # shards.distributed runs whatever task function it is given: no import of shards.build in
    # it, not even one inside a function (the two used to import each other)
    import ast

    import ipmix_cli.shards.distributed as runner

    with open(runner.__file__) as f:
        tree = ast.parse(f.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.update(f"{node.module}.{a.name}" for a in node.names)
    assert "ipmix_cli.shards.manifest" in imported  # the scan sees its imports
    assert not [name for name in imported if name.startswith("ipmix_cli.shards.build")]


def test_sample_keys_are_sample_key_at_once_and_write_the_same_tar():
    from ipmix_cli.shards.plan import sample_keys

    for epoch, positions in ((0, [0, 1, 9_999_999, 123]), (9999, [5, 42]), (3, [])):
        keys = sample_keys(epoch, np.array(positions, np.int64))
        assert isinstance(keys, np.ndarray) and [k.decode() for k in keys] == [sample_key(epoch, p) for p in positions]
    # wider keys than 13 bytes: the plain list
    assert sample_keys(10_000, np.array([1])) == [sample_key(10_000, 1)]
    assert sample_keys(2, np.array([1, 10_000_000])) == [sample_key(2, 1), sample_key(2, 10_000_000)]
    pics = np.random.default_rng(4).integers(0, 256, (3, 100), dtype=np.uint8)
    columns = [("npy", pics), ("cls", [b"1", b"22", b"3"])]
    as_list, as_array = io.BytesIO(), io.BytesIO()
    TarWriter(as_list).add_samples([sample_key(7, p) for p in (4, 5, 6)], columns)
    TarWriter(as_array).add_samples(sample_keys(7, np.array([4, 5, 6])), columns)
    assert as_array.getvalue() == as_list.getvalue()
    with pytest.raises(ValueError, match="must not contain"):
        TarWriter(io.BytesIO()).add_samples(np.array([b"ab.c"]), [("cls", [b"1"])])
    # keys of different lengths in one bytes array (NUL-padded by NumPy) are taken one by one
    mixed = io.BytesIO()
    TarWriter(mixed).add_samples(np.array([b"a", b"bbb"]), [("cls", [b"1", b"2"])])
    names = [m.name for m in tarfile.open(fileobj=io.BytesIO(mixed.getvalue()))]
    assert names == ["a.cls", "bbb.cls"]
