"""What a user watches: progress lines with data-wait and ETA, the same fields in log.jsonl,
per-epoch data-wait in summary.json, the thread choice, TensorBoard, bf16 autocast on the CPU."""

import json
import os
import re
import sys
import time

import pytest
import torch

import ipmix_cli.train.loop as train_module
from _train_helpers import make_digit_shards
from ipmix_cli.common.errors import IpmixError
from ipmix_cli.stream import ShardLoader
from ipmix_cli.train.logs import format_duration
from ipmix_cli.train.loop import train
from ipmix_cli.train.ranks import choose_threads

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)

STEP_LINE = re.compile(r"^step +(\d+)/(\d+) \(epoch (\d+)/(\d+)\) loss \d+\.\d{4} lr [\d.e-]+ [\d,]+ samples/s "
                       r"data-wait \d+\.\d% eta \d+:\d\d:\d\d$")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("watch") / "s"
    make_digit_shards(out, views=1, epochs=1, shards=2, limit=64)
    return out


@pytest.fixture(autouse=True)
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _records(run_dir, kind):
    return [r for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if r["type"] == kind]


def test_step_lines_carry_progress_rate_data_wait_and_eta(shards, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "LOG_SECONDS", 1e9)  # only the --log-every lines, however slow the machine
    lines = []
    summary = train(str(shards), "small-cnn", 2, tmp_path / "run", batch_size=16, num_workers=0, log_every=3,
                    echo=lines.append)
    steps = [STEP_LINE.match(line) for line in lines if line.startswith("step")]
    assert all(steps) and [int(m.group(1)) for m in steps] == [3, 4, 6, 8]  # every 3 steps and at epoch ends
    assert {int(m.group(2)) for m in steps} == {8}
    logged = _records(tmp_path / "run", "step")
    assert [r["step"] for r in logged] == [3, 4, 6, 8]
    for r in logged:
        assert r["total_steps"] == 8 and r["lr"] > 0 and r["samples_per_s"] > 0 and 0 <= r["data_wait"] <= 1
        assert r["eta_s"] >= 0
    assert logged[-1]["eta_s"] == 0
    epoch_lines = [line for line in lines if line.startswith("epoch")]
    assert len(epoch_lines) == 2 and all(re.search(r"data-wait \d+\.\d%", line) for line in epoch_lines)
    epochs = _records(tmp_path / "run", "epoch")
    assert summary["data_wait_per_epoch"] == [r["data_wait"] for r in epochs] and len(epochs) == 2
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["data_wait_per_epoch"] == summary["data_wait_per_epoch"]


def test_a_line_comes_every_few_seconds_whatever_log_every_says(shards, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "LOG_SECONDS", 0.0)  # "10 s" shrunk to every step
    lines = []
    train(str(shards), "small-cnn", 1, tmp_path / "run", batch_size=16, num_workers=0, log_every=1000,
          echo=lines.append)
    assert [int(STEP_LINE.match(line).group(1)) for line in lines if line.startswith("step")] == [1, 2, 3, 4]


class SlowLoader:
    """A real ShardLoader whose batches arrive `delay` seconds late, like a starved input pipeline."""

    def __init__(self, loader, delay):
        self.loader, self.delay = loader, delay

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            time.sleep(self.delay)
            yield batch


def test_data_wait_is_the_share_of_step_time_spent_waiting_for_batches(shards, tmp_path):
    def run(name, delay):
        loader = ShardLoader(str(shards), 16, rank=0, world_size=1, num_workers=0, seed=0, drop_last=True)
        train(str(shards), "small-cnn", 1, tmp_path / name, batch_size=16, num_workers=0,
              loader=SlowLoader(loader, delay), echo=lambda *a: None)
        return _records(tmp_path / name, "epoch")[0]

    delay = 0.5
    starved, fed = run("starved", delay), run("fed", 0.0)
    # 4 batches each 0.5 s late: at least 2 s of the epoch's step time was waiting, however busy
    # the machine (the share alone depends on how long the model's steps took).
    assert 4 * delay <= starved["data_wait"] * starved["time_s"] <= starved["time_s"]
    assert fed["data_wait"] < starved["data_wait"]


def test_threads_follow_the_usable_cpus_and_local_processes(monkeypatch, shards, tmp_path):
    cpus = len(os.sched_getaffinity(0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert choose_threads(None) == (cpus, f"{cpus} CPUs / 1 local process")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2 * cpus))
    assert choose_threads(None)[0] == 1  # never zero
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert choose_threads(3) == (3, "--threads")
    lines = []
    summary = train(str(shards), "small-cnn", 1, tmp_path / "run", batch_size=16, num_workers=0, threads=1,
                    max_steps=1, echo=lines.append)
    assert torch.get_num_threads() == 1 and summary["threads"] == 1
    start = next(line for line in lines if line.startswith("training"))
    assert "1 thread (--threads)" in start
    assert "; 1 epoch x " in start and "1 epochs" not in start
    with pytest.raises(IpmixError, match="threads must be at least 1"):
        train(str(shards), "small-cnn", 1, tmp_path / "r2", threads=0)


def test_eta_reads_hours_minutes_seconds():
    assert [format_duration(s) for s in (0, 59.6, 61, 3600 * 27 + 62)] == ["0:00:00", "0:01:00", "0:01:01",
                                                                           "27:01:02"]


def test_bf16_autocast_trains_on_the_cpu(shards, tmp_path):
    summary = train(str(shards), "small-cnn", 1, tmp_path / "run", batch_size=16, num_workers=0,
                    precision="bf16", echo=lambda *a: None)
    assert summary["precision"] == "bfloat16" and summary["complete"]
    assert torch.isfinite(torch.tensor(summary["train_loss"]))
    weights = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert all(v.dtype != torch.bfloat16 for v in weights.values())  # autocast keeps fp32 weights


def test_tensorboard_writes_event_files_with_the_logged_scalars(shards, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(str(shards), "small-cnn", 1, tmp_path / "run", batch_size=16, num_workers=0, log_every=2,
          tensorboard=True, echo=lambda *a: None)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"step/loss", "step/lr", "step/samples_per_s", "step/data_wait", "epoch/train_loss",
            "epoch/data_wait"} <= tags
    assert [e.step for e in events.Scalars("step/loss")] == [2, 4]


def test_tensorboard_missing_is_one_line_before_any_work(shards, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    with pytest.raises(IpmixError, match=r"^tensorboard needs the tensorboard package.*pip install tensorboard$"):
        train(str(shards), "small-cnn", 1, tmp_path / "run", tensorboard=True)
    assert not (tmp_path / "run").exists()
    from ipmix_cli.cli.main import run

    assert run(["train", "--shards", str(shards), "--model", "small-cnn", "--epochs", "1", "--out",
                str(tmp_path / "run"), "--tensorboard"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "Error: --tensorboard needs the tensorboard package, which is not installed: pip install tensorboard"]
    assert not (tmp_path / "run").exists()
