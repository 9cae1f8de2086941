"""ShardLoader: equal counts, exact len, epoch mapping, triple integrity, bad shards, pipe: URLs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from _stream_helpers import collect, make_shards, read_tar_samples
from ipmix_cli.common.errors import IpmixError
from ipmix_cli.stream import ShardLoader

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


def _content(root, epoch, manifest):
    """view-0 bytes (HWC) -> (views CHW stacked, label) for every sample of a materialized epoch."""
    table = {}
    for shard in manifest["epochs"][epoch]["shards"]:
        for views, label in read_tar_samples(root / shard["path"]).values():
            stacked = np.stack([v.transpose(2, 0, 1) for v in views])
            table[views[0].tobytes()] = (stacked, label)
    return table


def _keys(images):
    return [img[0].transpose(1, 2, 0).tobytes() for img in images]


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    # 5 shards of unequal sizes, 33 samples: divides by neither 2 nor 4 ranks.
    root = tmp_path_factory.mktemp("uneven")
    manifest = make_shards(root, shard_counts=(7, 7, 7, 7, 5), epochs=2, views=3)
    return root, manifest


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_equal_batch_counts_and_exact_len(uneven, world, workers):
    root, manifest = uneven
    seen = []
    lengths = []
    for rank in range(world):
        loader = ShardLoader(root, 3, rank=rank, world_size=world, num_workers=workers, shuffle_buffer=3)
        images, labels = collect(loader)
        assert images.shape[0] == len(loader) * 3
        assert images.shape[1:] == (3, 3, 8, 8) and images.dtype == np.uint8
        assert labels.dtype == np.int64
        lengths.append(len(loader))
        seen += _keys(images)
    assert len(set(lengths)) == 1
    assert lengths[0] == (33 // world) // 3
    assert f"{world} rank(s) × {lengths[0]} batches of 3" in loader.describe()
    # drop_last splits are disjoint: no sample is served to two ranks
    assert len(seen) == len(set(seen))


def test_drop_last_false_covers_every_sample(uneven):
    root, manifest = uneven
    seen = []
    counts = []
    for rank in range(4):
        loader = ShardLoader(root, 4, rank=rank, world_size=4, drop_last=False)
        images, _ = collect(loader)
        counts.append((len(loader), images.shape[0]))
        seen += _keys(images)
    # 33 samples → 9 per rank (3 read twice), batches 4, 4, 1
    assert counts == [(3, 9)] * 4
    assert set(seen) == set(_content(root, 0, manifest))


@pytest.mark.parametrize("buffer", [4, 64])  # 64: one block, so one of the two workers has nothing
def test_worker_count_changes_order_not_batches(uneven, buffer):
    root, _ = uneven
    by_workers = {}
    for workers in (0, 2):
        loader = ShardLoader(root, 2, world_size=1, num_workers=workers, shuffle_buffer=buffer)
        images, _ = collect(loader)
        batches = images.reshape(-1, 2, *images.shape[1:])
        by_workers[workers] = sorted(b.tobytes() for b in batches)
    assert by_workers[0] == by_workers[2]
    assert len(by_workers[0]) == 16 == len(loader)


def test_triple_integrity_and_labels_match_tar(uneven):
    root, manifest = uneven
    table = _content(root, 0, manifest)
    loader = ShardLoader(root, 4, world_size=1, num_workers=0, shuffle_buffer=8)
    images, labels = collect(loader)
    assert images.shape[0] == 32
    for img, label in zip(images, labels):
        views, want = table[img[0].transpose(1, 2, 0).tobytes()]
        np.testing.assert_array_equal(img, views)
        assert label == want


def test_epoch_mapping_and_permutation(uneven):
    root, manifest = uneven
    tables = [_content(root, k, manifest) for k in range(2)]
    orders = {}
    for t in range(5):
        loader = ShardLoader(root, 3, world_size=1, seed=7)
        loader.set_epoch(t)
        images, _ = collect(loader)
        keys = _keys(images)
        assert all(k in tables[t % 2] for k in keys)
        orders[t] = keys
        again = ShardLoader(root, 3, world_size=1, seed=7)
        again.set_epoch(t)
        assert _keys(collect(again)[0]) == keys  # deterministic from (seed, t)
    # epochs 0, 2, 4 read the same materialized epoch in different orders
    assert len({tuple(orders[t]) for t in (0, 2, 4)}) == 3
    other_seed = ShardLoader(root, 3, world_size=1, seed=8)
    assert _keys(collect(other_seed)[0]) != orders[0]
    # the shard order itself is permuted per epoch
    assert len({_plan_order(root, t) for t in range(6)}) > 1


def _plan_order(root, t):
    loader = ShardLoader(root, 3, world_size=1, seed=7)
    loader.set_epoch(t)
    return loader.plan.order


def test_npy_and_png_give_the_same_batches(tmp_path):
    a = make_shards(tmp_path / "png", shard_counts=(5, 5), epochs=1, fmt="png", size=6)
    b = make_shards(tmp_path / "npy", shard_counts=(5, 5), epochs=1, fmt="npy", size=6)
    xa, ya = collect(ShardLoader(tmp_path / "png", 2))
    xb, yb = collect(ShardLoader(tmp_path / "npy", 2))
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    assert a["fields"] == ["png"] and b["fields"] == ["npy"]


def test_jpeg_shards_decode(tmp_path):
    make_shards(tmp_path, shard_counts=(4,), epochs=1, fmt="jpg", size=16)
    images, labels = collect(ShardLoader(tmp_path, 2))
    assert images.shape == (4, 1, 3, 16, 16)
    assert sorted(labels.tolist()) == [0, 0, 1, 2]


def test_torchrun_environment_sets_rank(uneven, monkeypatch):
    root, _ = uneven
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    loader = ShardLoader(root, 2)
    assert (loader.rank, loader.layout.world_size) == (1, 2)
    ref = ShardLoader(root, 2, rank=1, world_size=2)
    np.testing.assert_array_equal(collect(loader)[0], collect(ref)[0])


def test_too_small_layout_refused_before_iterating(uneven):
    root, _ = uneven
    with pytest.raises(IpmixError, match="too few"):
        ShardLoader(root, 16, world_size=4)
    with pytest.raises(IpmixError, match="rank 4"):
        ShardLoader(root, 2, rank=4, world_size=4)


def test_incomplete_or_missing_manifest(tmp_path):
    with pytest.raises(IpmixError, match="no shard manifest"):
        ShardLoader(tmp_path, 2)
    make_shards(tmp_path, shard_counts=(4,), epochs=1)
    text = (tmp_path / "manifest.json").read_text().replace('"complete": true', '"complete": false')
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(IpmixError, match="not complete"):
        ShardLoader(tmp_path, 2)


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep])


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_shard_is_named(tmp_path, workers):
    make_shards(tmp_path, shard_counts=(6, 6, 6), epochs=1)
    _truncate(tmp_path / "epoch-0000/ipmix-e0000-00001.tar", 3000)
    loader = ShardLoader(tmp_path, 2, num_workers=workers)
    with pytest.raises(IpmixError, match=r"shard epoch-0000/ipmix-e0000-00001\.tar: truncated") as err:
        collect(loader)
    # the hint names the API that exists (`ipmix train` has no skip_bad option)
    assert str(err.value).endswith("ShardLoader(skip_bad=True) reads a substitute shard instead")


def test_missing_and_damaged_shards_are_named(tmp_path):
    make_shards(tmp_path, shard_counts=(6, 6), epochs=1)
    (tmp_path / "epoch-0000/ipmix-e0000-00000.tar").unlink()
    with pytest.raises(IpmixError, match=r"ipmix-e0000-00000\.tar: is missing"):
        collect(ShardLoader(tmp_path, 2))
    # flip bytes inside a PNG payload of the other shard: the data no longer decodes
    path = tmp_path / "epoch-0000/ipmix-e0000-00001.tar"
    data = bytearray(path.read_bytes())
    data[512 + 60 : 512 + 90] = bytes(30)
    path.write_bytes(bytes(data))
    (tmp_path / "epoch-0000/ipmix-e0000-00000.tar").write_bytes(b"")
    with pytest.raises(IpmixError, match=r"ipmix-e0000-0000[01]\.tar"):
        collect(ShardLoader(tmp_path, 2))


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_bad_keeps_counts_equal(tmp_path, workers):
    manifest = make_shards(tmp_path, shard_counts=(6, 6, 6, 6), epochs=1)
    shard_keys = [
        [views[0].tobytes() for views, _ in read_tar_samples(tmp_path / s["path"]).values()]
        for s in manifest["epochs"][0]["shards"]
    ]
    _truncate(tmp_path / "epoch-0000/ipmix-e0000-00002.tar", 2000)
    seen = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for rank in range(2):
            loader = ShardLoader(tmp_path, 2, world_size=2, rank=rank, skip_bad=True, num_workers=workers)
            images, _ = collect(loader)
            assert images.shape[0] == len(loader) * 2 == 12
            seen += _keys(images)
    assert any("ipmix-e0000-00002.tar" in str(w.message) and "ipmix-e0000-00003.tar" in str(w.message) for w in caught)
    # the bad shard's samples are replaced by those of the next shard, at the same positions
    assert not set(seen) & set(shard_keys[2])
    assert sorted(seen) == sorted(shard_keys[0] + shard_keys[1] + shard_keys[3] * 2)


def test_pipe_urls_read_the_same_stream(uneven):
    root, _ = uneven
    local = collect(ShardLoader(root, 3, world_size=2, rank=1))
    piped = collect(ShardLoader(root, 3, world_size=2, rank=1, base_url=f"pipe:cat '{root}'/{{path}}"))
    np.testing.assert_array_equal(local[0], piped[0])
    np.testing.assert_array_equal(local[1], piped[1])
    with pytest.raises(IpmixError, match=r"ipmix-e\d{4}-\d{5}\.tar"):
        collect(ShardLoader(root, 3, base_url="pipe:cat /nonexistent-dir/{path}"))


def test_echo_factor_warns(uneven):
    root, _ = uneven
    loader = ShardLoader(root, 2)  # K = 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert loader.echo_factor(8) == 4.0
    with pytest.warns(RuntimeWarning, match="echo factor 5"):
        assert loader.echo_factor(10) == 5.0
    with pytest.warns(RuntimeWarning, match="clearly worse"):
        loader.echo_factor(20)


def test_manifest_through_a_pipe_url(uneven):
    root, _ = uneven
    local = collect(ShardLoader(root, 3))
    remote = ShardLoader(f"pipe:cat '{root}/manifest.json'", 3, base_url=f"pipe:cat '{root}'/{{path}}")
    np.testing.assert_array_equal(collect(remote)[0], local[0])
    with pytest.raises(IpmixError, match="pass base_url"):
        ShardLoader(f"pipe:cat '{root}/manifest.json'", 3)


def test_manifest_shard_entries_are_checked(tmp_path):
    import json

    make_shards(tmp_path, shard_counts=(4,), epochs=1)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    del manifest["epochs"][0]["shards"][0]["count"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IpmixError, match="without a path and count"):
        ShardLoader(tmp_path, 2)


def test_a_killed_worker_is_one_clear_error(uneven, tmp_path):
    import contextlib
    import multiprocessing
    import os
    import signal
    import threading

    root, _ = uneven
    # The worker's pipe: command (the shard's path goes to `:`, which ignores it) writes its
    # shell's pid to a file, then waits; the worker is killed once that file exists (it is then
    # surely inside its first read), not after a fixed delay that a slow machine could outlast
    # before the worker even started.
    marker = tmp_path / "reading"
    loader = ShardLoader(root, 2, num_workers=1,
                         base_url=f"pipe:: {{path}}; echo $$ > '{marker}.tmp' && mv '{marker}.tmp' '{marker}' && exec sleep 600")
    others = {p.pid for p in multiprocessing.active_children()}
    stop = threading.Event()

    def kill_worker_once_it_reads():
        while not marker.exists():
            if stop.wait(0.005):
                return
        pids = [p.pid for p in multiprocessing.active_children() if p.pid not in others]  # this loader's worker
        for pid in pids + [int(marker.read_text())]:  # and the pipe's `sleep`
            with contextlib.suppress(ProcessLookupError):  # one may have ended on its own meanwhile
                os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_worker_once_it_reads)
    killer.start()
    try:
        with pytest.raises(IpmixError, match="loader worker process failed"):
            collect(loader)
    finally:
        stop.set()
        killer.join()


def test_skip_bad_reads_do_not_depend_on_history(tmp_path):
    import tarfile

    manifest = make_shards(tmp_path, shard_counts=(8, 8), epochs=1)
    path = tmp_path / "epoch-0000/ipmix-e0000-00000.tar"
    with tarfile.open(path) as tar:
        member = tar.getmember("e0000s0000007.png")
    data = bytearray(path.read_bytes())
    at = member.offset_data + 50  # inside the PNG's compressed data
    data[at : at + 20] = bytes(20)
    path.write_bytes(bytes(data))
    good = {v[0].tobytes() for v, _ in read_tar_samples(tmp_path / "epoch-0000/ipmix-e0000-00001.tar").values()}
    # segments of two samples: only the one holding sample 7 falls back to shard 1
    loader = ShardLoader(tmp_path, 2, shuffle_buffer=2, skip_bad=True)
    per_epoch = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for t in range(3):  # K = 1: every epoch reads the same shards, in other orders
            loader.set_epoch(t)
            keys = _keys(collect(loader)[0])
            per_epoch.append(sorted(keys))
            assert sum(k in good for k in keys) == 8 + 2
    assert per_epoch[0] == per_epoch[1] == per_epoch[2]
    assert sum("ipmix-e0000-00000.tar" in str(w.message) for w in caught) == 1  # announced once
    assert manifest["epochs"][0]["shards"][0]["count"] == 8


def test_a_manifest_of_schema_1_streams_the_same(tmp_path):
    # schema 1 named every epoch's shards shard-SSSSS.tar; the paths come from the manifest
    new = make_shards(tmp_path / "v2", shard_counts=(4, 4), epochs=2)
    old = make_shards(tmp_path / "v1", shard_counts=(4, 4), epochs=2, schema_version=1)
    assert old["epochs"][1]["shards"][0]["path"] == "epoch-0001/shard-00000.tar"
    assert new["epochs"][1]["shards"][0]["path"] == "epoch-0001/ipmix-e0001-00000.tar"
    for t in range(2):
        a, b = ShardLoader(tmp_path / "v2", 2), ShardLoader(tmp_path / "v1", 2)
        a.set_epoch(t)
        b.set_epoch(t)
        got_a, got_b = collect(a), collect(b)
        np.testing.assert_array_equal(got_a[0], got_b[0])
        np.testing.assert_array_equal(got_a[1], got_b[1])
