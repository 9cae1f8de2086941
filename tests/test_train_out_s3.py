"""`ipmix train --out s3://...` against a real S3 API (moto's server, conftest.s3): the bucket
gets the files of a local run folder, a resume from the URL continues exactly, and the messages
name the URL the user gave."""

from __future__ import annotations

import io
import json
import uuid

import pytest
import torch

from _train_helpers import make_digit_shards
from ipmix_cli.cli.main import run
from ipmix_cli.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.kernels  # reads shards through the decoder's Numba kernels (left out of `make test-fast`)


def train_args(shards, out, *extra):
    return ["train", "--shards", str(shards), "--model", "small-cnn", "--epochs", "2", "--out", str(out),
            "--batch-size", "16", "--workers", "0", "--log-every", "3", "--json", *extra]


def summary(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def bucket_objects(s3, prefix: str) -> dict:
    s3.invalidate_cache()
    return {name[len(prefix) + 1:]: s3.cat(name) for name in sorted(s3.find(prefix))}


def log_points(text: str) -> list:
    return [(record["type"], record.get("step")) for record in map(json.loads, text.splitlines())]


def weights(data: bytes) -> dict:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


@pytest.fixture
def shards(tmp_path):
    make_digit_shards(tmp_path / "shards", views=1, epochs=2, shards=4, limit=128)
    return tmp_path / "shards"


def test_a_run_written_to_a_bucket_holds_the_files_of_a_local_run(s3, shards, tmp_path, capsys):
    assert run(train_args(shards, tmp_path / "local")) == 0
    capsys.readouterr()
    bucket = f"ipmix-{uuid.uuid4().hex[:12]}"
    s3.mkdir(bucket)
    url = f"s3://{bucket}/runs/x"
    cache = tmp_path / "cache"
    assert run(train_args(shards, url, "--cache-dir", str(cache), "--cache-limit", "10MB")) == 0
    printed = summary(capsys)
    assert (printed["run"], printed["weights"], printed["checkpoint"]) == (url, f"{url}/model.pt",
                                                                            f"{url}/checkpoint.pt")
    objects = bucket_objects(s3, f"{bucket}/runs/x")
    local = sorted(p.relative_to(tmp_path / "local").as_posix() for p in (tmp_path / "local").rglob("*")
                   if p.is_file())
    assert sorted(objects) == local
    assert {"checkpoint.pt", "log.jsonl", "model.pt", "model.json", "curves.png", "summary.json"} <= set(objects)
    assert json.loads(objects["summary.json"])["run"] == url
    assert log_points(objects["log.jsonl"].decode()) == log_points((tmp_path / "local" / "log.jsonl").read_text())
    from_bucket, from_disk = weights(objects["model.pt"]), weights((tmp_path / "local" / "model.pt").read_bytes())
    assert from_bucket.keys() == from_disk.keys()
    for key in from_disk:
        assert torch.equal(from_bucket[key], from_disk[key]), key
    assert list(cache.glob("ipmix-out-*")) == []  # the staging folder went with the run

    # the same command again refuses the run, naming the URL, and uploads nothing
    assert run(train_args(shards, url)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"Error: {url} already holds a run; pass --resume to continue it or choose another --out"]
    assert bucket_objects(s3, f"{bucket}/runs/x") == objects


def test_a_run_stopped_after_a_checkpoint_resumes_from_the_url_exactly(s3, shards, tmp_path, capsys):
    assert run(train_args(shards, tmp_path / "straight")) == 0
    straight = summary(capsys)
    bucket = f"ipmix-{uuid.uuid4().hex[:12]}"
    s3.mkdir(bucket)
    url = f"s3://{bucket}/run"
    assert run(train_args(shards, url, "--max-steps", "11")) == 0  # one epoch is 8 steps: stopped inside the 2nd
    first = summary(capsys)
    assert (first["steps"], first["complete"]) == (11, False)
    assert weights(bucket_objects(s3, f"{bucket}/run")["checkpoint.pt"])["step"] == 11

    assert run(train_args(shards, url, "--resume")) == 0
    captured = capsys.readouterr()
    resumed = json.loads(captured.out.strip().splitlines()[-1])
    assert f"resuming {url} at step 11/16" in captured.err
    assert resumed["complete"] and resumed["steps"] == straight["steps"] == 16
    assert resumed["train_loss"] == straight["train_loss"]
    objects = bucket_objects(s3, f"{bucket}/run")
    final = weights(objects["checkpoint.pt"])
    reference = load_checkpoint(tmp_path / "straight")
    for key in reference["model"]:
        assert torch.equal(final["model"][key], reference["model"][key]), key
    # cut back to the checkpoint on resume, then logged on: each step line once (the stop at 11 is one more)
    steps = [step for kind, step in log_points(objects["log.jsonl"].decode()) if kind == "step"]
    straight_steps = [step for kind, step in log_points((tmp_path / "straight" / "log.jsonl").read_text())
                      if kind == "step"]
    assert steps == sorted(set(straight_steps) | {11})
    assert json.loads(objects["summary.json"])["complete"] is True


def test_a_run_into_a_missing_bucket_is_one_line(s3, shards, capsys):
    missing = f"ipmix-missing-{uuid.uuid4().hex[:8]}"
    assert run(train_args(shards, f"s3://{missing}/run")) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"Error: --out s3://{missing}/run: listing failed: not found (bucket {missing} does not exist)"]


def test_eval_out_to_a_bucket_writes_the_results_a_local_out_gets(s3, shards, tmp_path, capsys):
    assert run(train_args(shards, tmp_path / "run", "--epochs", "1")) == 0
    evaluate = ["eval", "--checkpoint", str(tmp_path / "run"), "--test", "digits:test", "--limit", "32",
                "--device", "cpu"]
    assert run([*evaluate, "--out", str(tmp_path / "eval.json")]) == 0
    bucket = f"ipmix-{uuid.uuid4().hex[:12]}"
    s3.mkdir(bucket)
    url = f"s3://{bucket}/evals/eval.json"
    assert run([*evaluate, "--out", url]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"results written to {url}"
    assert bucket_objects(s3, f"{bucket}/evals") == {"eval.json": (tmp_path / "eval.json").read_bytes()}

    missing = f"ipmix-missing-{uuid.uuid4().hex[:8]}"
    assert run([*evaluate, "--out", f"s3://{missing}/eval.json"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"Error: --out s3://{missing}: checking the bucket failed: not found (bucket {missing} does not exist)"]
    assert "scored" not in captured.err and captured.out == ""  # refused before any scoring


def test_kill_9_after_a_checkpoint_upload_then_resume_from_the_url_gives_the_same_weights(s3, shards, tmp_path,
                                                                                           capsys):
    import os
    import signal
    import subprocess
    import sys

    epochs = ["--epochs", "6"]  # five epochs after the first checkpoint: the kill lands well before the end
    assert run(train_args(shards, tmp_path / "straight", *epochs)) == 0
    straight = summary(capsys)
    bucket = f"ipmix-{uuid.uuid4().hex[:12]}"
    s3.mkdir(bucket)
    url = f"s3://{bucket}/run"
    proc = subprocess.Popen([sys.executable, "-m", "ipmix_cli", *train_args(shards, url, *epochs)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None:  # wait for the first checkpoint object, then kill at once
            s3.invalidate_cache()
            if s3.exists(f"{bucket}/run/checkpoint.pt"):
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not s3.exists(f"{bucket}/run/summary.json")

    assert run(train_args(shards, url, *epochs, "--resume")) == 0
    resumed = summary(capsys)
    assert resumed["complete"] and resumed["steps"] == straight["steps"]
    final = weights(bucket_objects(s3, f"{bucket}/run")["checkpoint.pt"])
    reference = load_checkpoint(tmp_path / "straight")
    for key in reference["model"]:
        assert torch.equal(final["model"][key], reference["model"][key]), key


def test_two_ranks_under_torchrun_write_one_run_to_the_url_and_resume_from_it(s3, tmp_path):
    # Both ranks pull the prefix (each needs the checkpoint to resume; on several nodes they
    # share no disk); rank 0 alone uploads. Stopped and resumed from the URL, the two ranks
    # end on the weights a straight two-rank run to a local folder ends on.
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    make_digit_shards(tmp_path / "shards", views=1, epochs=2, shards=4, limit=96)

    def torchrun_train(out, *extra):
        cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "ipmix_cli", "train", "--shards",
               str(tmp_path / "shards"), "--model", "small-cnn", "--epochs", "2", "--out", str(out),
               "--batch-size", "16", "--workers", "0", "--log-every", "1000", "--cache-dir",
               str(tmp_path / "cache"), "--cache-limit", "10MB", *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert proc.returncode == 0, "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("W"))

    torchrun_train(tmp_path / "straight")
    bucket = f"ipmix-{uuid.uuid4().hex[:12]}"
    s3.mkdir(bucket)
    url = f"s3://{bucket}/run"
    torchrun_train(url, "--max-steps", "7")  # one epoch is 6 steps of 16: stopped inside the 2nd
    first = weights(bucket_objects(s3, f"{bucket}/run")["checkpoint.pt"])
    assert first["step"] == 7 and len(first["loader"]) == 2  # each rank's stream position
    torchrun_train(url, "--resume")
    objects = bucket_objects(s3, f"{bucket}/run")
    done = json.loads(objects["summary.json"])
    assert done["complete"] and done["world_size"] == 2 and done["steps_this_launch_per_rank"] == [5, 5]
    final, reference = weights(objects["checkpoint.pt"])["model"], load_checkpoint(tmp_path / "straight")["model"]
    for key in reference:
        assert torch.equal(final[key], reference[key]), key
    assert sorted(objects) == sorted(p.name for p in (tmp_path / "straight").iterdir() if p.is_file())
    assert list((tmp_path / "cache").glob("ipmix-out-*")) == []  # every rank's staging folder went
