import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from _train_helpers import make_digit_shards
from ipmix_cli.train.checkpoint import load_checkpoint
from ipmix_cli.cli.main import run
from ipmix_cli.common.errors import IpmixError
from ipmix_cli.train.loop import train

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


@pytest.fixture(scope="module")
def triple_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "shards3"
    make_digit_shards(out, views=3, epochs=2, shards=4, limit=160)
    return out


def _run(shards, out, **kw):
    args = dict(batch_size=16, num_workers=0, log_every=2, echo=lambda *a: None)
    args.update(kw)
    return train(str(shards), "wrn-10-1", 2, out, **args)


def test_resume_mid_epoch_gives_the_same_weights_as_training_straight(triple_shards, tmp_path):
    straight = _run(triple_shards, tmp_path / "a")
    assert straight["complete"] and straight["steps"] == 20 and straight["loss"] == "ce+jsd"
    first = _run(triple_shards, tmp_path / "b", max_steps=7)   # stops inside epoch 0
    assert not first["complete"] and first["steps"] == 7
    assert load_checkpoint(tmp_path / "b")["seen"] == 7
    second = _run(triple_shards, tmp_path / "b", resume=True)
    assert second["complete"] and second["steps"] == 20

    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(pa["momentum_buffer"], pb["momentum_buffer"])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 20
    assert second["train_loss"] == straight["train_loss"]

    # The resumed log has no duplicate steps, and its epoch records match the straight run's.
    def records(run_dir, kind):
        recs = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
        return [r for r in recs if r["type"] == kind]
    logged = [r["step"] for r in records(tmp_path / "b", "step")]
    assert logged == sorted(set(logged)) and 7 in logged and logged[-1] == 20
    strip = lambda r: {k: v for k, v in r.items() if k not in ("time_s", "data_wait")}  # noqa: E731 (timings differ)
    assert [strip(r) for r in records(tmp_path / "a", "epoch")] == [strip(r) for r in records(tmp_path / "b", "epoch")]


def test_run_directory_holds_log_curves_summary(triple_shards, tmp_path):
    summary = _run(triple_shards, tmp_path / "r")
    run_dir = tmp_path / "r"
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    kinds = [r["type"] for r in records]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("epoch") == 2
    lrs = [r["lr"] for r in records if r["type"] == "step"]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 1e-5  # per-step cosine down to ~0
    with Image.open(run_dir / "curves.png") as png:
        assert png.format == "PNG" and png.size == (960, 380)
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == summary["steps"]
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["model"] == "wrn-10-1" and cfg["mean"] == [0.5] * 3 and cfg["jsd_weight"] == 12.0


def test_existing_run_and_changed_settings_are_refused(triple_shards, tmp_path):
    _run(triple_shards, tmp_path / "r", max_steps=2)
    with pytest.raises(IpmixError, match="already holds a run"):
        _run(triple_shards, tmp_path / "r")
    with pytest.raises(IpmixError, match="cannot resume.*lr"):
        _run(triple_shards, tmp_path / "r", resume=True, lr=0.05)


def test_resume_refuses_each_setting_marked_must_match_and_takes_the_others(triple_shards, tmp_path):
    from dataclasses import fields

    from ipmix_cli.train.config import MUST_MATCH, TrainConfig

    out = tmp_path / "r"
    _run(triple_shards, out, max_steps=2)
    changed = {"model": "small-cnn", "batch_size": 32, "epochs": 3, "lr": 0.05, "weight_decay": 1e-3,
               "momentum": 0.5, "seed": 1, "jsd_weight": 6.0}
    assert set(changed) == {f.name for f in fields(TrainConfig) if f.metadata["resume"] == MUST_MATCH}
    base = dict(shards=str(triple_shards), model="wrn-10-1", epochs=2, out=out, resume=True, batch_size=16,
                num_workers=0, log_every=2, echo=lambda *a: None)
    for name, value in changed.items():
        with pytest.raises(IpmixError, match=rf"^cannot resume: settings differ from the checkpoint's: {name} "):
            train(**{**base, name: value})
    # the others may change between launches: another log interval, loader workers, step limit
    summary = train(**{**base, "log_every": 5, "num_workers": 1, "max_steps": 3})
    assert summary["steps"] == 3 and summary["steps_this_launch_per_rank"] == [1]


@pytest.mark.parametrize("argv,message", [
    (["--model", "vgg16"], "unknown model"),
    (["--epochs", "0"], "epochs must be at least 1"),
    (["--batch-size", "4096"], "batch size 4096"),
    (["--lr", "-1"], "learning rate"),
    (["--seed", "-1"], "seed must be in 0..2**63-1"),
    (["--shards", "NOPE"], "NOPE"),
])
def test_bad_options_are_one_line(triple_shards, tmp_path, capsys, argv, message):
    base = {"--shards": str(triple_shards), "--epochs": "1", "--out": str(tmp_path / "run"), "--model": "small-cnn",
            "--workers": "0"}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value.replace("NOPE", str(tmp_path / "missing"))
    code = run(["train", *[x for kv in base.items() for x in kv]])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("Error:")
    assert message.replace("NOPE", "missing") in err


def test_python_dash_m_entry_has_the_same_one_line_errors(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ipmix_cli", "train", "--shards", str(tmp_path / "none"),
                           "--epochs", "1", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("Error:")


def test_periodic_checkpoints_and_echo_warning(tmp_path, monkeypatch):
    import ipmix_cli.train.loop as train_module

    make_digit_shards(tmp_path / "s", views=1, epochs=1, shards=2, limit=64)
    saved, lines = [], []
    real_save = train_module.save_checkpoint

    def spy(path, state):
        saved.append((state["step"], state["epoch"], state["seen"]))
        real_save(path, state)

    monkeypatch.setattr(train_module, "save_checkpoint", spy)
    summary = train(str(tmp_path / "s"), "small-cnn", 5, tmp_path / "run", batch_size=16, num_workers=0,
                    checkpoint_every=3, echo=lines.append)
    assert summary["steps"] == 20 and summary["echo_factor"] == 5
    # every 3 steps inside an epoch, and at each epoch end (4 steps per epoch)
    assert [s for s, _, _ in saved] == [3, 4, 6, 8, 9, 12, 15, 16, 18, 20]
    assert saved[0] == (3, 0, 3) and saved[1] == (4, 1, 0)
    assert any(line.startswith("warning: echo factor 5") for line in lines)
    with Image.open(tmp_path / "run" / "curves.png") as png:
        colours = {c for _, c in png.convert("RGB").getcolors(1 << 16)}
    assert (31, 119, 180) in colours and (255, 127, 14) not in colours  # train curves only, no test series


def test_ctrl_c_checkpoints_exits_130_and_points_at_resume(tmp_path, monkeypatch, capsys):
    import signal

    import ipmix_cli.train.loop as train_module

    make_digit_shards(tmp_path / "s", views=1, epochs=1, shards=2, limit=64)
    real_curves = train_module.write_curves_png

    def ctrl_c_at_first_epoch_end(*a, **k):
        real_curves(*a, **k)
        if not (tmp_path / "interrupted").exists():
            (tmp_path / "interrupted").touch()
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C sends; returns once the loop's handler ran

    monkeypatch.setattr(train_module, "write_curves_png", ctrl_c_at_first_epoch_end)
    argv = ["train", "--shards", str(tmp_path / "s"), "--model", "small-cnn", "--epochs", "2", "--batch-size", "16",
            "--workers", "0", "--out", str(tmp_path / "run")]
    capsys.readouterr()
    assert run(argv) == 130
    err = capsys.readouterr().err
    assert "checkpoint saved: run again with --resume" in err
    assert "same command" not in err  # the same command without --resume refuses the run directory
    assert load_checkpoint(tmp_path / "run")["step"] == 4
    assert run(argv + ["--resume"]) == 0
    assert load_checkpoint(tmp_path / "run")["step"] == 8


def _snapshot(run_dir):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run_dir.iterdir())}


def test_resuming_a_finished_run_says_so_and_changes_no_file(triple_shards, tmp_path, capsys):
    first = _run(triple_shards, tmp_path / "r")
    before = _snapshot(tmp_path / "r")
    lines = []
    again = _run(triple_shards, tmp_path / "r", resume=True, echo=lines.append)
    assert again == json.loads((tmp_path / "r" / "summary.json").read_text())
    assert again["train_samples_per_s"] == first["train_samples_per_s"] and again["time_s"] == first["time_s"]
    assert lines == [f"the run in {tmp_path / 'r'} is complete (20/20 steps); nothing to do, no file changed"]
    assert _snapshot(tmp_path / "r") == before
    argv = ["train", "--shards", str(triple_shards), "--model", "wrn-10-1", "--epochs", "2", "--out",
            str(tmp_path / "r"), "--batch-size", "16", "--workers", "0", "--log-every", "2", "--resume"]
    capsys.readouterr()
    assert run(argv) == 0
    assert "is complete" in capsys.readouterr().err
    assert _snapshot(tmp_path / "r") == before
    assert run(argv + ["--json"]) == 0  # stdout is the summary alone, as summary.json holds it
    assert json.loads(capsys.readouterr().out) == json.loads((tmp_path / "r" / "summary.json").read_text())
    assert _snapshot(tmp_path / "r") == before


def test_resuming_at_the_max_steps_it_stopped_at_changes_no_file(triple_shards, tmp_path):
    _run(triple_shards, tmp_path / "r", max_steps=3)
    before = _snapshot(tmp_path / "r")
    lines = []
    summary = _run(triple_shards, tmp_path / "r", resume=True, max_steps=3, echo=lines.append)
    assert summary["steps"] == 3 and "already at step 3" in lines[0]
    assert _snapshot(tmp_path / "r") == before


def test_the_public_entry_point_is_the_loop():
    import ipmix_cli.train
    from ipmix_cli.train import TrainConfig, loop

    assert ipmix_cli.train.train is train is loop.train and TrainConfig is loop.TrainConfig
    with pytest.raises(AttributeError):
        ipmix_cli.train.no_such_name
