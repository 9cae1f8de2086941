"""`shards verify | inspect | preview` on a shard folder in object storage: a real S3 API (moto's
server, conftest.s3) reached through AWS_ENDPOINT_URL. Each answers as it does for the same
folder on disk, and finds the same damage."""

from __future__ import annotations

import json
import uuid

import pytest

from _s3_helpers import upload_folder
from _shards_tools_helpers import make_shards, read_tar_members, rewrite_shard
from ipmix_cli.cli import main as cli

SHARD1 = "epoch-0000/ipmix-e0000-00001.tar"


@pytest.fixture
def local_and_url(s3, tmp_path):
    local = tmp_path / "local"
    make_shards(local, epochs=2, shards=2, per_shard=3, pads=1)
    return local, upload_folder(s3, local)


def run_json(capsys, *argv) -> tuple[int, dict]:
    code = cli.run(list(argv))
    return code, json.loads(capsys.readouterr().out)


def without_out(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "out"}


@pytest.mark.parametrize("deep", [[], ["--deep"]])
def test_verify_a_bucket_reports_what_the_local_folder_does(local_and_url, capsys, deep):
    local, url = local_and_url
    code, from_s3 = run_json(capsys, "shards", "verify", url, "--json", *deep)
    assert code == 0 and from_s3["ok"] and from_s3["out"] == url
    _, from_disk = run_json(capsys, "shards", "verify", str(local), "--json", *deep)
    assert without_out(from_s3) == without_out(from_disk)
    assert cli.run(["shards", "verify", url + "/manifest.json", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith(f"OK  {url}: 2 epoch(s), 4 shards, 12 samples")


def test_verify_names_a_damaged_or_missing_object(s3, local_and_url, capsys):
    local, url = local_and_url
    key = f"{url[len('s3://'):]}/{SHARD1}"
    data = bytearray((local / SHARD1).read_bytes())
    data[700] ^= 0xFF
    s3.pipe(key, bytes(data))
    assert cli.run(["shards", "verify", url, "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"BAD  {SHARD1}: ")
    assert err[-1].startswith(f"Error: {url}/{SHARD1}: ") and any("sha256" in line for line in err)

    s3.rm(key)
    assert cli.run(["shards", "verify", url, "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert f"BAD  {SHARD1}: missing" in err and err[-1].startswith(f"Error: {url}/{SHARD1}: missing")


def test_deep_verify_of_a_bucket_decodes_every_image(s3, local_and_url, capsys):
    local, _ = local_and_url
    manifest = json.loads((local / "manifest.json").read_text())
    members = read_tar_members(local / SHARD1)
    members[3] = (members[3][0], b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    rewrite_shard(local, manifest, SHARD1, members)  # a consistent manifest: only decoding finds it
    url = upload_folder(s3, local)
    assert cli.run(["shards", "verify", url, "--quiet"]) == 0
    capsys.readouterr()
    assert cli.run(["shards", "verify", url, "--deep", "--quiet"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"Error: {url}/{SHARD1}: sample e0000s0000004 field png") and "cannot decode" in last


def test_inspect_a_bucket_gives_the_local_summary(local_and_url, capsys):
    local, url = local_and_url
    code, from_s3 = run_json(capsys, "shards", "inspect", url, "--json")
    assert code == 0 and from_s3["out"] == url and from_s3["missing_shards"] == 0
    _, from_disk = run_json(capsys, "shards", "inspect", str(local), "--json")
    assert without_out(from_s3) == without_out(from_disk)
    assert from_s3["scanned_samples"] == 6


def test_preview_of_a_bucket_draws_the_local_sheet(local_and_url, tmp_path, capsys, monkeypatch):
    local, url = local_and_url
    assert cli.run(["shards", "preview", str(local), "--out", str(tmp_path / "local.png"), "--n", "5"]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    assert cli.run(["shards", "preview", url, "--n", "5"]) == 0  # default: beside us, not in the bucket
    assert capsys.readouterr().out.startswith("wrote shards-preview-epoch-0000.png: 5 samples of epoch 0")
    assert (tmp_path / "shards-preview-epoch-0000.png").read_bytes() == (tmp_path / "local.png").read_bytes()


def test_a_missing_bucket_or_empty_prefix_is_one_line(s3, capsys):
    missing = f"ipmix-missing-{uuid.uuid4().hex[:8]}"
    for command in ("verify", "inspect", "preview"):
        assert cli.run(["shards", command, f"s3://{missing}/shards"]) == 1
        assert capsys.readouterr().err.strip().splitlines() == [
            f"Error: OUT s3://{missing}/shards: listing failed: not found (bucket {missing} does not exist)"]
    name = f"ipmix-{uuid.uuid4().hex[:12]}"
    s3.mkdir(name)
    assert cli.run(["shards", "verify", f"s3://{name}/nothing"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"Error: s3://{name}/nothing does not exist"]


def test_storage_options_reach_the_store(s3, s3_endpoint, local_and_url, capsys, monkeypatch):
    local, url = local_and_url
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the option says where the store is
    type(s3).clear_instance_cache()  # and no client made for the variable is reused
    assert cli.run(["shards", "verify", url, "--quiet", "--storage-option", f"endpoint_url={s3_endpoint}"]) == 0
    assert capsys.readouterr().out.startswith(f"OK  {url}: 2 epoch(s), 4 shards")
    code, summary = run_json(capsys, "shards", "inspect", url, "--json", "--storage-option",
                             f"client_kwargs.endpoint_url={s3_endpoint}")
    assert code == 0 and summary["scanned_samples"] == 6
    assert cli.run(["shards", "verify", url, "--storage-option", "endpoint_url"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "Error: --storage-option 'endpoint_url' is not KEY=VALUE"]
