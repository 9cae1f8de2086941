"""`ipmix train --shards s3://...` against a real S3 API (moto's server, conftest.s3): the same
weights as training from the local folder, also when stopped and resumed, with or without the
local shard cache."""

from __future__ import annotations

import json
import uuid

import pytest
import torch

from _train_helpers import make_digit_shards
from ipmix_cli.train.checkpoint import load_checkpoint
from ipmix_cli.cli.main import run

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


def train_args(shards, out, *extra):
    return ["train", "--shards", str(shards), "--model", "wrn-10-1", "--epochs", "2", "--out", str(out),
            "--batch-size", "16", "--workers", "0", "--log-every", "5", "--json", *extra]


def summary(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_training_from_the_bucket_matches_local_and_resumes_exactly(s3, tmp_path, capsys):
    local = tmp_path / "shards"
    make_digit_shards(local, views=3, epochs=2, shards=4, limit=160)
    bucket = f"ipmix-{uuid.uuid4().hex[:12]}"
    s3.mkdir(bucket)
    s3.put(str(local), f"{bucket}/runs/shards", recursive=True)
    url = f"s3://{bucket}/runs/shards"

    assert run(train_args(local, tmp_path / "local")) == 0
    straight = summary(capsys)
    cache = tmp_path / "cache"
    limit = str(max(p.stat().st_size for p in local.rglob("*.tar")) * 5 // 2)  # two shards of the eight
    assert run(train_args(url, tmp_path / "s3", "--max-steps", "7", "--cache-dir", str(cache),
                          "--cache-limit", limit)) == 0
    assert summary(capsys)["steps"] == 7
    assert run(train_args(url, tmp_path / "s3", "--resume", "--cache-dir", str(cache), "--cache-limit", limit)) == 0
    resumed = summary(capsys)
    assert resumed["complete"] and resumed["steps"] == straight["steps"] == 20
    assert resumed["train_loss"] == straight["train_loss"]
    a, b = load_checkpoint(tmp_path / "local"), load_checkpoint(tmp_path / "s3")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    cached = list(cache.glob("*.tar"))
    assert len(cached) == 2 and sum(p.stat().st_size for p in cached) <= int(limit)


def test_bad_options_and_a_missing_bucket_are_one_line(s3, tmp_path, capsys):
    missing = f"ipmix-missing-{uuid.uuid4().hex[:8]}"
    assert run(train_args(f"s3://{missing}/shards", tmp_path / "run", "--cache-dir", str(tmp_path / "c"),
                          "--cache-limit", "lots")) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "Error: cache limit 'lots' is not a size such as 20GB, 512MiB or 1000000 (bytes)"]
    assert run(train_args(f"s3://{missing}/shards", tmp_path / "run", "--cache-dir", str(tmp_path / "c"))) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "Error: a shard cache needs both --cache-dir and --cache-limit"]
    assert list(tmp_path.iterdir()) == []  # refused before anything was written

    assert run(train_args(f"s3://{missing}/shards", tmp_path / "run")) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"Error: cannot read shard manifest s3://{missing}/shards/manifest.json: not found "
        "(The specified bucket does not exist)"]
    assert list((tmp_path / "run").iterdir()) == []  # no checkpoint or log that looks like a run
