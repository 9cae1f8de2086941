"""Shards uploaded as a build uploads them (each PUT carries the shard's sha256 as S3's SHA-256
checksum) are checked against the checksum the store sends with each GET instead of being
hashed on the loader; objects without one are hashed as before. A real S3 API (moto's server,
conftest.s3) reached through AWS_ENDPOINT_URL."""

from __future__ import annotations

import base64
import hashlib

import numpy as np
import pytest

from _s3_helpers import new_bucket
from _stream_helpers import collect, make_shards
from ipmix_cli.bench.object_store import upload_as_built
from ipmix_cli.common.errors import IpmixError
from ipmix_cli.common.objstore import Prefix
from ipmix_cli.stream import ShardLoader
from ipmix_cli.stream.remote import _without_response_checksums

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


@pytest.fixture
def built(s3, tmp_path):
    """(local folder, its URL uploaded as a build uploads it, the first shard's manifest record)."""
    manifest = make_shards(tmp_path / "local", shard_counts=(6, 6), epochs=1, size=6)
    url = f"s3://{new_bucket(s3)}/shards"
    upload_as_built(tmp_path / "local", url)
    return tmp_path / "local", url, manifest["epochs"][0]["shards"][0]


def test_a_get_brings_the_sha256_the_store_keeps_for_the_object(s3, built):
    local, url, record = built
    prefix = Prefix(url, "shards", _without_response_checksums(url, None))
    data = (local / record["path"]).read_bytes()
    whole = prefix.read_whole(record["path"], len(data))
    assert whole.sha256 == record["sha256"] == hashlib.sha256(data).hexdigest()
    assert whole.length == len(data) and bytes(whole.data) == data

    s3.pipe(url[len("s3://"):] + "/plain.tar", data)  # uploaded without a checksum: none comes back
    whole = prefix.read_whole("plain.tar", len(data))
    assert whole.sha256 is None and bytes(whole.data) == data

    # an object of another length than asked for is not read; its length is reported
    whole = prefix.read_whole(record["path"], len(data) + 512)
    assert whole.length == len(data) and len(whole.data) == 0


def test_shards_uploaded_as_built_stream_like_the_local_folder(built):
    local, url, _ = built
    for epoch in (0, 1):
        kw = dict(batch_size=4, shuffle_buffer=4, seed=epoch)
        from_s3, from_disk = ShardLoader(url, **kw), ShardLoader(local, **kw)
        from_s3.set_epoch(epoch)
        from_disk.set_epoch(epoch)
        for (xa, ya), (xb, yb) in zip(from_s3, from_disk, strict=True):
            np.testing.assert_array_equal(xa.numpy(), xb.numpy())
            np.testing.assert_array_equal(ya.numpy(), yb.numpy())
        from_s3.close()


def _other_bytes(data: bytes) -> bytes:
    """The same length, one byte different: inside the zero blocks that end a tar, so the shard
    still reads the same samples (only a check of its bytes can tell)."""
    changed = bytearray(data)
    assert changed[-10] == 0
    changed[-10] = 1
    return bytes(changed)


def test_an_object_replaced_since_the_build_is_refused(s3, built):
    local, url, record = built
    rel, key = record["path"], url[len("s3://"):] + "/" + record["path"]
    other = _other_bytes((local / rel).read_bytes())
    expected = rf"^shard {rel}: sha256 does not match the manifest's \(changed or damaged since the build"

    # replaced by a PUT that carries the new bytes' own checksum: the store's checksum tells
    replacement = local.parent / "replacement.tar"
    replacement.write_bytes(other)
    Prefix(url, "--out").put_file(replacement, rel, sha256=hashlib.sha256(other).hexdigest())
    with pytest.raises(IpmixError, match=expected + r"; the store's SHA-256 of the object\)"):
        collect(ShardLoader(url, 4))

    # replaced without a checksum: the loader hashes the bytes itself
    s3.pipe(key, other)
    with pytest.raises(IpmixError, match=expected + r"\)"):
        collect(ShardLoader(url, 4))

    s3.pipe(key, other + bytes(512))
    with pytest.raises(IpmixError, match=rf"^shard {rel}: is {len(other) + 512} bytes in the store, "
                                         rf"the manifest says {len(other)} "):
        collect(ShardLoader(url, 4))


def test_the_stores_checksum_stands_for_hashing_the_bytes(s3, built):
    """The exact guarantee: where the store sends a SHA-256 that matches the manifest's, the bytes
    are not hashed again, by ipmix or by botocore. S3 refuses a PUT whose bytes do not match the
    checksum it carries; moto keeps the checksum it is given, which shows what is trusted."""
    local, url, record = built
    rel, (bucket, key) = record["path"], (url[len("s3://"):] + "/" + record["path"]).split("/", 1)
    other = _other_bytes((local / rel).read_bytes())
    s3.call_s3("put_object", Bucket=bucket, Key=key, Body=other, ChecksumAlgorithm="SHA256",
               ChecksumSHA256=base64.b64encode(bytes.fromhex(record["sha256"])).decode())
    images, labels = collect(ShardLoader(url, 4))
    local_images, local_labels = collect(ShardLoader(local, 4))
    np.testing.assert_array_equal(images, local_images)
    np.testing.assert_array_equal(labels, local_labels)
