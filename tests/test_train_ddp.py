"""Two CPU processes under torchrun (gloo): equal steps on both ranks, no hang, exact resume."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _train_helpers import make_digit_shards
from ipmix_cli.train.checkpoint import load_checkpoint
from ipmix_cli.common.errors import IpmixError
from ipmix_cli.train.loop import train

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"


def _torchrun(shards, out, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "ipmix_cli", "train", "--shards", str(shards),
           "--model", "small-cnn", "--epochs", "2", "--out", str(out), "--batch-size", "16", "--workers", "0",
           "--log-every", "1", *extra]
    # A hang would be the bug under test: the timeout turns it into a failure.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env)
    assert proc.returncode == 0, "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("W"))
    return json.loads((Path(out) / "summary.json").read_text())


def test_two_gloo_processes_take_equal_steps_on_an_uneven_looking_layout_and_resume(tmp_path):
    # 5 shards of 40 triples on 2 ranks: the shard count does not divide by the world size.
    make_digit_shards(tmp_path / "shards", views=3, epochs=1, shards=5, limit=200)
    first = _torchrun(tmp_path / "shards", tmp_path / "run", "--max-steps", "5")
    assert first["world_size"] == 2 and first["steps"] == 5
    assert first["steps_this_launch_per_rank"] == [5, 5]
    ckpt = load_checkpoint(tmp_path / "run")
    assert len(ckpt["loader"]) == 2 and len(ckpt["rng"]) == 2  # each rank's stream position and RNG
    model_pt = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert set(model_pt) == set(ckpt["model"]) and not any(k.startswith("module.") for k in model_pt)

    # One process cannot continue a two-process run exactly: refused, and nothing is touched.
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()}
    with pytest.raises(IpmixError, match="trained by 2 process.*this launch has 1; resume it with 2"):
        train(str(tmp_path / "shards"), "small-cnn", 2, tmp_path / "run", resume=True, batch_size=16,
              num_workers=0, echo=lambda *a: None)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()} == before

    second = _torchrun(tmp_path / "shards", tmp_path / "run", "--resume", "--test", "digits:test")
    steps_per_epoch = second["total_steps"] // 2
    assert second["complete"] and second["steps"] == 2 * steps_per_epoch
    done = 2 * steps_per_epoch - 5
    assert second["steps_this_launch_per_rank"] == [done, done]
    assert 0 <= second["test_error"] <= 1
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [0, 1]
    # Stopping and resuming two ranks lands on the same weights as running straight through:
    # each rank got back its own stream position and RNG state.
    # Progress lines only by the clock here: every rank must agree on each one (rank 0's clock decides).
    straight = _torchrun(tmp_path / "shards", tmp_path / "straight", "--log-every", "1000")
    assert straight["steps_this_launch_per_rank"] == [2 * steps_per_epoch] * 2
    a, b = load_checkpoint(tmp_path / "run")["model"], load_checkpoint(tmp_path / "straight")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
