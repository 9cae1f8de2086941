"""ShardLoader reading shards straight from object storage: a real S3 API (moto's server,
conftest.s3) reached through AWS_ENDPOINT_URL as a user reaches MinIO. Shards are made on
disk, uploaded with fsspec's put, and read back from the URL against the same local folder."""

from __future__ import annotations

import os
import socket
import uuid

import numpy as np
import pytest

from _s3_helpers import upload_folder
from _stream_helpers import collect, make_shards
from ipmix_cli.common.errors import IpmixError
from ipmix_cli.stream import ShardLoader

pytestmark = [pytest.mark.kernels,  # runs Numba kernels (left out of `make test-fast`)
              pytest.mark.filterwarnings("ignore:This DataLoader will create")]


@pytest.fixture
def local_and_url(s3, tmp_path):
    make_shards(tmp_path / "local", shard_counts=(6, 6, 6, 6), epochs=2, views=3, size=6)
    return tmp_path / "local", upload_folder(s3, tmp_path / "local")


def batches(loader, epoch):
    loader.set_epoch(epoch)
    return [(x.numpy(), y.numpy()) for x, y in loader]


def assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


@pytest.mark.parametrize("workers", [0, 2])
def test_every_rank_gets_the_local_batches_and_exact_length(local_and_url, workers):
    local, url = local_and_url
    for rank in (0, 1):
        kw = dict(batch_size=2, rank=rank, world_size=2, num_workers=workers, shuffle_buffer=4, seed=3)
        from_disk, from_s3 = ShardLoader(local, **kw), ShardLoader(url, **kw)
        assert len(from_s3) == len(from_disk) == 6  # 24 samples / 2 ranks / batch 2
        for epoch in (0, 3):
            got = batches(from_s3, epoch)
            assert len(got) == len(from_s3)
            assert_same(got, batches(from_disk, epoch))
        from_s3.close()
        from_disk.close()


def test_a_manifest_url_reads_like_its_folder_url(local_and_url):
    local, url = local_and_url
    assert_same(batches(ShardLoader(url + "/manifest.json", 4), 1), batches(ShardLoader(local, 4), 1))


@pytest.mark.parametrize("workers,stop_after", [(0, 2), (2, 3)])
def test_resume_from_the_bucket_continues_at_the_same_sample(local_and_url, workers, stop_after):
    local, url = local_and_url
    kw = dict(batch_size=2, num_workers=workers, shuffle_buffer=4, seed=5)
    full = batches(ShardLoader(local, **kw), 2)
    first = ShardLoader(url, **kw)
    first.set_epoch(2)
    before = []
    for x, y in first:
        before.append((x.numpy(), y.numpy()))
        if len(before) == stop_after:
            break
    first.close()
    second = ShardLoader(url, **kw)
    second.load_state_dict(first.state_dict())
    second.set_epoch(2)
    after = [(x.numpy(), y.numpy()) for x, y in second]
    second.close()
    assert len(after) == len(full) - stop_after
    assert_same(before + after, full)


def test_a_damaged_shard_object_is_one_line_naming_it(s3, local_and_url):
    local, url = local_and_url
    manifest = ShardLoader(local, 4).manifest
    rel = manifest["epochs"][0]["shards"][1]["path"]
    data = bytearray((local / rel).read_bytes())
    data[1000] ^= 0xFF  # a flipped byte inside a PNG payload: the tar still parses
    bucket_key = url[len("s3://"):] + "/" + rel
    s3.pipe(bucket_key, bytes(data))
    with pytest.raises(IpmixError) as err:
        collect(ShardLoader(url, 4))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"shard {rel}: sha256 does not match the manifest's")

    s3.pipe(bucket_key, bytes(data[:5000]))  # cut short: fewer bytes than the manifest gives
    with pytest.raises(IpmixError, match=rf"^shard {rel}: is 5000 bytes in the store, the manifest says {len(data)} "):
        collect(ShardLoader(url, 4))

    s3.rm(bucket_key)
    with pytest.raises(IpmixError, match=rf"^shard {rel}: is missing \(s3://.*{rel}\)"):
        collect(ShardLoader(url, 4))
    # skip_bad reads another shard in its place, as it does on disk, and counts stay equal.
    with pytest.warns(RuntimeWarning, match=f"skipping bad shard {rel}"):
        images, _ = collect(ShardLoader(url, 4, skip_bad=True))
    assert len(images) == 24


def test_a_missing_bucket_is_one_line(s3):
    missing = f"ipmix-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(IpmixError) as err:
        ShardLoader(f"s3://{missing}/shards", 4)
    assert str(err.value) == (f"cannot read shard manifest s3://{missing}/shards/manifest.json: "
                              "not found (The specified bucket does not exist)")


def test_a_cache_is_used_for_later_epochs_and_stays_under_its_limit(s3, local_and_url, tmp_path):
    local, url = local_and_url
    shard_bytes = sorted(p.stat().st_size for p in local.rglob("*.tar"))
    limit = shard_bytes[0] * 3 + shard_bytes[0] // 2  # room for three shards, not four
    cache = tmp_path / "cache"
    loader = ShardLoader(url, 4, cache_dir=cache, cache_limit=limit)
    for epoch in range(4):
        assert_same(batches(loader, epoch), batches(ShardLoader(local, 4), epoch))
        files = list(cache.glob("*.tar"))
        assert len(files) <= 3 and sum(f.stat().st_size for f in files) <= limit
    loader.close()  # the next epoch's first shards were being fetched ahead: let that finish
    assert len(list(cache.glob("*.tar"))) == 3 and not list(cache.glob(".*.part"))

    # With room for every shard, a second pass needs no store at all: the objects are gone
    # and the batches are still those of the local folder.
    big = tmp_path / "big-cache"
    loader = ShardLoader(url, 4, cache_dir=big, cache_limit="1GB")
    for epoch in (0, 1):
        batches(loader, epoch)
    assert len(list(big.glob("*.tar"))) == 8
    s3.rm(url[len("s3://"):], recursive=True)
    for epoch in (0, 1):
        assert_same(batches(loader, epoch), batches(ShardLoader(local, 4), epoch))


def test_cache_options_come_together_and_sizes_are_checked(local_and_url, tmp_path):
    _, url = local_and_url
    with pytest.raises(IpmixError, match="needs both a folder and a size limit"):
        ShardLoader(url, 4, cache_dir=tmp_path / "cache")
    with pytest.raises(IpmixError, match="cache limit '20 parsecs' is not a size such as 20GB"):
        ShardLoader(url, 4, cache_dir=tmp_path / "cache", cache_limit="20 parsecs")


def test_the_store_going_away_mid_epoch_is_one_line(tmp_path, monkeypatch):
    import s3fs
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    stopped = False
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        s3fs.S3FileSystem.clear_instance_cache()
        make_shards(tmp_path / "local", shard_counts=(3,) * 8, epochs=1, size=6)
        url = upload_folder(s3fs.S3FileSystem(), tmp_path / "local")
        loader = ShardLoader(url, 3, shuffle_buffer=3)
        with pytest.raises(IpmixError) as err:
            for _ in loader:
                if not stopped:  # the first batch has arrived: the store goes away
                    server.stop()
                    stopped = True
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"shards {url}/epoch-0000: reading ipmix-e0000-")
        assert "Could not connect" in message or "Connect" in message
    finally:
        if not stopped:
            server.stop()
        s3fs.S3FileSystem.clear_instance_cache()


def test_storage_options_reach_the_store(s3, s3_endpoint, local_and_url, monkeypatch):
    local, url = local_and_url
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the option says where the store is
    type(s3).clear_instance_cache()  # and no client made for the variable is reused
    from_s3 = ShardLoader(url, 4, storage_options={"endpoint_url": s3_endpoint})
    assert_same(batches(from_s3, 1), batches(ShardLoader(local, 4), 1))


def test_workers_share_one_cache_under_its_limit(local_and_url, tmp_path):
    local, url = local_and_url
    shard_bytes = max(p.stat().st_size for p in local.rglob("*.tar"))
    limit = shard_bytes * 5 // 2
    cache = tmp_path / "cache"
    kw = dict(batch_size=2, num_workers=2, shuffle_buffer=4, seed=1)
    loader = ShardLoader(url, cache_dir=cache, cache_limit=limit, **kw)
    for epoch in range(3):
        assert_same(batches(loader, epoch), batches(ShardLoader(local, **kw), epoch))
    loader.close()
    files = list(cache.glob("*.tar"))
    assert len(files) == 2 and sum(f.stat().st_size for f in files) <= limit


def test_temporary_files_of_writers_that_are_gone_are_removed(tmp_path):
    import subprocess
    import sys

    from ipmix_cli.stream.cache import ShardCache

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    cache = ShardCache(tmp_path, 100)
    orphan = tmp_path / f".{'a' * 40}.{gone.stdout.strip()}.123.part"
    live = tmp_path / f".{'b' * 40}.{os.getpid()}.456.part"
    orphan.write_bytes(b"x" * 50)
    live.write_bytes(b"y" * 50)
    cache.put("c" * 40, b"z" * 10)
    assert not orphan.exists() and live.exists() and (tmp_path / f"{'c' * 40}.tar").read_bytes() == b"z" * 10


def test_s3_response_checksums_are_left_to_the_sha256_check_unless_the_user_sets_them():
    from ipmix_cli.stream.remote import _without_response_checksums

    assert _without_response_checksums("s3://b/x.tar", None) == {
        "config_kwargs": {"response_checksum_validation": "when_required"}}
    mine = {"anon": True, "config_kwargs": {"response_checksum_validation": "when_supported", "retries": {}}}
    assert _without_response_checksums("s3://b/x.tar", mine) == mine
    assert _without_response_checksums("gs://b/x.tar", {"token": "anon"}) == {"token": "anon"}
