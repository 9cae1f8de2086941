"""Reading a mixing set (--fractals) and a folder: source from s3:// for `shards build`, against a
real S3 API (moto's server, conftest.s3), reached through AWS_ENDPOINT_URL as MinIO would be."""

import hashlib
import json
import os
import sys
import uuid

import pytest

from ipmix_cli.cli import main as cli
from ipmix_cli.common.errors import IpmixError
from _shards_build_helpers import write_image_folder, write_mixing_folder


def bucket(s3) -> str:
    name = f"ipmix-{uuid.uuid4().hex[:12]}"
    s3.mkdir(name)
    return name


def tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def error_lines(capsys):
    return capsys.readouterr().err.strip().splitlines()


def shard_digests(out):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*.tar"))}


def remote_copies():
    folder = os.path.join(os.environ["XDG_CACHE_HOME"], "ipmix", "remote")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def local_and_uploaded(s3, tmp_path, prefix):
    """An image folder and a mixing set under tmp_path, copied to s3://<new bucket>/<prefix>/;
    returns the bucket."""
    write_image_folder(tmp_path / "images")
    write_mixing_folder(tmp_path / "mixing")
    name = bucket(s3)
    s3.put(str(tmp_path / "images"), f"{name}/{prefix}/images", recursive=True)
    s3.put(str(tmp_path / "mixing"), f"{name}/{prefix}/mixing", recursive=True)
    return name


def build(source, fractals, out, *extra):
    return cli.run(["shards", "build", "--source", source, "--fractals", fractals, "--out", str(out),
                    "--shards", "2", "--quiet", *extra])


@pytest.mark.kernels
def test_build_reads_source_folder_and_mixing_set_from_s3_like_local_copies(s3, tmp_path, capsys):
    name = local_and_uploaded(s3, tmp_path, "data")
    assert build(f"folder:{tmp_path / 'images'}", str(tmp_path / "mixing"), tmp_path / "local") == 0
    before = remote_copies()
    assert build(f"folder:s3://{name}/data/images", f"s3://{name}/data/mixing", tmp_path / "from-s3") == 0
    local, remote = shard_digests(tmp_path / "local"), shard_digests(tmp_path / "from-s3")
    assert len(local) == 2 and remote == local
    # the manifest and the card name the bucket prefix the mixing set came from, not the local copy
    manifest = json.loads((tmp_path / "from-s3" / "manifest.json").read_text())
    assert manifest["mixing_set"]["path"] == f"s3://{name}/data/mixing"
    assert manifest["mixing_set"]["fingerprint"] == json.loads(
        (tmp_path / "local" / "manifest.json").read_text())["mixing_set"]["fingerprint"]
    assert f"s3://{name}/data/mixing" in (tmp_path / "from-s3" / "README.md").read_text()
    copies = remote_copies()
    assert len(copies) == len(before) + 2  # one local copy per prefix

    # An unchanged prefix is listed, not downloaded again: a second build makes no new copy.
    assert build(f"folder:s3://{name}/data/images", f"s3://{name}/data/mixing", tmp_path / "again") == 0
    assert remote_copies() == copies and shard_digests(tmp_path / "again") == local

    # A changed object (another ETag) gives a fresh copy, and the build sees the new picture.
    first = sorted(s3.find(f"{name}/data/mixing"))[0]
    s3.put(str(tmp_path / "images" / "cat" / sorted(os.listdir(tmp_path / "images" / "cat"))[0]), first)
    assert build(f"folder:s3://{name}/data/images", f"s3://{name}/data/mixing", tmp_path / "changed") == 0
    assert len(remote_copies()) == len(copies) + 1
    assert shard_digests(tmp_path / "changed") != local
    capsys.readouterr()


def test_a_bucket_that_does_not_exist_is_one_line_and_writes_nothing(s3, tmp_path, capsys):
    out = tmp_path / "out"
    missing = f"ipmix-missing-{uuid.uuid4().hex[:8]}"
    assert build("digits", f"s3://{missing}/mixing", out) == 1
    lines = error_lines(capsys)
    # the words of every command that lists a prefix (objstore.Prefix)
    assert lines == [f"Error: --fractals s3://{missing}/mixing: listing failed: not found (bucket {missing} does not exist)"]
    assert not out.exists()
    assert cli.run(["shards", "build", "--source", f"folder:s3://{missing}/images", "--out", str(out),
                    "--recipe", "none", "--quiet"]) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"Error: --source s3://{missing}/images: listing failed: not found")
    assert not out.exists()


def test_an_empty_prefix_is_one_line(s3, tmp_path, capsys):
    name = bucket(s3)
    assert build("digits", f"s3://{name}/nothing-here", tmp_path / "out") == 1
    assert error_lines(capsys) == [f"Error: --fractals s3://{name}/nothing-here: no objects under this prefix"]
    assert tree(tmp_path) == []


def test_s3_without_s3fs_installed_names_the_extra_and_writes_nothing(s3, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "s3fs", None)  # what Python reports for a package it cannot import
    out = tmp_path / "out"
    assert build("digits", "s3://bucket/mixing", out) == 1
    assert error_lines(capsys) == ["Error: --fractals s3://bucket/mixing: s3:// needs the s3fs package: "
                                   "pip install 'ipmix[s3]'"]
    assert cli.run(["shards", "build", "--source", "folder:s3://bucket/images", "--out", str(out),
                    "--recipe", "none"]) == 1
    assert error_lines(capsys) == ["Error: --source folder:s3://bucket/images: s3:// needs the s3fs package: "
                                   "pip install 'ipmix[s3]'"]
    assert tree(tmp_path) == []


@pytest.mark.kernels
def test_augment_preview_reads_the_mixing_set_from_s3(s3, tmp_path, capsys):
    write_image_folder(tmp_path / "images", per_class=1)
    write_mixing_folder(tmp_path / "mixing")
    name = bucket(s3)
    s3.put(str(tmp_path / "mixing"), f"{name}/mixing", recursive=True)
    for mixing, png in ((str(tmp_path / "mixing"), "local.png"), (f"s3://{name}/mixing", "s3.png")):
        assert cli.run(["augment", "preview", str(tmp_path / "images"), "--fractals", mixing,
                        "--out", str(tmp_path / png), "--n", "2", "--rows", "2"]) == 0
    assert (tmp_path / "s3.png").read_bytes() == (tmp_path / "local.png").read_bytes()
    capsys.readouterr()


def test_an_unreachable_endpoint_is_one_line(tmp_path, capsys, monkeypatch):
    import socket

    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    assert build("digits", "s3://bucket/mixing", tmp_path / "out") == 1
    lines = error_lines(capsys)
    assert len(lines) == 1
    assert lines[0].startswith("Error: --fractals s3://bucket/mixing: listing failed after 4 tries: "
                               "EndpointConnectionError: Could not connect")
    assert tree(tmp_path) == []


def test_the_library_refuses_an_unknown_scheme_out_as_the_command_does(tmp_path, monkeypatch):
    import pytest

    from ipmix_cli.common.errors import IpmixError
    from ipmix_cli.shards.build import build_shards

    monkeypatch.chdir(tmp_path)
    with pytest.raises(IpmixError, match="--out nosuch://bucket/shards: unknown storage scheme 'nosuch://'"):
        build_shards(source="digits", out="nosuch://bucket/shards", recipe="none", progress=False)
    assert tree(tmp_path) == []


@pytest.mark.kernels
def test_dask_workers_read_the_copy_from_out(s3, tmp_path, capsys):
    # Workers on other machines share OUT, not the client's cache folder: the copy goes to OUT.
    from distributed import LocalCluster

    from ipmix_cli.shards.build import build_shards

    name = local_and_uploaded(s3, tmp_path, "data")
    assert build(f"folder:{tmp_path / 'images'}", str(tmp_path / "mixing"), tmp_path / "local") == 0
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=40) as cluster:
        out = tmp_path / "dask"
        build_shards(source=f"folder:s3://{name}/data/images", fractals=f"s3://{name}/data/mixing", out=out, shards=2,
                     backend="dask", scheduler=cluster.scheduler_address, progress=False)
    assert shard_digests(out) == shard_digests(tmp_path / "local")
    assert len(list((out / ".cache" / "remote").iterdir())) == 2
    capsys.readouterr()


@pytest.mark.kernels
def test_dask_workers_of_a_bucket_out_fetch_the_source_and_mixing_set_into_their_own_cache(
        s3, tmp_path, monkeypatch, capsys):
    # No disk is shared: the client's cache folder is not the workers', and OUT is a bucket.
    from distributed import LocalCluster

    from ipmix_cli.shards.build import build_shards

    name = local_and_uploaded(s3, tmp_path, "data")
    assert build(f"folder:{tmp_path / 'images'}", str(tmp_path / "mixing"), tmp_path / "local") == 0
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "workers-cache"))  # what the worker processes start with
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=40) as cluster:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "client-cache"))
        m = build_shards(source=f"folder:s3://{name}/data/images", fractals=f"s3://{name}/data/mixing",
                         out=f"s3://{name}/out", shards=2, backend="dask", scheduler=cluster.scheduler_address,
                         progress=False)
    assert m["complete"] and os.getpid() not in m["build_stats"]["worker_pids"]
    s3.invalidate_cache()
    built = {p.rsplit("/", 1)[1]: hashlib.sha256(s3.cat(p)).hexdigest() for p in sorted(s3.find(f"{name}/out"))
             if p.endswith(".tar")}
    assert built == shard_digests(tmp_path / "local")
    client = sorted(os.listdir(tmp_path / "client-cache" / "ipmix" / "remote"))
    workers = sorted(os.listdir(tmp_path / "workers-cache" / "ipmix" / "remote"))
    # one copy per prefix on each side, of the same listing (the two workers share a machine: one copy)
    assert len(client) == 2 and workers == client
    capsys.readouterr()


@pytest.mark.kernels
def test_dask_workers_of_a_bucket_out_fetch_cifar_batches_and_wds_shards_themselves(s3, tmp_path, monkeypatch):
    from distributed import LocalCluster

    from _shards_build_helpers import write_cifar_python
    from ipmix_cli.shards.build import build_shards

    folder, _ = write_cifar_python(tmp_path / "cifar", per_batch=6)
    name = bucket(s3)
    s3.put(str(folder), f"{name}/cifar", recursive=True)
    assert build(f"cifar10:{folder}", str(tmp_path / "unused"), tmp_path / "local", "--recipe", "none") == 0
    s3.put(str(tmp_path / "local"), f"{name}/shards", recursive=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "workers-cache"))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=40) as cluster:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "client-cache"))
        for source, out in ((f"cifar10:s3://{name}/cifar", "c"), (f"wds:s3://{name}/shards", "w")):
            build_shards(source=source, recipe="none", out=f"s3://{name}/{out}", shards=2, backend="dask",
                         scheduler=cluster.scheduler_address, progress=False)
            local = tmp_path / f"{out}-local"
            assert build(source.replace(f"s3://{name}/cifar", str(folder)).replace(
                f"s3://{name}/shards", str(tmp_path / "local")), str(tmp_path / "unused"), local, "--recipe", "none") == 0
            s3.invalidate_cache()
            built = {p.rsplit("/", 1)[1]: hashlib.sha256(s3.cat(p)).hexdigest()
                     for p in sorted(s3.find(f"{name}/{out}")) if p.endswith(".tar")}
            assert built == shard_digests(local) != {}
    assert sorted(os.listdir(tmp_path / "workers-cache" / "ipmix" / "remote")) == \
        sorted(os.listdir(tmp_path / "client-cache" / "ipmix" / "remote"))


def test_a_worker_refuses_a_prefix_that_changed_since_the_build_listed_it(s3, tmp_path):
    from ipmix_cli.common import storage
    from ipmix_cli.shards.worker_inputs import BucketInput

    write_mixing_folder(tmp_path / "mixing")
    name = bucket(s3)
    s3.put(str(tmp_path / "mixing"), f"{name}/mixing", recursive=True)
    url = f"s3://{name}/mixing"
    given = BucketInput.of("--fractals", url, storage.fetch_folder(url, tmp_path / "client", "--fractals"))
    assert os.listdir(given.fetch(tmp_path / "worker-1")) == os.listdir(tmp_path / "mixing")
    first = sorted(s3.find(f"{name}/mixing"))[0]
    s3.pipe(first, b"other bytes")
    with pytest.raises(IpmixError, match=rf"^--fractals {url}: its objects changed while the build ran"):
        given.fetch(tmp_path / "worker-2")


@pytest.mark.kernels
def test_cifar_batches_and_wds_shards_are_read_from_s3_like_local_copies(s3, tmp_path, capsys):
    from _shards_build_helpers import write_cifar_python

    folder, _ = write_cifar_python(tmp_path / "cifar", per_batch=6)
    name = bucket(s3)
    s3.put(str(folder), f"{name}/cifar", recursive=True)
    common = ("--recipe", "none", "--epochs", "1")
    assert build(f"cifar10:{folder}", str(tmp_path / "unused"), tmp_path / "c-local", *common) == 0
    assert build(f"cifar10:s3://{name}/cifar", str(tmp_path / "unused"), tmp_path / "c-s3", *common) == 0
    assert shard_digests(tmp_path / "c-s3") == shard_digests(tmp_path / "c-local")

    # The shards just built, as a wds: source in a bucket, give the same build as read locally.
    s3.put(str(tmp_path / "c-local"), f"{name}/shards", recursive=True)
    assert build(f"wds:{tmp_path / 'c-local'}", str(tmp_path / "unused"), tmp_path / "w-local", *common) == 0
    assert build(f"wds:s3://{name}/shards", str(tmp_path / "unused"), tmp_path / "w-s3", *common) == 0
    assert shard_digests(tmp_path / "w-s3") == shard_digests(tmp_path / "w-local") != {}
    capsys.readouterr()

    assert build(f"cifar10:s3://{name}/no-such-prefix", str(tmp_path / "unused"), tmp_path / "none", *common) == 1
    err = error_lines(capsys)
    assert len(err) == 1 and err[0].startswith("Error:") and "no-such-prefix" in err[0]
    assert not (tmp_path / "none").exists()


def test_fractals_render_includes_pictures_from_an_s3_prefix(s3, tmp_path, capsys):
    write_image_folder(tmp_path / "pics")
    name = bucket(s3)
    s3.put(str(tmp_path / "pics"), f"{name}/pics", recursive=True)

    def render(include, out):
        return cli.run(["fractals", "render", str(out), "--escape", "0", "--ifs", "0", "--size", "32",
                        "--include", include, "--quiet"])

    def pictures(out):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.png"))}

    assert render(str(tmp_path / "pics"), tmp_path / "local") == 0
    assert render(f"s3://{name}/pics", tmp_path / "from-s3") == 0
    assert pictures(tmp_path / "from-s3") == pictures(tmp_path / "local") != {}
    capsys.readouterr()
    assert render(f"s3://{name}-missing/pics", tmp_path / "missing") == 1
    err = error_lines(capsys)
    assert len(err) == 1 and err[0].startswith("Error: --include") and not (tmp_path / "missing").exists()
