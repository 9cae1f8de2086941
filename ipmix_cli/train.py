"""The training loop: stream pre-built shards into a model.

    ipmix train --shards OUT --model wrn-40-4 --epochs 100 --out RUN_DIR [--resume]
    torchrun --nproc_per_node 4 -m ipmix_cli.train --shards OUT ... (the same options)

One step: uint8 batch [B, V, 3, S, S] → device → normalise → model → loss (cross-entropy, or
CE on the clean view + 12·JSD when the shards carry the clean/aug1/aug2 triple) → SGD (Nesterov)
with a per-step cosine learning rate. Checkpoints hold everything an exact resume needs
(weights, optimizer, schedule, step, each rank's loader position and RNG state).
DDP comes from the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK): gloo on CPU, NCCL on GPU.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import signal
import sys
import time
import warnings
from pathlib import Path

import click
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from fractalgen.files import atomic_write_bytes, atomic_write_json, ensure_writable_dir
from ipmix_cli.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from ipmix_cli.curves import write_curves_png
from ipmix_cli.errors import IpmixError
from ipmix_cli.evaluate import resolve_device
from ipmix_cli.losses import jsd_loss
from ipmix_cli.models import (build_model, canonical_name, check_model_name, count_parameters, normalisation,
                              normalise)

LOG_NAME, CURVES_NAME, SUMMARY_NAME = "log.jsonl", "curves.png", "summary.json"
# Settings that must not change when a run is resumed (they shape the stream or the schedule).
RESUME_KEYS = ("model", "batch_size", "epochs", "lr", "weight_decay", "momentum", "seed",
               "jsd_weight", "shards_config_hash", "views", "image_size", "num_classes")


# ------------------------------------------------------------------ distributed helpers
def setup_distributed(device: str):
    """(rank, world_size, torch.device) from the torchrun environment; initialises the group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=30))
    return rank, world, dev


def _sum_across_ranks(values: torch.Tensor) -> list[float]:
    if dist.is_initialized():
        dist.all_reduce(values)
    return values.tolist()


def _gather(obj, world: int) -> list:
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


# ------------------------------------------------------------------ pieces of the loop
def cosine_factor(step: int, total: int, floor: float = 1e-6) -> float:
    """Learning-rate multiplier at `step`: cosine from 1 down to `floor` over `total` steps."""
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(1, total)))


def resolve_precision(precision: str, dev: torch.device):
    """None (fp32) or the autocast dtype."""
    precision = (precision or "auto").lower()
    if precision == "auto":
        if dev.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if dev.type != "cuda":
            raise IpmixError("--precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
        return torch.float16
    raise IpmixError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")


def to_model_input(images: torch.Tensor, dev, mean, std, channels_last: bool) -> torch.Tensor:
    """uint8 [B, V, 3, S, S] → normalised float [V·B, 3, S, S], view-major (all clean rows first)."""
    x = images.to(dev, non_blocking=True)
    x = x.transpose(0, 1).reshape(-1, *x.shape[2:])
    x = normalise(x, mean, std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class HeldOut:
    """A test source scored at epoch ends; each rank scores every world-th sample."""

    def __init__(self, spec: str, image_size: int, num_classes: int, classes, rank: int, world: int):
        from ipmix_cli.shards.sources import open_source
        from ipmix_cli.testset import check_classes

        self.source = open_source(spec)
        if len(self.source.classes) != num_classes:
            raise IpmixError(f"test set {spec} has {len(self.source.classes)} classes; the shards have {num_classes}")
        check_classes(self.source.classes, classes, spec)
        self.spec, self.size = spec, image_size
        self.indices = np.arange(len(self.source))[rank::world]

    @torch.no_grad()
    def score(self, net, dev, mean, std, amp_dtype, channels_last, batch_size: int = 256) -> dict:
        from ipmix_cli.corruptions import bad_test_image_error
        from ipmix_cli.testset import iter_test_batches

        was_training = net.training
        net.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=dev)
        with bad_test_image_error():
            for images, labels in iter_test_batches(self.source, self.size, batch_size, self.indices):
                x = to_model_input(torch.from_numpy(images).permute(0, 3, 1, 2)[:, None], dev, mean, std,
                                   channels_last)
                y = torch.from_numpy(labels).to(dev)
                with torch.autocast(dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    logits = net(x).float()
                sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                                     (logits.argmax(1) == y).sum().double(),
                                     torch.tensor(len(y), device=dev).double()])
        net.train(was_training)
        loss, correct, n = _sum_across_ranks(sums)
        return {"test_loss": loss / n, "test_acc": correct / n, "test_error": 1 - correct / n}


class RunLog:
    """The JSON-lines log (rank 0 writes); records also kept in memory for the curves."""

    def __init__(self, path: Path, enabled: bool, keep_until_step: int | None):
        self.path, self.enabled, self.records = path, enabled, []
        if enabled and keep_until_step is not None and path.exists():
            # Resuming: drop what was logged after the checkpoint, it will be redone.
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if rec.get("step", 0) <= keep_until_step:
                    self.records.append(rec)
            atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in self.records).encode())
        elif enabled:
            atomic_write_bytes(path, b"")

    def write(self, record: dict) -> None:
        if self.enabled:
            self.records.append(record)
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


class StoppedWithCheckpoint(KeyboardInterrupt):
    """Ctrl-C stopped training after writing a checkpoint: `--resume` continues it."""


class _StopFlag:
    """Ctrl-C (single process) finishes the current step, saves a checkpoint, then stops."""

    def __init__(self, active: bool):
        self.set, self.previous = False, None
        if active:
            try:
                self.previous = signal.signal(signal.SIGINT, self._handler)
            except ValueError:  # not the main thread
                self.previous = None

    def _handler(self, *_):
        if self.set:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.set = True

    def restore(self):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


# ------------------------------------------------------------------ the loop
def train(shards, model: str = "auto", epochs: int = 1, out="run", *, resume: bool = False, batch_size: int = 128,
          lr: float | None = None, weight_decay: float = 5e-4, momentum: float = 0.9, seed: int = 0,
          num_workers: int = 2, jsd_weight: float = 12.0, max_steps: int | None = None, device: str = "auto",
          precision: str = "auto", test: str | None = None, log_every: int = 50, checkpoint_every: int = 0,
          loader=None, echo=print) -> dict:
    """Train a model on shards (contracts D/E) and return the run summary.

    `batch_size` is the global batch (split evenly over the ranks). `max_steps` stops early (the
    schedule still spans all epochs, so a later `resume=True` with a larger `max_steps` continues
    exactly). `loader` may be any object with the ShardLoader interface (then `shards` is only
    recorded). `echo` receives the progress lines (rank 0 only).
    """
    for name, value, low in (("epochs", epochs, 1), ("batch size", batch_size, 1), ("log every", log_every, 1),
                             ("workers", num_workers, 0), ("checkpoint every", checkpoint_every, 0)):
        if int(value) < low:
            raise IpmixError(f"{name} must be at least {low}, got {value}")
    if max_steps is not None and max_steps < 1:
        raise IpmixError(f"max steps must be at least 1, got {max_steps}")
    if not 0 <= int(seed) < 2**63:
        raise IpmixError(f"seed must be in 0..2**63-1, got {seed}")
    for name, value in (("learning rate", lr), ("weight decay", weight_decay), ("momentum", momentum),
                        ("JSD weight", jsd_weight)):
        if value is None:
            continue
        positive = name == "learning rate"
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            kind = "positive" if positive else "non-negative"
            raise IpmixError(f"{name} must be a finite {kind} number, got {value}")
    if model != "auto":
        check_model_name(model)  # before any process group starts
    rank, world, dev = setup_distributed(device)
    try:
        return _train(shards, model, epochs, Path(out), resume, batch_size, lr, weight_decay, momentum, seed,
                      num_workers, jsd_weight, max_steps, dev, precision, test, log_every, checkpoint_every,
                      loader, echo if rank == 0 else (lambda *a, **k: None), rank, world)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(shards, model_name, epochs, out, resume, batch_size, lr, weight_decay, momentum, seed, num_workers,
           jsd_weight, max_steps, dev, precision, test, log_every, checkpoint_every, loader, echo, rank, world):
    main = rank == 0
    ckpt_file = out / CHECKPOINT_NAME
    if ckpt_file.exists() and not resume:
        raise IpmixError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if main:
        ensure_writable_dir(out)
    if batch_size % world:
        raise IpmixError(f"batch size {batch_size} does not split evenly over {world} processes")
    with _warnings_to(echo):
        if loader is None:
            from ipmix_cli.stream import ShardLoader

            loader = ShardLoader(shards, batch_size // world, rank=rank, world_size=world, num_workers=num_workers,
                                 seed=seed, drop_last=True, pin_memory=dev.type == "cuda")
        echo_factor = loader.echo_factor(epochs) if hasattr(loader, "echo_factor") else None
    steps_per_epoch = len(loader)
    lengths = _gather(steps_per_epoch, world)
    if len(set(lengths)) != 1:
        raise IpmixError(f"ranks would take different numbers of steps per epoch ({lengths}); refusing to start")
    if steps_per_epoch < 1:
        raise IpmixError(f"batch size {batch_size} is larger than what one epoch of the shards gives each of "
                         f"{world} process(es)")
    size, num_classes, views = int(loader.image_size), int(loader.num_classes), int(loader.views)
    if views not in (1, 3):
        raise IpmixError(f"shards carry {views} views per sample; training takes 1 or 3 (clean, aug1, aug2)")
    name = canonical_name(model_name) if model_name != "auto" else ("wrn-40-4" if size < 64 else "resnet50")
    lr = lr if lr is not None else (0.1 if size < 64 else 0.01)
    mean, std = normalisation(size)
    amp_dtype = resolve_precision(precision, dev)
    channels_last = dev.type == "cuda"
    torch.backends.cudnn.benchmark = dev.type == "cuda"  # one input shape: let cuDNN pick its fastest kernels
    manifest = getattr(loader, "manifest", {}) or {}
    config = {"model": name, "num_classes": num_classes, "image_size": size, "views": views,
              "classes": list(manifest.get("classes", [])), "mean": list(mean), "std": list(std),
              "shards": str(shards), "shards_config_hash": manifest.get("config_hash"), "epochs": epochs,
              "batch_size": batch_size, "world_size": world, "lr": lr, "weight_decay": weight_decay,
              "momentum": momentum, "nesterov": momentum > 0, "schedule": "cosine per step", "seed": seed,
              "jsd_weight": jsd_weight if views == 3 else None, "loss": "ce+jsd" if views == 3 else "ce",
              "precision": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
              "steps_per_epoch": steps_per_epoch, "total_steps": epochs * steps_per_epoch}

    state = None
    if resume and ckpt_file.exists():
        state = load_checkpoint(ckpt_file, map_location=dev)
        old = state["config"]
        changed = [k for k in RESUME_KEYS if old.get(k) != config.get(k)]
        if changed:
            raise IpmixError("cannot resume: settings differ from the checkpoint's: "
                             + ", ".join(f"{k} {old.get(k)!r} -> {config.get(k)!r}" for k in changed))
        # The schedule keeps the length it started with (it differs only if the world size changed).
        config["total_steps"] = old["total_steps"]
    total_steps = config["total_steps"]

    torch.manual_seed(seed)  # identical initial weights on every rank
    net = build_model(name, num_classes, size).to(dev)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, nesterov=momentum > 0,
                                weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_factor(s, total_steps))
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16)
    torch.manual_seed(seed * 1000 + 1 + rank)  # dropout differs per rank

    step, epoch, seen, mid_epoch = 0, 0, 0, False
    epoch_sums = torch.zeros(3, dtype=torch.float64, device=dev)  # loss·n, correct, n of this epoch
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, epoch, seen = int(state["step"]), int(state["epoch"]), int(state["seen"])
        same_world = len(state["rng"]) == world
        if same_world:
            rng = state["rng"][rank]
            torch.set_rng_state(rng["cpu"].cpu())
            if dev.type == "cuda" and rng.get("cuda") is not None:
                torch.cuda.set_rng_state(rng["cuda"].cpu(), dev)
        else:
            echo(f"note: resuming a {len(state['rng'])}-process run on {world}: the stream continues at shard "
                 "granularity, not bit for bit")
        if seen:
            mid_epoch = True
            with _warnings_to(echo):
                loader.set_epoch(epoch)
                loader.load_state_dict(state["loader"][rank if same_world else 0])
            epoch_sums = torch.tensor(state["epoch_sums"], dtype=torch.float64, device=dev)
        echo(f"resuming {out} at step {step}/{total_steps} (epoch {epoch + 1}, batch {seen})")
    elif resume:
        echo(f"no checkpoint in {out}; starting a new run")
    stop_step = min(total_steps, max_steps) if max_steps else None

    ddp = torch.nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None) \
        if world > 1 else net
    held_out = HeldOut(test, size, num_classes, config["classes"], rank, world) if test else None
    log = RunLog(out / LOG_NAME, main, step if state is not None else None)
    if main:
        atomic_write_json(out / "config.json", config)
    log.write({"type": "start", "step": step, "time": time.time(), "world_size": world, "device": str(dev),
               "echo_factor": echo_factor, "parameters": count_parameters(net)})
    echo(f"training {name} ({count_parameters(net) / 1e6:.2f} M parameters) on {world} process(es), {dev}, "
         f"{config['precision']}; {epochs} epochs x {steps_per_epoch} steps of {batch_size} ({config['loss']})")

    def checkpoint():
        rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None}
        states = _gather({"loader": loader.state_dict(), "rng": rng}, world)
        if main:
            save_checkpoint(ckpt_file, {
                "config": config, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "step": step, "epoch": epoch, "seen": seen, "epoch_sums": epoch_sums.tolist(),
                "loader": [s["loader"] for s in states], "rng": [s["rng"] for s in states]})

    stop = _StopFlag(active=world == 1)
    window = torch.zeros(3, dtype=torch.float64, device=dev)
    t_window, t_run, steps_run, last = time.time(), time.time(), 0, {}
    ddp.train()
    try:
        while epoch < epochs and (stop_step is None or step < stop_step) and not stop.set:
            if not mid_epoch:
                loader.set_epoch(epoch)
                epoch_sums.zero_()
                seen = 0
            mid_epoch, t_epoch, finished = False, time.time(), True
            for images, labels in loader:
                y = labels.to(dev, non_blocking=True)
                x = to_model_input(images, dev, mean, std, channels_last)
                with torch.autocast(dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    logits = ddp(x)
                if views == 3:
                    loss, clean = jsd_loss(logits, y, jsd_weight)
                else:
                    clean = logits.float()
                    loss = F.cross_entropy(clean, y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step, seen, steps_run = step + 1, seen + 1, steps_run + 1
                batch = torch.stack([loss.detach().double() * len(y), (clean.argmax(1) == y).sum().double(),
                                     torch.tensor(float(len(y)), dtype=torch.float64, device=dev)])
                window += batch
                epoch_sums += batch
                if step % log_every == 0 or step == stop_step or seen == steps_per_epoch:
                    loss_sum, correct, n = _sum_across_ranks(window.clone())
                    now = time.time()
                    log.write({"type": "step", "step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0],
                               "loss": loss_sum / n, "acc": correct / n,
                               "samples_per_s": n / max(now - t_window, 1e-9)})
                    window.zero_()
                    t_window = now
                if step == stop_step or stop.set:
                    finished = seen == steps_per_epoch
                    break
                if checkpoint_every and step % checkpoint_every == 0 and seen < steps_per_epoch:
                    checkpoint()
            if not finished:
                checkpoint()
                break
            loss_sum, correct, n = _sum_across_ranks(epoch_sums.clone())
            last = {"type": "epoch", "epoch": epoch, "step": step, "train_loss": loss_sum / n,
                    "train_acc": correct / n, "time_s": time.time() - t_epoch}
            if held_out:
                last.update(held_out.score(net, dev, mean, std, amp_dtype, channels_last))
            log.write(last)
            if main:
                write_curves_png(out / CURVES_NAME, log.records, f"{name} on {shards}")
            echo(f"epoch {epoch + 1}/{epochs}: loss {last['train_loss']:.4f} acc {last['train_acc']:.4f}"
                 + (f" test error {last['test_error']:.4f}" if "test_error" in last else ""))
            epoch, seen = epoch + 1, 0
            checkpoint()
    finally:
        stop.restore()
    if stop.set:
        echo(f"stopped at step {step}; checkpoint saved: run again with --resume to continue")
        raise StoppedWithCheckpoint
    elapsed = time.time() - t_run
    steps_per_rank = _gather(steps_run, world)
    summary = {"run": str(out), "model": name, "parameters": count_parameters(net), "epochs": epochs,
               "epochs_done": epoch, "steps": step, "total_steps": total_steps, "complete": epoch == epochs,
               "samples_seen": step * batch_size, "world_size": world,
               "steps_this_launch_per_rank": steps_per_rank, "device": str(dev),
               "precision": config["precision"], "loss": config["loss"], "echo_factor": echo_factor,
               "train_samples_per_s": steps_run * batch_size / max(elapsed, 1e-9), "time_s": elapsed,
               "checkpoint": str(ckpt_file)}
    epochs_logged = [r for r in log.records if r.get("type") == "epoch"]
    if epochs_logged:
        summary.update({k: epochs_logged[-1][k] for k in ("train_loss", "train_acc", "test_loss", "test_acc",
                                                          "test_error") if k in epochs_logged[-1]})
    log.write({"type": "end", **summary})
    if main:
        atomic_write_json(out / SUMMARY_NAME, summary)
        write_curves_png(out / CURVES_NAME, log.records, f"{name} on {shards}")
    if world > 1:
        dist.barrier()  # no rank tears its connections down while another still uses them
    return summary


class _warnings_to:
    """Turn Python warnings raised inside the block into `warning: ...` lines for the user."""

    def __init__(self, echo):
        self.echo = echo

    def __enter__(self):
        self._ctx = warnings.catch_warnings(record=True)
        self._caught = self._ctx.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        for w in self._caught:
            self.echo(f"warning: {w.message}")
        return False


def format_summary(summary: dict) -> str:
    keys = ("model", "parameters", "steps", "total_steps", "complete", "train_loss", "train_acc", "test_error",
            "echo_factor", "train_samples_per_s", "time_s", "run")
    return "\n".join(f"  {k:<20} {summary[k]:.4g}" if isinstance(summary[k], float) else f"  {k:<20} {summary[k]}"
                     for k in keys if summary.get(k) is not None)


# ------------------------------------------------------------------ command line
@click.command("train")
@click.option("--shards", required=True, type=click.Path(), help="Shard directory (or its manifest.json).")
@click.option("--model", default="auto", show_default=True,
              help="resnet18, wrn-40-4 (any wrn-D-K), resnet50, small-cnn; auto = wrn-40-4 at 32 px, resnet50 above.")
@click.option("--epochs", required=True, type=int, help="Training epochs (epoch t reads materialized epoch t mod K).")
@click.option("--out", required=True, type=click.Path(), help="Run directory: checkpoint, log, curves, summary.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint (exactly).")
@click.option("--batch-size", default=128, show_default=True, type=int, help="Global batch, split over processes.")
@click.option("--lr", type=float, default=None, help="Peak learning rate [default: 0.1 at 32 px, 0.01 above].")
@click.option("--weight-decay", default=5e-4, show_default=True, type=float)
@click.option("--momentum", default=0.9, show_default=True, type=float, help="Nesterov momentum.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int, help="DataLoader workers per process.")
@click.option("--jsd-weight", default=12.0, show_default=True, type=float,
              help="Weight of the JSD loss (triple shards).")
@click.option("--max-steps", type=int, default=None, help="Stop after this many steps in all (schedule unchanged).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", default="auto", show_default=True, type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
              help="auto = bf16 (or fp16) autocast on CUDA, fp32 on CPU.")
@click.option("--test", "test_spec", default=None, help="Held-out source scored each epoch, e.g. digits:test.")
@click.option("--log-every", default=50, show_default=True, type=int, help="Steps between log lines.")
@click.option("--checkpoint-every", default=0, show_default=True, type=int,
              help="Also checkpoint every N steps (0: at epoch ends only).")
def train_command(shards, model, epochs, out, resume, batch_size, lr, weight_decay, momentum, seed, workers,
                  jsd_weight, max_steps, device, precision, test_spec, log_every, checkpoint_every):
    """Train a classifier on pre-built shards (one process, or several under torchrun)."""
    try:
        summary = train(shards, model, epochs, out, resume=resume, batch_size=batch_size, lr=lr,
                        weight_decay=weight_decay, momentum=momentum, seed=seed, num_workers=workers,
                        jsd_weight=jsd_weight, max_steps=max_steps, device=device, precision=precision,
                        test=test_spec, log_every=log_every, checkpoint_every=checkpoint_every,
                        echo=lambda line: click.echo(line, err=True))
    except StoppedWithCheckpoint:
        # train() said to resume with --resume; the CLI's generic "run the same command again"
        # would be wrong here (the same command without --resume refuses the run directory).
        raise click.exceptions.Exit(130) from None
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo("summary:\n" + format_summary(summary))


def main(argv=None) -> int:
    """`python -m ipmix_cli.train ...` = `ipmix train ...`, with the CLI's one-line errors."""
    from ipmix_cli.cli import run

    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return run(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
