"""ipmix_cli.common.storage: which data paths are local, pipe: commands or URLs, and the errors for URLs."""

import sys

import pytest

from ipmix_cli.common import storage
from ipmix_cli.common.errors import IpmixError


@pytest.mark.parametrize("text,kind,scheme", [
    ("shards", "local", ""),
    ("/data/shards", "local", ""),
    ("s3:/bucket", "local", ""),            # one slash: a folder named s3:, as the user wrote it
    ("C:\\data", "local", ""),
    ("file:///data/shards", "local", "file"),
    ("pipe:aws s3 cp s3://b/x.tar -", "pipe", ""),
    ("s3://bucket/shards", "url", "s3"),
    ("GS://bucket/x", "url", "gs"),
    ("abfs://container/x", "url", "abfs"),
    ("https://host/run/manifest.json", "url", "https"),
    ("foo+bar://x", "url", "foo+bar"),
])
def test_classify(text, kind, scheme):
    where = storage.classify(text)
    assert (where.kind, where.scheme) == (kind, scheme)


def test_file_url_gives_its_path():
    assert storage.require_local("file:///data/shards", "--out", "OUT") == "/data/shards"
    assert storage.require_local("data/shards", "--out", "OUT") == "data/shards"


def test_kept_kinds_pass_unchanged_and_others_are_refused():
    keep = ("pipe", "http", "https")
    for url in ("pipe:cat x", "http://h/m.json", "https://h/m.json"):
        assert storage.require_local(url, "--shards", "the shards", keep=keep) == url
    for url in ("s3://b/m.json", "gs://b/m.json"):
        with pytest.raises(IpmixError, match="the shards must be a local path for now"):
            storage.require_local(url, "--shards", "the shards", keep=keep)
    with pytest.raises(IpmixError, match="pipe: commands are read only by"):
        storage.require_local("pipe:cat x", "--out", "OUT")


def test_known_schemes_without_an_extra_are_refused_as_not_local_yet():
    # fsspec knows these (no package to install); the command still needs a local path.
    for url in ("http://h/x", "memory://x", "hdfs://namenode/x"):
        with pytest.raises(IpmixError, match="OUT must be a local path for now"):
            storage.require_local(url, "--out", "OUT")


def test_unknown_scheme_names_the_extras():
    with pytest.raises(IpmixError) as info:
        storage.require_local("foo://bucket/x", "--out", "OUT")
    message = str(info.value)
    assert message.startswith("--out foo://bucket/x: unknown storage scheme 'foo://'")
    assert message.endswith("OUT must be a local path for now")
    with pytest.raises(IpmixError) as where_urls_are_read:
        storage.check_scheme(storage.classify("foo://bucket/x"), "--fractals")
    for text in (message, str(where_urls_are_read.value)):
        for extra in ("s3", "gcs", "azure"):
            assert f"pip install 'ipmix[{extra}]'" in text
    storage.check_scheme(storage.classify("https://host/x"), "--fractals")  # fsspec's http: nothing to install


@pytest.mark.parametrize("url,package,extra", [
    ("s3://bucket/x", "s3fs", "s3"), ("gs://bucket/x", "gcsfs", "gcs"), ("az://container/x", "adlfs", "azure"),
    ("abfs://container/x", "adlfs", "azure"),
])
def test_a_store_whose_package_is_missing_names_its_extra(monkeypatch, url, package, extra):
    monkeypatch.setitem(sys.modules, package, None)  # what Python reports for a package it cannot import
    with pytest.raises(IpmixError) as info:
        storage.check_scheme(storage.classify(url), "--fractals")
    assert str(info.value) == f"--fractals {url}: {url.split(':')[0]}:// needs the {package} package: " \
                              f"pip install 'ipmix[{extra}]'"


def test_source_specs_check_the_path_after_the_kind():
    assert storage.require_local_source("digits:test", "--source", "the source") == "digits:test"
    assert storage.require_local_source("folder:file:///img", "--source", "the source") == "folder:/img"
    assert storage.require_local_source("cifar10:data/c", "--source", "the source") == "cifar10:data/c"
    assert storage.require_local_source("wds:d/x-{000..003}.tar", "--source", "the source") == "wds:d/x-{000..003}.tar"
    with pytest.raises(IpmixError, match=r"^--source folder:s3://b/i: the source \(folder:PATH\) must be a local"):
        storage.require_local_source("folder:s3://b/i", "--source", "the source")
    with pytest.raises(IpmixError, match=r"^--source gs://b/i: the source must be a local path for now"):
        storage.require_local_source("gs://b/i", "--source", "the source")


def test_remote_positions_take_object_stores_only(monkeypatch):
    for package in ("s3fs", "gcsfs", "adlfs"):
        monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(IpmixError, match="needs the gcsfs package"):
        storage.require_local("gs://b/fractals", "--fractals", "the mixing set", remote=True)
    # fsspec reads http:// too, but a folder is not listed over plain HTTP: still local for now.
    with pytest.raises(IpmixError, match="the mixing set must be a local path for now"):
        storage.require_local("http://host/fractals", "--fractals", "the mixing set", remote=True)
    assert storage.require_local("fractals", "--fractals", "the mixing set", remote=True) == "fractals"
