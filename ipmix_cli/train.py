"""The training loop: stream pre-built shards into a model.

    ipmix train --shards OUT --model wrn-40-4 --epochs 100 --out RUN_DIR [--resume]
    torchrun --nproc_per_node 4 -m ipmix_cli.train --shards OUT ... (the same options)

One step: uint8 batch [B, V, 3, S, S] → device → normalise → model → loss (cross-entropy, or
CE on the clean view + 12·JSD when the shards carry the clean/aug1/aug2 triple) → SGD (Nesterov)
with a per-step cosine learning rate. Checkpoints hold everything an exact resume needs
(weights, optimizer, schedule, step, each rank's loader position and RNG state).
DDP comes from the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK): gloo on CPU, NCCL on GPU.
Progress: a line every `log_every` steps or LOG_SECONDS (step/total, loss, lr, samples/s, the
share of step time spent waiting for the next batch, ETA); the same fields go to log.jsonl.
The click command lives in ipmix_cli/commands/train.py, so `ipmix train --help` needs no torch.
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

import numpy as np

try:
    import torch
except ModuleNotFoundError:
    if __name__ == "__main__":  # `python -m ipmix_cli.train` without torch: the CLI's one line
        from ipmix_cli.cli import run

        sys.exit(run(["train", *sys.argv[1:]]))
    raise
import torch.distributed as dist
import torch.nn.functional as F

from fractalgen.files import atomic_write_bytes, atomic_write_json, ensure_writable_dir
from ipmix_cli.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from ipmix_cli.curves import write_curves_png
from ipmix_cli.errors import IpmixError
from ipmix_cli.evaluate import resolve_device
from ipmix_cli.losses import jsd_loss
from ipmix_cli.models import (build_model, canonical_name, check_model_name, count_parameters, load_weights,
                              normalisation, normalise, save_trained)
from ipmix_cli.optional import check_torch_version

check_torch_version(torch.__version__)

LOG_NAME, CURVES_NAME, SUMMARY_NAME = "log.jsonl", "curves.png", "summary.json"
TENSORBOARD_DIR = "tensorboard"
LOG_SECONDS = 10.0  # a progress line at least this often, whatever --log-every says
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


def choose_threads(requested: int | None) -> tuple[int, str]:
    """(intra-op threads, why): the CPUs this process may run on divided by the processes of this
    machine, so that local ranks do not oversubscribe the cores; `requested` overrides it."""
    if requested:
        return int(requested), "--threads"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, cpus // local), f"{cpus} CPUs / {local} local process{'es' if local > 1 else ''}"


def format_duration(seconds: float) -> str:
    """h:mm:ss"""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def timed_batches(loader):
    """Yield (batch, seconds spent blocked on it)."""
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        yield batch, time.perf_counter() - t0


def tensorboard_writer_class():
    """torch's SummaryWriter; IpmixError naming the package when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise IpmixError("--tensorboard needs the tensorboard package, which is not installed: "
                         "pip install tensorboard") from None
    return SummaryWriter


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
          threads: int | None = None, tensorboard: bool = False, cache_dir=None, cache_limit=None, loader=None,
          echo=print) -> dict:
    """Train a model on shards (contracts D/E) and return the run summary.

    `batch_size` is the global batch (split evenly over the ranks). `max_steps` stops early (the
    schedule still spans all epochs, so a later `resume=True` with a larger `max_steps` continues
    exactly). `loader` may be any object with the ShardLoader interface (then `shards` is only
    recorded). `echo` receives the progress lines (rank 0 only). `threads` sets torch's intra-op
    threads (default: choose_threads). `tensorboard` also writes event files into RUN/tensorboard.
    `cache_dir` and `cache_limit` keep shards read from object storage on local disk (ShardLoader).
    Resuming a run that is already complete (or already at `max_steps`) changes no file.
    """
    for name, value, low in (("epochs", epochs, 1), ("batch size", batch_size, 1), ("log every", log_every, 1),
                             ("workers", num_workers, 0), ("checkpoint every", checkpoint_every, 0)):
        if int(value) < low:
            raise IpmixError(f"{name} must be at least {low}, got {value}")
    if threads is not None and threads < 1:
        raise IpmixError(f"threads must be at least 1, got {threads}")
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
    if (cache_dir is None) != (cache_limit is None):
        raise IpmixError("a shard cache needs both --cache-dir and --cache-limit")
    if cache_limit is not None:
        from ipmix_cli.stream.cache import parse_size

        cache_limit = parse_size(cache_limit)
    if model != "auto":
        check_model_name(model)  # before any process group starts
    if tensorboard:
        tensorboard_writer_class()  # a missing package is an error before any work starts
    n_threads, why_threads = choose_threads(threads)
    torch.set_num_threads(n_threads)
    rank, world, dev = setup_distributed(device)
    try:
        return _train(shards, model, epochs, Path(out), resume, batch_size, lr, weight_decay, momentum, seed,
                      num_workers, jsd_weight, max_steps, dev, precision, test, log_every, checkpoint_every,
                      loader, echo if rank == 0 else (lambda *a, **k: None), rank, world,
                      f"{n_threads} thread{'s' if n_threads > 1 else ''} ({why_threads})", tensorboard,
                      dict(cache_dir=cache_dir, cache_limit=cache_limit))
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(shards, model_name, epochs, out, resume, batch_size, lr, weight_decay, momentum, seed, num_workers,
           jsd_weight, max_steps, dev, precision, test, log_every, checkpoint_every, loader, echo, rank, world,
           threads_note, tensorboard, cache):
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
                                 seed=seed, drop_last=True, pin_memory=dev.type == "cuda", **cache)
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
        if len(state["rng"]) != world:
            # Each process's stream position and RNG state are in the checkpoint: another count
            # could only continue approximately, with a schedule of another length.
            raise IpmixError(f"cannot resume: the run in {out} was trained by {len(state['rng'])} process(es), "
                             f"this launch has {world}; resume it with {len(state['rng'])}")
        finished = _already_finished(state, epochs, max_steps, out)
        if finished is not None:
            echo(finished["note"])
            return finished["summary"]
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
    # Of this epoch, summed over the ranks at the end: loss·n, correct, n, data-wait s, step s.
    epoch_sums = torch.zeros(5, dtype=torch.float64, device=dev)
    if state is not None:
        load_weights(net, state["model"], ckpt_file)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, epoch, seen = int(state["step"]), int(state["epoch"]), int(state["seen"])
        rng = state["rng"][rank]
        torch.set_rng_state(rng["cpu"].cpu())
        if dev.type == "cuda" and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"].cpu(), dev)
        if seen:
            mid_epoch = True
            with _warnings_to(echo):
                loader.set_epoch(epoch)
                loader.load_state_dict(state["loader"][rank])
            sums = list(state["epoch_sums"])  # checkpoints before data-wait held three sums
            epoch_sums = torch.tensor(sums + [0.0] * (5 - len(sums)), dtype=torch.float64, device=dev)
        echo(f"resuming {out} at step {step}/{total_steps} (epoch {epoch + 1}, batch {seen})")
    elif resume:
        echo(f"no checkpoint in {out}; starting a new run")
    stop_step = min(total_steps, max_steps) if max_steps else None
    end_step = stop_step or total_steps

    ddp = torch.nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None) \
        if world > 1 else net
    held_out = HeldOut(test, size, num_classes, config["classes"], rank, world) if test else None
    log = RunLog(out / LOG_NAME, main, step if state is not None else None)
    board = tensorboard_writer_class()(str(out / TENSORBOARD_DIR)) if tensorboard and main else None
    if main:
        atomic_write_json(out / "config.json", config)
    log.write({"type": "start", "step": step, "time": time.time(), "world_size": world, "device": str(dev),
               "echo_factor": echo_factor, "parameters": count_parameters(net), "threads": torch.get_num_threads()})
    echo(f"training {name} ({count_parameters(net) / 1e6:.2f} M parameters) on {world} process(es), {dev}, "
         f"{config['precision']}, {threads_note}; {_count(epochs, 'epoch')} x {_count(steps_per_epoch, 'step')} of {batch_size} "
         f"({config['loss']})")

    def checkpoint():
        rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None}
        states = _gather({"loader": loader.state_dict(), "rng": rng}, world)
        if main:
            save_checkpoint(ckpt_file, {
                "config": config, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "step": step, "epoch": epoch, "seen": seen, "epoch_sums": epoch_sums.tolist(),
                "loader": [s["loader"] for s in states], "rng": [s["rng"] for s in states]})
            save_trained(out, net, config)

    def show(record: dict) -> None:
        log.write(record)
        if board is not None:
            for key in ("loss", "lr", "samples_per_s", "data_wait", "train_loss", "train_acc", "test_error"):
                if record.get(key) is not None:
                    board.add_scalar(f"{record['type']}/{key}", record[key], record["step"])

    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    stop = _StopFlag(active=world == 1)
    window = torch.zeros(5, dtype=torch.float64, device=dev)  # as epoch_sums, since the last line
    t_window, t_run, steps_run, last = time.time(), time.time(), 0, {}
    ddp.train()
    try:
        while epoch < epochs and (stop_step is None or step < stop_step) and not stop.set:
            if not mid_epoch:
                loader.set_epoch(epoch)
                epoch_sums.zero_()
                seen = 0
            mid_epoch, t_epoch, finished = False, time.time(), True
            t_step = time.perf_counter()
            for (images, labels), waited in timed_batches(loader):
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
                sync()  # on a GPU the step's time is the kernels' time, not the launches'
                now_step = time.perf_counter()
                step, seen, steps_run = step + 1, seen + 1, steps_run + 1
                batch = torch.stack([loss.detach().double() * len(y), (clean.argmax(1) == y).sum().double(),
                                     torch.tensor(float(len(y)), dtype=torch.float64, device=dev)])
                timing = torch.tensor([waited, now_step - t_step], dtype=torch.float64, device=dev)
                t_step = now_step
                window[:3] += batch
                window[3:] += timing
                epoch_sums[:3] += batch
                epoch_sums[3:] += timing
                if _line_due(step, log_every, stop_step, seen == steps_per_epoch, time.time() - t_window, dev):
                    loss_sum, correct, n, wait_s, step_s = _sum_across_ranks(window.clone())
                    now = time.time()
                    rate = steps_run / max(now - t_run, 1e-9)
                    record = {"type": "step", "step": step, "total_steps": total_steps, "epoch": epoch,
                              "lr": scheduler.get_last_lr()[0], "loss": loss_sum / n, "acc": correct / n,
                              "samples_per_s": n / max(now - t_window, 1e-9), "data_wait": wait_s / max(step_s, 1e-12),
                              "eta_s": (end_step - step) / rate}
                    show(record)
                    echo(format_step_line(record, epochs))
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
            loss_sum, correct, n, wait_s, step_s = _sum_across_ranks(epoch_sums.clone())
            last = {"type": "epoch", "epoch": epoch, "step": step, "train_loss": loss_sum / n,
                    "train_acc": correct / n, "data_wait": wait_s / max(step_s, 1e-12),
                    "time_s": time.time() - t_epoch}
            if held_out:
                last.update(held_out.score(net, dev, mean, std, amp_dtype, channels_last))
            show(last)
            if main:
                write_curves_png(out / CURVES_NAME, log.records, f"{name} on {shards}")
            echo(f"epoch {epoch + 1}/{epochs}: loss {last['train_loss']:.4f} acc {last['train_acc']:.4f} "
                 f"data-wait {100 * last['data_wait']:.1f}%"
                 + (f" test error {last['test_error']:.4f}" if "test_error" in last else ""))
            epoch, seen = epoch + 1, 0
            checkpoint()
    finally:
        stop.restore()
        if board is not None:
            board.close()
    if stop.set:
        echo(f"stopped at step {step}; checkpoint saved: run again with --resume to continue")
        raise StoppedWithCheckpoint
    elapsed = time.time() - t_run
    steps_per_rank = _gather(steps_run, world)
    epochs_logged = [r for r in log.records if r.get("type") == "epoch"]
    summary = {"run": str(out), "model": name, "parameters": count_parameters(net), "epochs": epochs,
               "epochs_done": epoch, "steps": step, "total_steps": total_steps, "complete": epoch == epochs,
               "samples_seen": step * batch_size, "world_size": world,
               "steps_this_launch_per_rank": steps_per_rank, "device": str(dev), "threads": torch.get_num_threads(),
               "precision": config["precision"], "loss": config["loss"], "echo_factor": echo_factor,
               "train_samples_per_s": steps_run * batch_size / max(elapsed, 1e-9) if steps_run else None,
               "time_s": elapsed, "data_wait_per_epoch": [r.get("data_wait") for r in epochs_logged],
               "checkpoint": str(ckpt_file), "weights": str(out / "model.pt")}
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


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _already_finished(state: dict, epochs: int, max_steps: int | None, out: Path) -> dict | None:
    """{note, summary} when a resumed run has nothing left to do (then no file may change)."""
    step, total = int(state["step"]), int(state["config"]["total_steps"])
    if int(state["epoch"]) >= epochs:
        note = f"the run in {out} is complete ({step}/{total} steps); nothing to do, no file changed"
    elif max_steps and step >= max_steps:
        note = f"the run in {out} is already at step {step} (--max-steps {max_steps}); nothing to do, no file changed"
    else:
        return None
    try:
        summary = json.loads((out / SUMMARY_NAME).read_text())
    except (OSError, ValueError):
        summary = {"run": str(out), "steps": step, "total_steps": total, "complete": int(state["epoch"]) >= epochs}
    return {"note": note, "summary": summary}


def _line_due(step: int, log_every: int, stop_step, epoch_end: bool, since_last_s: float, dev) -> bool:
    """Whether this step prints a progress line; every rank must agree (the line sums over ranks)."""
    if step % log_every == 0 or step == stop_step or epoch_end:
        return True
    late = since_last_s >= LOG_SECONDS
    if dist.is_initialized():  # rank 0's clock decides
        flag = torch.tensor([float(late)], device=dev)
        dist.broadcast(flag, 0)
        late = bool(flag.item())
    return late


def format_step_line(record: dict, epochs: int) -> str:
    width = len(str(record["total_steps"]))
    return (f"step {record['step']:>{width}}/{record['total_steps']} (epoch {record['epoch'] + 1}/{epochs}) "
            f"loss {record['loss']:.4f} lr {record['lr']:.4g} {record['samples_per_s']:,.0f} samples/s "
            f"data-wait {100 * record['data_wait']:.1f}% eta {format_duration(record['eta_s'])}")


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


def main(argv=None) -> int:
    """`python -m ipmix_cli.train ...` = `ipmix train ...`, with the CLI's one-line errors."""
    from ipmix_cli.cli import run

    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return run(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
