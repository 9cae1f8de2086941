"""`ipmix shards verify | inspect | preview` through the real CLI entry point."""

import json

from PIL import Image
import pytest

from _shards_tools_helpers import make_shards, read_tar_members, rewrite_shard
from ipmix_cli.cli import main as cli

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


def test_verify_ok_and_json(tmp_path, capsys):
    make_shards(tmp_path, epochs=2, shards=2, per_shard=3, pads=1)
    assert cli.run(["shards", "verify", str(tmp_path), "--deep", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "2 epoch(s), 4 shards, 12 samples (2 pads)" in out and "deep" in out
    assert cli.run(["shards", "verify", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["samples"] == 12


def test_verify_failure_lists_every_problem_then_one_error_line(tmp_path, capsys):
    m = make_shards(tmp_path, epochs=1, shards=3, per_shard=2, pads=0)
    members = read_tar_members(tmp_path / "epoch-0000" / "ipmix-e0000-00002.tar")
    rewrite_shard(tmp_path, m, "epoch-0000/ipmix-e0000-00002.tar", members[:3])
    (tmp_path / "epoch-0000" / "ipmix-e0000-00001.tar").unlink()
    assert cli.run(["shards", "verify", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "BAD  epoch-0000/ipmix-e0000-00001.tar: missing" in err
    assert "BAD  epoch-0000/ipmix-e0000-00002.tar: holds 1 samples, manifest says 2" in err
    assert err[-1].startswith("Error: ") and "ipmix-e0000-00001.tar: missing (and " in err[-1]
    assert not any("Traceback" in line for line in err)


def test_verify_not_a_shard_folder_is_one_line(tmp_path, capsys):
    assert cli.run(["shards", "verify", str(tmp_path / "nothing")]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"Error: {tmp_path / 'nothing'} does not exist"]


def test_inspect_text_and_json(tmp_path, capsys):
    make_shards(tmp_path, epochs=1, shards=2, per_shard=3, pads=1, views=3)
    assert cli.run(["shards", "inspect", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "views=3" in text and "clean.png, aug1.png, aug2.png + cls + json" in text
    assert cli.run(["shards", "inspect", str(tmp_path), "--json", "--no-scan"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == 6 and "class_histogram" not in summary


def test_preview_default_and_explicit_destination(tmp_path, capsys, monkeypatch):
    make_shards(tmp_path / "out", shards=1, per_shard=4, pads=0)
    assert cli.run(["shards", "preview", str(tmp_path / "out"), "--n", "3"]) == 0
    default = tmp_path / "out-preview-epoch-0000.png"  # beside the shard folder, like fractals preview
    assert str(default) in capsys.readouterr().out and Image.open(default).size[0] > 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["epoch-0000", "manifest.json"]
    monkeypatch.chdir(tmp_path / "out")
    assert cli.run(["shards", "preview", ".", "--n", "1", "--epoch", "0"]) == 0
    assert str(default) in capsys.readouterr().out
    dest = tmp_path / "p.png"
    assert cli.run(["shards", "preview", str(tmp_path / "out"), "--out", str(dest), "--epoch", "0"]) == 0
    assert dest.is_file()
    assert cli.run(["shards", "preview", str(tmp_path / "out"), "--epoch", "4"]) == 1
    assert "epoch 4 is not in" in capsys.readouterr().err
