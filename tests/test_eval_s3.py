"""`ipmix eval` with its checkpoint, test folder and corrupted set in object storage (a real S3
API: moto's server, conftest.s3): the same scores as from the local copies they were uploaded from."""

import json
import uuid

import pytest

from _shards_tools_helpers import write_digits_subset
from _train_helpers import make_digit_shards
from ipmix_cli.cli.main import run

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


def scores(result: dict) -> dict:
    """The result without the paths it names."""
    kept = {k: v for k, v in result.items() if k not in ("checkpoint", "test")}
    kept["corruption"] = {k: v for k, v in result["corruption"].items() if k != "folder"}
    return kept


def test_eval_reads_checkpoint_test_folder_and_corrupted_set_from_s3(s3, tmp_path, capsys):
    make_digit_shards(tmp_path / "shards", views=1, epochs=1, shards=4, limit=256)
    assert run(["train", "--shards", str(tmp_path / "shards"), "--model", "small-cnn", "--epochs", "1",
                "--out", str(tmp_path / "run"), "--batch-size", "64", "--workers", "0"]) == 0
    write_digits_subset(tmp_path / "test", n=30)
    assert run(["corrupt", "--source", f"folder:{tmp_path / 'test'}", "--out", str(tmp_path / "c"),
                "--corruptions", "gaussian_noise,contrast"]) == 0
    bucket = f"ipmix-{uuid.uuid4().hex[:12]}"
    s3.mkdir(bucket)
    for name in ("run", "test", "c"):
        s3.put(str(tmp_path / name), f"{bucket}/{name}", recursive=True)
    capsys.readouterr()

    assert run(["eval", "--checkpoint", str(tmp_path / "run"), "--test", f"folder:{tmp_path / 'test'}",
                "--corrupted", str(tmp_path / "c"), "--json"]) == 0
    local = json.loads(capsys.readouterr().out)
    url = f"s3://{bucket}"
    assert run(["eval", "--checkpoint", f"{url}/run/checkpoint.pt", "--test", f"folder:{url}/test",
                "--corrupted", f"{url}/c", "--json"]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert remote["checkpoint"] == f"{url}/run/checkpoint.pt" and remote["test"] == f"folder:{url}/test"
    assert remote["corruption"]["folder"] == f"{url}/c"
    assert scores(remote) == scores(local) and remote["clean"]["samples"] == 30


def test_a_missing_bucket_is_one_line(s3, capsys):
    missing = f"ipmix-missing-{uuid.uuid4().hex[:8]}"
    assert run(["eval", "--checkpoint", f"s3://{missing}/run", "--test", "digits:test"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"Error: --checkpoint s3://{missing}/run: listing failed: not found (bucket {missing} does not exist)"]
