"""`shards build --out s3://...` against a real S3 API (moto's server, conftest.s3): the objects
are the bytes of a local build, whatever happens in between (kill -9 in the middle of an
upload, the server going away, node parts, Dask workers)."""

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ipmix_cli.cli import main as cli
from ipmix_cli.shards import build_shards
from ipmix_cli.shards import manifest as mf

from _s3_proxy import CHECKSUM_HEADERS, HoldingProxy

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--source", "digits", "--recipe", "none", "--epochs", "2", "--shards", "3", "--seed", "5", "--quiet"]
SHARDS = [f"epoch-{e:04d}/ipmix-e{e:04d}-{s:05d}.tar" for e in range(2) for s in range(3)]


def new_bucket(s3) -> str:
    name = f"ipmix-{uuid.uuid4().hex[:12]}"
    s3.mkdir(name)
    return name


def local_files(root: Path) -> dict:
    """Every file of a build but its records (which carry timings and process ids)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.relative_to(root).as_posix().startswith(".records/")}


def objects(s3, prefix: str) -> dict:
    s3.invalidate_cache()
    names = [n for n in s3.find(prefix) if not n[len(prefix) + 1:].startswith(".records/")]
    return {n[len(prefix) + 1:]: s3.cat(n) for n in sorted(names)}


def manifest(s3, prefix: str):
    s3.invalidate_cache()
    return json.loads(s3.cat(f"{prefix}/manifest.json")) if s3.exists(f"{prefix}/manifest.json") else None


def command(out, *extra):
    return [sys.executable, "-m", "ipmix_cli", "shards", "build", *ARGS, "--out", out, *extra]


def env(endpoint):
    return {**os.environ, "PYTHONPATH": str(REPO), "AWS_ENDPOINT_URL": endpoint}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    assert cli.run(["shards", "build", *ARGS, "--out", str(out)]) == 0
    files = local_files(out)
    assert set(SHARDS) <= set(files)
    return files


@pytest.mark.kernels
def test_build_to_s3_writes_the_bytes_of_a_local_build_and_leaves_no_staging(s3, tmp_path, reference, capsys):
    name = new_bucket(s3)
    cache = tmp_path / "cache"
    assert cli.run(["shards", "build", *ARGS, "--out", f"s3://{name}/shards", "--cache-dir", str(cache)]) == 0
    assert objects(s3, f"{name}/shards") == reference
    assert manifest(s3, f"{name}/shards")["complete"]
    assert sorted(s3.find(f"{name}/shards/.records")) == [
        f"{name}/shards/.records/epoch-{e:04d}/shard-{s:05d}.json" for e in range(2) for s in range(3)]
    assert list(cache.iterdir()) == []  # the staging folder went with the build
    out = capsys.readouterr().out
    assert out.startswith(f"s3://{name}/shards: 2 epoch(s) x 3 shards")
    assert cli.run(["shards", "verify", "--deep", f"s3://{name}/shards"]) == 0  # reads every byte back


@pytest.mark.kernels
def test_resume_keeps_shards_whose_object_matches_its_record(s3, tmp_path, reference, capsys):
    name = new_bucket(s3)
    url = f"s3://{name}/shards"
    assert cli.run(["shards", "build", *ARGS, "--out", url]) == 0
    capsys.readouterr()
    s3.rm(f"{name}/shards/{SHARDS[1]}")
    size = len(reference[SHARDS[4]])
    s3.pipe(f"{name}/shards/{SHARDS[4]}", b"\0" * size)  # the recorded size, other bytes: its MD5 differs
    assert cli.run(["shards", "build", *ARGS, "--out", url, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)["stats"]
    assert (stats["shards_kept"], stats["shards_built"]) == (4, 2)
    assert objects(s3, f"{name}/shards") == reference


def stored_sha256(s3, path: str) -> str | None:
    import base64

    head = s3.call_s3("head_object", Bucket=path.split("/", 1)[0], Key=path.split("/", 1)[1], ChecksumMode="ENABLED")
    value = head.get("ChecksumSHA256")
    return base64.b64decode(value).hex() if value else None


@pytest.mark.kernels
def test_each_shard_is_put_with_its_sha256_which_a_resume_checks_where_the_record_has_no_md5(s3, tmp_path, reference):
    from ipmix_cli.shards.remote_out import RemoteOut

    name = new_bucket(s3)
    url = f"s3://{name}/shards"
    assert cli.run(["shards", "build", *ARGS, "--out", url, "--quiet"]) == 0
    records = [json.loads(s3.cat(f"{name}/shards/.records/epoch-{e:04d}/shard-{s:05d}.json"))
               for e in range(2) for s in range(3)]
    for rec in records:  # the store keeps the sha256 the record gives
        assert stored_sha256(s3, f"{name}/shards/{rec['path']}") == rec["sha256"]
        assert "md5" not in rec  # so no MD5 was computed
        # a record without an md5: the ETag is not compared, only the stored sha256 can tell
        s3.pipe(f"{name}/shards/.records/epoch-{rec['epoch']:04d}/shard-{rec['shard']:05d}.json",
                json.dumps({k: v for k, v in rec.items() if k != "md5"}).encode())
    s3.pipe(f"{name}/shards/{SHARDS[4]}", b"\0" * len(reference[SHARDS[4]]))  # the recorded size, other bytes
    s3.pipe(f"{name}/shards/{SHARDS[1]}", reference[SHARDS[1]])  # the right bytes, put without a sha256
    remote = RemoteOut(url, tmp_path)
    staging = remote.pull()
    kept = [remote.shard_is_done(mf.read_record(staging, r["epoch"], r["shard"]), r["config_hash"]) for r in records]
    assert kept == [True, False, True, True, False, True]
    assert [remote.shard_is_done({**r, "md5": None}, "another configuration") for r in records] == [False] * 6


def kill_9_while_uploading(proxy, url: str, key: str) -> None:
    """Run the build through `proxy`, holding the PUT of `key`; kill -9 the build once that
    upload has begun (its request line and first bytes reached the server)."""
    proxy.hold(f"PUT /{key}".encode())
    proc = subprocess.Popen(command(url), env=env(proxy.url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert proxy.held.wait(timeout=300), "the build never uploaded the held shard"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proxy.release()
        if proc.poll() is None:
            proc.kill()


@pytest.mark.kernels
def test_kill_9_in_the_middle_of_an_upload_then_the_same_command(s3_endpoint, s3, reference):
    name = new_bucket(s3)
    url = f"s3://{name}/shards"
    proxy = HoldingProxy(int(s3_endpoint.rsplit(":", 1)[1]))
    try:
        kill_9_while_uploading(proxy, url, f"{name}/shards/{SHARDS[2]}")
        assert not s3.exists(f"{name}/shards/{SHARDS[2]}")  # a killed PUT leaves nothing
        assert not manifest(s3, f"{name}/shards")["complete"]
        done = subprocess.run(command(url), env=env(proxy.url), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    finally:
        proxy.close()
    assert objects(s3, f"{name}/shards") == reference


@pytest.mark.kernels
def test_a_store_that_keeps_no_sha256_gets_md5s_in_the_records_which_a_resume_after_kill_9_compares(
        s3_endpoint, s3, reference):
    import hashlib

    name = new_bucket(s3)
    url = f"s3://{name}/shards"
    # the relay drops the checksum headers of every request: the store keeps no SHA-256
    proxy = HoldingProxy(int(s3_endpoint.rsplit(":", 1)[1]), strip=CHECKSUM_HEADERS)
    try:
        kill_9_while_uploading(proxy, url, f"{name}/shards/{SHARDS[3]}")
        s3.invalidate_cache()
        recorded = sorted(s3.find(f"{name}/shards/.records"))
        assert len(recorded) == 3  # the shards before the held one are finished, records and all
        for path in SHARDS[:3]:
            assert stored_sha256(s3, f"{name}/shards/{path}") is None
        # one finished shard replaced by other bytes of its size: only its MD5 tells
        s3.pipe(f"{name}/shards/{SHARDS[1]}", b"\0" * len(reference[SHARDS[1]]))
        done = subprocess.run(command(url, "--json"), env=env(proxy.url), capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
    finally:
        proxy.close()
    stats = json.loads(done.stdout)["stats"]
    assert (stats["shards_kept"], stats["shards_built"]) == (2, 4)
    assert objects(s3, f"{name}/shards") == reference
    for e in range(2):
        for sh in range(3):
            rec = json.loads(s3.cat(f"{name}/shards/.records/epoch-{e:04d}/shard-{sh:05d}.json"))
            assert rec["md5"] == hashlib.md5(reference[rec["path"]]).hexdigest()


def test_the_md5_a_listing_gives_is_read_as_each_store_spells_it():
    import base64
    import hashlib

    from ipmix_cli.common.objstore import _entry

    digest = hashlib.md5(b"shard bytes")
    s3_single, s3_parts = {"size": 11, "ETag": f'"{digest.hexdigest()}"'}, {"size": 11, "ETag": '"0a1b2c-2"'}
    gcs = {"size": 11, "etag": "CKih16GjycICEAE=", "md5Hash": base64.b64encode(digest.digest()).decode()}
    azure = {"size": 11, "etag": "0x8DB0A1B2C3D4E5F", "content_settings": {"content_md5": bytearray(digest.digest())}}
    azure_blocks = {"size": 11, "etag": "0x8DB0A1B2C3D4E5F", "content_settings": {"content_md5": None}}
    assert [_entry(info).md5 for info in (s3_single, gcs, azure)] == [digest.hexdigest()] * 3
    assert [_entry(info).md5 for info in (s3_parts, azure_blocks)] == ["", ""]


@pytest.mark.kernels
def test_the_server_going_away_is_one_line_and_the_same_command_completes_later(s3, tmp_path, reference):
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    proxy = HoldingProxy(port)
    name = new_bucket(s3)  # moto keeps one store per process: this server sees the bucket too
    url = f"s3://{name}/shards"
    # botocore's own retries off, so the test waits for ipmix's and s3fs's only
    cmd = command(url, "--storage-option", "config_kwargs.retries.max_attempts=1")
    try:
        proxy.hold(f"PUT /{name}/shards/{SHARDS[3]}".encode())
        proc = subprocess.Popen(cmd, env=env(proxy.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proxy.held.wait(timeout=300), "the build never uploaded the held shard"
            server.stop()
        finally:
            proxy.release()
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 1, err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith(f"Error: --out {url}: uploading {SHARDS[3]} failed after 4 tries: "), lines
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        assert not s3.exists(f"{name}/shards/{SHARDS[3]}")
        assert not manifest(s3, f"{name}/shards")["complete"]
        done = subprocess.run(cmd, env=env(proxy.url), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    finally:
        proxy.close()
        server.stop()
    assert objects(s3, f"{name}/shards") == reference


@pytest.mark.kernels
def test_node_parts_from_slurm_variables_then_combine_in_the_bucket(s3, reference, monkeypatch, capsys):
    name = new_bucket(s3)
    url = f"s3://{name}/shards"
    # array task IDs 3..4: this task (4) is part 1 of 2
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
    assert cli.run(["shards", "build", *ARGS, "--out", url]) == 0
    err = capsys.readouterr().err
    assert ("SLURM array job: --num-nodes 2 from SLURM_ARRAY_TASK_COUNT; --node-rank 1 from "
            "SLURM_ARRAY_TASK_ID=4 - SLURM_ARRAY_TASK_MIN=3") in err
    s3.invalidate_cache()
    assert sorted(n for n in objects(s3, f"{name}/shards") if n.endswith(".tar")) == SHARDS[1::2]
    assert not manifest(s3, f"{name}/shards")["complete"]

    assert cli.run(["shards", "combine", url]) == 1  # part 0 has not run
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"Error: 3 shard(s) not built yet (first: {SHARDS[0]}); finish every part (--node-rank) "
                   "and combine again"]

    # explicit options win over the variables (which still say task 4); the last part combines
    assert cli.run(["shards", "build", *ARGS, "--out", url, "--node-rank", "0", "--num-nodes", "2"]) == 0
    assert "SLURM" not in capsys.readouterr().err
    assert objects(s3, f"{name}/shards") == reference
    assert cli.run(["shards", "combine", url]) == 0  # by hand: the same objects again
    assert objects(s3, f"{name}/shards") == reference


@pytest.mark.kernels
def test_dask_workers_write_straight_to_the_bucket(s3, reference, tmp_path):
    from distributed import LocalCluster

    name = new_bucket(s3)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=40) as cluster:
        m = build_shards(source="digits", recipe="none", epochs=2, shards=3, seed=5, out=f"s3://{name}/shards",
                         backend="dask", scheduler=cluster.scheduler_address, progress=False,
                         cache_dir=tmp_path / "cache")
    assert m["complete"] and os.getpid() not in m["build_stats"]["worker_pids"]
    assert objects(s3, f"{name}/shards") == reference
    assert not s3.find(f"{name}/shards/.records/contexts")  # the context the workers read is gone


def test_a_bucket_that_does_not_exist_as_out_is_one_line_and_writes_nothing(s3, tmp_path, capsys):
    missing = f"ipmix-missing-{uuid.uuid4().hex[:8]}"
    cache = tmp_path / "cache"
    assert cli.run(["shards", "build", *ARGS, "--out", f"s3://{missing}/shards", "--cache-dir", str(cache)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"Error: --out s3://{missing}/shards: listing failed: not found (bucket {missing} does not exist)"]
    assert not cache.exists()


def test_a_prefix_holding_other_objects_is_refused(s3, tmp_path, capsys):
    name = new_bucket(s3)
    s3.pipe(f"{name}/data/notes.txt", b"mine")
    assert cli.run(["shards", "build", *ARGS, "--out", f"s3://{name}/data"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"Error: --out s3://{name}/data is not empty and holds no ipmix build (found notes.txt); "
        "choose an empty or new prefix"]
    assert s3.find(f"{name}/data") == [f"{name}/data/notes.txt"]


@pytest.mark.kernels
def test_storage_options_reach_a_store_without_the_environment(s3_endpoint, s3, monkeypatch, reference):
    name = new_bucket(s3)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert cli.run(["shards", "build", *ARGS, "--out", f"s3://{name}/shards",
                    "--storage-option", f"endpoint_url={s3_endpoint}"]) == 0
    assert objects(s3, f"{name}/shards") == reference


@pytest.mark.kernels
def test_a_dry_run_to_a_bucket_writes_nothing(s3, tmp_path, capsys):
    name = new_bucket(s3)
    assert cli.run(["shards", "build", *ARGS, "--out", f"s3://{name}/shards", "--dry-run",
                    "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "dry run: nothing written" in capsys.readouterr().out
    s3.invalidate_cache()
    assert s3.find(name) == [] and list((tmp_path / "cache").iterdir()) == []


def test_storage_options_parse_json_values_and_dotted_keys():
    from ipmix_cli.common.errors import IpmixError
    from ipmix_cli.common.objstore import parse_storage_options

    assert parse_storage_options(["endpoint_url=http://h:9000", "anon=false", "config_kwargs.retries.max_attempts=3",
                                  "client_kwargs.region_name=eu-west-1"]) == {
        "endpoint_url": "http://h:9000", "anon": False,
        "config_kwargs": {"retries": {"max_attempts": 3}}, "client_kwargs": {"region_name": "eu-west-1"}}
    with pytest.raises(IpmixError, match="^storage_option 'anon' is not KEY=VALUE"):
        parse_storage_options(["anon"])
    with pytest.raises(IpmixError, match="a is set twice"):
        parse_storage_options(["a=1", "a.b=2"])


@pytest.mark.parametrize("given,env,expected", [
    ((None, None), {}, (1, 0, "")),
    ((None, None), {"SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_ID": "2"},
     (4, 2, "--num-nodes 4 from SLURM_ARRAY_TASK_COUNT; --node-rank 2 from SLURM_ARRAY_TASK_ID=2 - "
            "SLURM_ARRAY_TASK_MIN=0")),
    ((None, None), {"SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "10"},
     (4, 2, "--num-nodes 4 from SLURM_ARRAY_TASK_COUNT; --node-rank 2 from SLURM_ARRAY_TASK_ID=12 - "
            "SLURM_ARRAY_TASK_MIN=10")),
    ((2, 1), {"SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_ID": "3"}, (2, 1, "")),
])
def test_node_part_takes_what_is_not_given_from_a_slurm_array(given, env, expected):
    from ipmix_cli.shards.nodes import node_part

    assert node_part(*given, env=env) == expected


def test_node_part_refuses_a_task_outside_the_array():
    from ipmix_cli.common.errors import IpmixError
    from ipmix_cli.shards.nodes import node_part

    with pytest.raises(IpmixError, match=r"^node_rank must be in 0..1 \(got 5\)"):
        node_part(None, None, env={"SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_ID": "5"})
    with pytest.raises(IpmixError, match="SLURM_ARRAY_TASK_ID='x' is not a whole number"):
        node_part(None, None, env={"SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_ID": "x"})


def test_shard_uploads_are_not_hashed_for_the_signature_unless_the_user_says_so():
    from ipmix_cli.common.objstore import without_payload_signing
    from ipmix_cli.shards.remote_out import RemoteOut

    assert without_payload_signing("s3://b/shards", None) == {"config_kwargs": {"s3": {"payload_signing_enabled": False}}}
    mine = {"anon": True, "config_kwargs": {"s3": {"payload_signing_enabled": True, "addressing_style": "path"}}}
    assert without_payload_signing("s3://b/shards", mine) == mine
    theirs = {"config_kwargs": {"s3": {"addressing_style": "path"}, "retries": {"max_attempts": 1}}}
    assert without_payload_signing("s3://b/shards", theirs) == {"config_kwargs": {
        "s3": {"payload_signing_enabled": False, "addressing_style": "path"}, "retries": {"max_attempts": 1}}}
    assert without_payload_signing("gs://b/shards", {"token": "anon"}) == {"token": "anon"}
    assert RemoteOut("s3://b/shards").prefix.options["config_kwargs"]["s3"]["payload_signing_enabled"] is False


@pytest.mark.kernels
def test_dali_indexes_go_up_with_their_shards_and_the_combine_downloads_nothing(s3, tmp_path, monkeypatch):
    from ipmix_cli.shards.remote_out import RemoteOut

    local = tmp_path / "local"
    assert cli.run(["shards", "build", *ARGS, "--dali-index", "--out", str(local)]) == 0
    downloads = []
    real = RemoteOut.download
    monkeypatch.setattr(RemoteOut, "download", lambda self, rel: downloads.append(rel) or real(self, rel))
    name = new_bucket(s3)
    assert cli.run(["shards", "build", *ARGS, "--dali-index", "--out", f"s3://{name}/shards"]) == 0
    built = objects(s3, f"{name}/shards")
    assert built == local_files(local) and len([r for r in built if r.endswith(".idx")]) == len(SHARDS)
    assert downloads == []  # each index was made from the shard before it went up

    s3.rm(f"{name}/shards/{SHARDS[3].replace('.tar', '.idx')}")  # an index lost from the bucket ...
    assert cli.run(["shards", "combine", f"s3://{name}/shards"]) == 0
    assert downloads == [SHARDS[3]] and objects(s3, f"{name}/shards") == built  # ... is made again from its shard
