"""A URL where a command reads or writes only local paths is one `Error:` line, exit 1, and
nothing is written: never a local folder named `s3:` (issue 10, "never a silent local folder")."""

import subprocess
import sys

import pytest

from ipmix_cli.cli import main as cli

LOCAL_FOR_NOW = "must be a local path for now"
UNKNOWN = "unknown storage scheme 'foo://'"
EXTRAS = ("pip install 'ipmix[s3]'", "pip install 'ipmix[gcs]'", "pip install 'ipmix[azure]'")

# (argv, what the one line must say). Every data path of every command family, with the store
# URL in the position under test and valid local values (that need not exist) elsewhere.
CASES = [
    # shards build: OUT, the source forms not read from URLs yet, the cache folder; --dry-run too.
    # https:// is known to fsspec but no object store: not a place to read a folder from.
    (["shards", "build", "--source", "digits", "--fractals", "https://host/fractals", "--out", "o"], ["--fractals https://host/fractals", LOCAL_FOR_NOW]),
    # (folder: sources and --fractals are read from object storage: test_storage_s3.py.)
    # (OUT and combine write to object storage: test_storage_build_out.py; a store whose package
    # is not installed names the extra.)
    (["shards", "build", "--source", "digits", "--out", "gs://b/shards"], ["--out gs://b/shards", "pip install 'ipmix[gcs]'"]),
    (["shards", "build", "--source", "cifar10:az://container/cifar", "--out", "o"], ["--source cifar10:az://container/cifar", "pip install 'ipmix[azure]'"]),
    (["shards", "build", "--source", "wds:s3://bucket/train-{000000..000009}.tar", "--out", "o"], ["--source wds:s3://bucket/train-", "give the prefix that holds the shards (wds:s3://bucket/)"]),
    (["shards", "build", "--source", "wds:pipe:aws s3 cp s3://b/x.tar -", "--out", "o"], ["--source wds:pipe:aws s3 cp", "pipe: commands are read only by 'train --shards'"]),
    (["shards", "build", "--source", "digits", "--cache-dir", "abfs://c/cache", "--out", "o"], ["--cache-dir abfs://c/cache", LOCAL_FOR_NOW]),
    (["shards", "build", "--source", "digits", "--out", "foo://bucket/shards"], ["--out foo://bucket/shards", UNKNOWN, *EXTRAS, LOCAL_FOR_NOW]),
    (["shards", "build", "--source", "folder:foo://x", "--out", "o"], ["--source folder:foo://x", UNKNOWN, *EXTRAS]),
    # shards verify / inspect / preview / combine
    (["shards", "preview", "shards", "--out", "s3://bucket/p.png"], ["--out s3://bucket/p.png", LOCAL_FOR_NOW]),
    # fractals render / preview / stats
    # (fractals render and corrupt write to object storage: test_storage_out_commands.py)
    (["fractals", "render", "gs://bucket/fractals", "--escape", "1", "--ifs", "0", "--size", "16"], ["OUT gs://bucket/fractals", "pip install 'ipmix[gcs]'"]),
    (["fractals", "render", "fr", "--include", "gs://bucket/mine"], ["--include gs://bucket/mine", "pip install 'ipmix[gcs]'"]),
    (["fractals", "render", "foo://x/fr"], ["OUT foo://x/fr", UNKNOWN, *EXTRAS, LOCAL_FOR_NOW]),
    (["fractals", "preview", "s3://bucket/fractals"], ["OUT s3://bucket/fractals", LOCAL_FOR_NOW]),
    (["fractals", "preview", "fr", "--out", "s3://bucket/sheet.png"], ["--out s3://bucket/sheet.png", LOCAL_FOR_NOW]),
    (["fractals", "stats", "s3://bucket/fractals"], ["OUT s3://bucket/fractals", LOCAL_FOR_NOW]),
    # augment preview (its --fractals is read from object storage: test_storage_s3.py)
    (["augment", "preview", "s3://bucket/cat.png", "--fractals", "fr", "--out", "p.png"], ["IMAGE_OR_FOLDER s3://bucket/cat.png", LOCAL_FOR_NOW]),
    (["augment", "preview", "cat.png", "--fractals", "https://host/fractals", "--out", "p.png"], ["--fractals https://host/fractals", LOCAL_FOR_NOW]),
    (["augment", "preview", "cat.png", "--fractals", "fr", "--out", "s3://bucket/p.png"], ["--out s3://bucket/p.png", LOCAL_FOR_NOW]),
    # train
    (["train", "--shards", "shards", "--epochs", "1", "--out", "foo://bucket/run"], ["--out foo://bucket/run", UNKNOWN, *EXTRAS, LOCAL_FOR_NOW]),
    (["train", "--shards", "shards", "--epochs", "1", "--out", "run", "--test", "cifar10-test:gs://b/c"], ["--test cifar10-test:gs://b/c", LOCAL_FOR_NOW]),
    # eval and corrupt
    (["eval", "--checkpoint", "c.pt", "--test", "digits:test", "--out", "foo://bucket/r.json"], ["--out foo://bucket/r.json", UNKNOWN, *EXTRAS, LOCAL_FOR_NOW]),
    (["corrupt", "--source", "digits:test", "--out", "az://bucket/c"], ["--out az://bucket/c", "pip install 'ipmix[azure]'"]),
    (["corrupt", "--source", "folder:s3://bucket/test", "--out", "c"], ["--source folder:s3://bucket/test", LOCAL_FOR_NOW]),
    # demo
    (["demo", "--out", "s3://bucket/demo"], ["--out s3://bucket/demo", LOCAL_FOR_NOW]),
]


def tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("argv,says", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_url_where_paths_must_be_local_is_one_error_line_and_writes_nothing(tmp_path, monkeypatch, capsys, argv, says):
    monkeypatch.chdir(tmp_path)
    assert cli.run(argv) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), captured.err
    for text in says:
        assert text in lines[0]
    assert captured.out == ""
    assert tree(tmp_path) == []


def test_the_reported_bug_through_the_installed_command(tmp_path, s3):
    # `ipmix shards build ... --out s3://bucket/shards` used to write ./s3:/bucket/shards/...
    # and report success. It writes to the bucket now; one that does not exist is one line.
    proc = subprocess.run([sys.executable, "-m", "ipmix_cli", "shards", "build", "--source", "digits", "--out",
                           "s3://no-such-bucket/shards", "--quiet"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "Error: --out s3://no-such-bucket/shards: listing failed: not found (bucket no-such-bucket does not exist)"]
    assert "Traceback" not in proc.stderr
    assert tree(tmp_path) == []


def test_train_still_reads_shards_through_pipe_and_http(tmp_path, monkeypatch, capsys):
    # pipe: and http(s) manifests were accepted by train --shards before; they still get as
    # far as reading the manifest (which fails here, with the reader's own message).
    monkeypatch.chdir(tmp_path)
    for url in ("pipe:exit 3", "http://127.0.0.1:9/manifest.json"):
        assert cli.run(["train", "--shards", url, "--epochs", "1", "--out", "run"]) == 1
        err = capsys.readouterr().err
        assert f"cannot read shard manifest {url}" in err
        assert LOCAL_FOR_NOW not in err


@pytest.mark.kernels
def test_file_urls_are_local_paths(tmp_path, capsys):
    out = tmp_path / "fr"
    assert cli.run(["fractals", "render", f"file://{out}", "--escape", "1", "--ifs", "0", "--size", "16",
                    "--quiet"]) == 0
    assert (out / "manifest.json").is_file()
    assert tree(tmp_path) == ["fr", "fr/escape-00000.png", "fr/manifest.json"]
