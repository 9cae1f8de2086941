"""The training loop: stream pre-built shards into a model.

    ipmix train --shards OUT --model wrn-40-4 --epochs 100 --out RUN_DIR [--resume]
    torchrun --nproc_per_node 4 -m ipmix_cli train --shards OUT ... (the same options)

`train` reads top to bottom: a TrainConfig (config.py), then setup → train_epoch → end_epoch
(once per epoch) → summarize, all sharing one `Run` (the launch's model, optimizer, loader,
logs and counters). One step (`_step`): uint8 batch [B, V, 3, S, S] → device → normalise →
model → loss (cross-entropy, or CE on the clean view + 12·JSD when the shards carry the
clean/aug1/aug2 triple) → SGD (Nesterov) with a per-step cosine learning rate. Checkpoints
hold everything an exact resume needs (weights, optimizer, schedule, step, each rank's loader
position and RNG state). DDP comes from the torchrun environment (ranks.py). Progress: a line
every `log_every` steps or LOG_SECONDS (step/total, loss, lr, samples/s, the share of step
time spent waiting for the next batch, ETA); the same fields go to log.jsonl (logs.py).
The click command lives in ipmix_cli/cli/train.py, so `ipmix train --help` needs no torch.
"""

from __future__ import annotations

import gc
import json
import math
import signal
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from fractalgen.files import atomic_write_json, ensure_writable_dir
from ipmix_cli.common.errors import IpmixError, OptionError
from ipmix_cli.common.objstore import is_store_url
from ipmix_cli.common.optional import check_torch_version
from ipmix_cli.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from ipmix_cli.train.config import RESUME_KEYS, TrainConfig
from ipmix_cli.train.curves import write_curves_png
from ipmix_cli.train.heldout import HeldOut
from ipmix_cli.train.logs import (CURVES_NAME, LOG_NAME, SUMMARY_NAME, TENSORBOARD_DIR, RunLog, format_step_line,
                                  tensorboard_writer_class)
from ipmix_cli.train.losses import jsd_loss
from ipmix_cli.train.models import (build_model, canonical_name, count_parameters, load_weights, normalisation,
                                    save_trained, to_model_input)
from ipmix_cli.train.ranks import choose_threads, gather, setup_distributed, sum_across_ranks
from ipmix_cli.train.run_folder import RunFolder

check_torch_version(torch.__version__)

LOG_SECONDS = 10.0  # a progress line at least this often, whatever --log-every says


# ------------------------------------------------------------------ the loop
def train(shards, model: str = "auto", epochs: int = 1, out="run", *, resume: bool = False, batch_size: int = 128,
          lr: float | None = None, weight_decay: float = 5e-4, momentum: float = 0.9, seed: int = 0,
          num_workers: int = 2, jsd_weight: float = 12.0, max_steps: int | None = None, device: str = "auto",
          precision: str = "auto", test: str | None = None, log_every: int = 50, checkpoint_every: int = 0,
          threads: int | None = None, tensorboard: bool = False, cache_dir=None, cache_limit=None,
          storage_options: dict | None = None, loader=None, echo=print) -> dict:
    """Train a model on shards (contracts D/E) and return the run summary.

    `batch_size` is the global batch (split evenly over the ranks). `max_steps` stops early (the
    schedule still spans all epochs, so a later `resume=True` with a larger `max_steps` continues
    exactly). `loader` may be any object with the ShardLoader interface (then `shards` is only
    recorded). `echo` receives the progress lines (rank 0 only). `threads` sets torch's intra-op
    threads (default: choose_threads). `tensorboard` also writes event files into RUN/tensorboard.
    `cache_dir` and `cache_limit` keep shards read from object storage on local disk (ShardLoader);
    `storage_options` are fsspec options for a `shards` or `out` URL, added to those of the
    environment. An `out` URL is written in a local staging folder (under `cache_dir` when given)
    and mirrored to the prefix by rank 0 after each checkpoint and at the end (run_folder.py).
    Resuming a run that is already complete (or already at `max_steps`) changes no file.
    """
    cfg = TrainConfig(shards=shards, model=model, batch_size=batch_size, epochs=epochs, lr=lr,
                      weight_decay=weight_decay, momentum=momentum, seed=seed, jsd_weight=jsd_weight,
                      out=str(out) if is_store_url(out) else Path(out),
                      resume=resume, num_workers=num_workers, max_steps=max_steps, device=device,
                      precision=precision, test=test, log_every=log_every, checkpoint_every=checkpoint_every,
                      threads=threads, tensorboard=tensorboard, cache_dir=cache_dir, cache_limit=cache_limit,
                      storage_options=storage_options)
    cfg.validate()
    n_threads, why_threads = choose_threads(cfg.threads)
    torch.set_num_threads(n_threads)
    rank, world, dev = setup_distributed(cfg.device)
    threads_note = f"{n_threads} thread{'s' if n_threads > 1 else ''} ({why_threads})"
    folder = run = None
    try:
        folder = RunFolder(cfg.out, storage_options, cache_dir, uploads=rank == 0)
        run = setup(Run(cfg, rank, world, dev, echo if rank == 0 else _silent, folder), loader, threads_note)
        if run.finished is not None:
            return run.finished
        run.stop = _StopFlag(active=world == 1)
        run.ddp.train()
        try:
            while run.epoch < cfg.epochs and not run.at_stop_step() and not run.stop.set:
                if not train_epoch(run):
                    run.checkpoint()  # stopped inside the epoch: a resume continues from this batch
                    break
                end_epoch(run)
        finally:
            run.stop.restore()
            if run.board is not None:
                run.board.close()
        if run.stop.set:
            run.echo(f"stopped at step {run.step}; checkpoint saved: run again with --resume to continue")
            raise StoppedWithCheckpoint
        return summarize(run)
    finally:
        if folder is not None:
            folder.close()
        if world > 1 and dist.is_initialized():
            # DDP's reducer holds the process group: dropped here, gloo's work objects and
            # threads go while the interpreter is whole, not during its shutdown (where a
            # rank could abort after a finished run)
            run = None
            gc.collect()
            dist.destroy_process_group()


def _silent(*args, **kwargs) -> None:
    pass


class Run:
    """One launch of a training run: what `setup` made, and where the run stands."""

    def __init__(self, cfg: TrainConfig, rank: int, world: int, dev: torch.device, echo, folder: RunFolder):
        self.cfg, self.rank, self.world, self.dev, self.echo = cfg, rank, world, dev, echo
        self.main = rank == 0  # rank 0 writes the files and prints
        self.folder = folder  # the --out as given (`shown`), mirrored from `out` when it is a URL
        self.out = folder.path
        self.ckpt_file = self.out / CHECKPOINT_NAME
        self.finished = None  # the summary, when a resumed run has nothing left to do
        self.step = self.epoch = self.seen = 0  # global step; epoch; batches of this epoch done
        self.mid_epoch = False  # resumed inside an epoch: loader position and sums restored
        # Of this epoch, summed over the ranks at its end: loss·n, correct, n, data-wait s, step s.
        self.epoch_sums = torch.zeros(5, dtype=torch.float64, device=dev)
        self.window = torch.zeros(5, dtype=torch.float64, device=dev)  # the same, since the last line
        self.steps_run = 0  # steps of this launch
        self.t_run = self.t_window = self.t_epoch = time.time()
        self.stop_step = None  # max_steps, when it ends this launch before the last epoch
        self.stop = None
        self.board = None

    def at_stop_step(self) -> bool:
        return self.stop_step is not None and self.step >= self.stop_step

    def sync(self) -> None:
        if self.dev.type == "cuda":  # on a GPU the step's time is the kernels' time, not the launches'
            torch.cuda.synchronize(self.dev)

    def checkpoint(self) -> None:
        """Everything an exact resume needs; every rank hands in its loader position and RNG state."""
        dev = self.dev
        rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None}
        states = gather({"loader": self.loader.state_dict(), "rng": rng}, self.world)
        if self.main:
            save_checkpoint(self.ckpt_file, {
                "config": self.config, "model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "step": self.step, "epoch": self.epoch, "seen": self.seen, "epoch_sums": self.epoch_sums.tolist(),
                "loader": [s["loader"] for s in states], "rng": [s["rng"] for s in states]})
            save_trained(self.out, self.net, self.config)
            self.folder.after_checkpoint()

    def show(self, record: dict) -> None:
        """A record into log.jsonl (and TensorBoard)."""
        self.log.write(record)
        if self.board is not None:
            for key in ("loss", "lr", "samples_per_s", "data_wait", "train_loss", "train_acc", "test_error"):
                if record.get(key) is not None:
                    self.board.add_scalar(f"{record['type']}/{key}", record[key], record["step"])


def setup(run: Run, loader, threads_note: str) -> Run:
    """Everything before the first step: the loader, the run's settings, the model and optimizer
    (restored from the checkpoint on resume) and the logs. A resumed run with nothing left to do
    stops here with `run.finished` set, and no file changed."""
    cfg = run.cfg
    if run.ckpt_file.exists() and not cfg.resume:
        raise OptionError("{path} already holds a run; pass {resume} to continue it or choose another {out}",
                          path=run.folder.shown)
    if run.main:
        ensure_writable_dir(run.out)
    if cfg.batch_size % run.world:
        raise IpmixError(f"batch size {cfg.batch_size} does not split evenly over {run.world} processes")
    _open_loader(run, loader)
    run.config = _run_settings(run)
    state = _checkpoint_to_resume(run)
    if run.finished is not None:
        return run
    _make_model(run)
    if state is not None:
        _restore(run, state)
    elif cfg.resume:
        run.echo(f"no checkpoint in {run.folder.shown}; starting a new run")
    run.stop_step = min(run.total_steps, cfg.max_steps) if cfg.max_steps else None
    run.ddp = torch.nn.parallel.DistributedDataParallel(
        run.net, device_ids=[run.dev.index] if run.dev.type == "cuda" else None) if run.world > 1 else run.net
    run.held_out = HeldOut(cfg.test, run.size, run.num_classes, run.config["classes"], run.rank, run.world) \
        if cfg.test else None
    _open_logs(run, state, threads_note)
    return run


def _open_loader(run: Run, loader) -> None:
    cfg, world = run.cfg, run.world
    with _warnings_to(run.echo):
        if loader is None:
            from ipmix_cli.stream import ShardLoader

            loader = ShardLoader(cfg.shards, cfg.batch_size // world, rank=run.rank, world_size=world,
                                 num_workers=cfg.num_workers, seed=cfg.seed, drop_last=True,
                                 pin_memory=run.dev.type == "cuda", cache_dir=cfg.cache_dir,
                                 cache_limit=cfg.cache_bytes(), storage_options=cfg.storage_options)
        run.echo_factor = loader.echo_factor(cfg.epochs) if hasattr(loader, "echo_factor") else None
    run.loader = loader
    run.steps_per_epoch = len(loader)
    lengths = gather(run.steps_per_epoch, world)
    if len(set(lengths)) != 1:
        raise IpmixError(f"ranks would take different numbers of steps per epoch ({lengths}); refusing to start")
    if run.steps_per_epoch < 1:
        raise IpmixError(f"batch size {cfg.batch_size} is larger than what one epoch of the shards gives each of "
                         f"{world} process(es)")
    run.size, run.num_classes, run.views = int(loader.image_size), int(loader.num_classes), int(loader.views)
    if run.views not in (1, 3):
        raise IpmixError(f"shards carry {run.views} views per sample; training takes 1 or 3 (clean, aug1, aug2)")


def _run_settings(run: Run) -> dict:
    """The resolved settings (config.json, and the checkpoint's "config"); also sets the input
    normalisation and the precision on `run`."""
    cfg, dev, size, views = run.cfg, run.dev, run.size, run.views
    run.name = canonical_name(cfg.model) if cfg.model != "auto" else ("wrn-40-4" if size < 64 else "resnet50")
    lr = cfg.lr if cfg.lr is not None else (0.1 if size < 64 else 0.01)
    run.mean, run.std = normalisation(size)
    run.amp_dtype = resolve_precision(cfg.precision, dev)
    run.channels_last = dev.type == "cuda"
    torch.backends.cudnn.benchmark = dev.type == "cuda"  # one input shape: let cuDNN pick its fastest kernels
    manifest = getattr(run.loader, "manifest", {}) or {}
    run.total_steps = cfg.epochs * run.steps_per_epoch
    return {"model": run.name, "num_classes": run.num_classes, "image_size": size, "views": views,
            "classes": list(manifest.get("classes", [])), "mean": list(run.mean), "std": list(run.std),
            "shards": str(cfg.shards), "shards_config_hash": manifest.get("config_hash"), "epochs": cfg.epochs,
            "batch_size": cfg.batch_size, "world_size": run.world, "lr": lr, "weight_decay": cfg.weight_decay,
            "momentum": cfg.momentum, "nesterov": cfg.momentum > 0, "schedule": "cosine per step", "seed": cfg.seed,
            "jsd_weight": cfg.jsd_weight if views == 3 else None, "loss": "ce+jsd" if views == 3 else "ce",
            "precision": str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else "fp32",
            "steps_per_epoch": run.steps_per_epoch, "total_steps": run.total_steps}


def _checkpoint_to_resume(run: Run) -> dict | None:
    """The checkpoint a resume continues from (None for a new run), checked against this launch."""
    cfg, config = run.cfg, run.config
    if not (cfg.resume and run.ckpt_file.exists()):
        return None
    state = load_checkpoint(run.ckpt_file, map_location=run.dev)
    old = state["config"]
    changed = [k for k in RESUME_KEYS if old.get(k) != config.get(k)]
    if changed:
        raise IpmixError("cannot resume: settings differ from the checkpoint's: "
                         + ", ".join(f"{k} {old.get(k)!r} -> {config.get(k)!r}" for k in changed))
    if len(state["rng"]) != run.world:
        # Each process's stream position and RNG state are in the checkpoint: another count
        # could only continue approximately, with a schedule of another length.
        raise IpmixError(f"cannot resume: the run in {run.folder.shown} was trained by {len(state['rng'])} process(es), "
                         f"this launch has {run.world}; resume it with {len(state['rng'])}")
    finished = _already_finished(state, cfg.epochs, cfg.max_steps, run.folder)
    if finished is not None:
        run.echo(finished["note"])
        run.finished = finished["summary"]
    return state


def _make_model(run: Run) -> None:
    """The model (the same initial weights on every rank), SGD with Nesterov momentum, the cosine
    schedule and the fp16 loss scaler."""
    cfg, config = run.cfg, run.config
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    net = build_model(run.name, run.num_classes, run.size).to(run.dev)
    if run.channels_last:
        net = net.to(memory_format=torch.channels_last)
    momentum, total_steps = config["momentum"], run.total_steps
    run.net = net
    run.optimizer = torch.optim.SGD(net.parameters(), lr=config["lr"], momentum=momentum, nesterov=momentum > 0,
                                    weight_decay=config["weight_decay"])
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, lambda s: cosine_factor(s, total_steps))
    run.scaler = torch.amp.GradScaler(run.dev.type, enabled=run.amp_dtype == torch.float16)
    torch.manual_seed(cfg.seed * 1000 + 1 + run.rank)  # dropout differs per rank


def _restore(run: Run, state: dict) -> None:
    """Weights, optimizer, schedule, counters, this rank's RNG and loader position from the checkpoint."""
    load_weights(run.net, state["model"], run.ckpt_file)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    run.step, run.epoch, run.seen = int(state["step"]), int(state["epoch"]), int(state["seen"])
    rng = state["rng"][run.rank]
    torch.set_rng_state(rng["cpu"].cpu())
    if run.dev.type == "cuda" and rng.get("cuda") is not None:
        torch.cuda.set_rng_state(rng["cuda"].cpu(), run.dev)
    if run.seen:
        run.mid_epoch = True
        with _warnings_to(run.echo):
            run.loader.set_epoch(run.epoch)
            run.loader.load_state_dict(state["loader"][run.rank])
        sums = list(state["epoch_sums"])  # checkpoints before data-wait held three sums
        run.epoch_sums = torch.tensor(sums + [0.0] * (5 - len(sums)), dtype=torch.float64, device=run.dev)
    run.echo(f"resuming {run.folder.shown} at step {run.step}/{run.total_steps} (epoch {run.epoch + 1}, batch {run.seen})")


def _open_logs(run: Run, state: dict | None, threads_note: str) -> None:
    """log.jsonl (cut back to the checkpoint on resume), TensorBoard, config.json, the first line."""
    cfg, config = run.cfg, run.config
    run.log = RunLog(run.out / LOG_NAME, run.main, run.step if state is not None else None)
    run.board = tensorboard_writer_class()(str(run.out / TENSORBOARD_DIR)) if cfg.tensorboard and run.main else None
    if run.main:
        atomic_write_json(run.out / "config.json", config)
    params = count_parameters(run.net)
    run.log.write({"type": "start", "step": run.step, "time": time.time(), "world_size": run.world,
                   "device": str(run.dev), "echo_factor": run.echo_factor, "parameters": params,
                   "threads": torch.get_num_threads()})
    run.echo(f"training {run.name} ({params / 1e6:.2f} M parameters) on {run.world} process(es), {run.dev}, "
             f"{config['precision']}, {threads_note}; {_count(cfg.epochs, 'epoch')} x "
             f"{_count(run.steps_per_epoch, 'step')} of {cfg.batch_size} ({config['loss']})")
    run.t_window = run.t_run = time.time()


def train_epoch(run: Run) -> bool:
    """The batches of one epoch from where the run stands. False when it stopped inside the
    epoch (max_steps reached before the epoch's end, or Ctrl-C)."""
    cfg = run.cfg
    if not run.mid_epoch:
        run.loader.set_epoch(run.epoch)
        run.epoch_sums.zero_()
        run.seen = 0
    run.mid_epoch, run.t_epoch = False, time.time()
    t_step = time.perf_counter()
    for (images, labels), waited in timed_batches(run.loader):
        loss, clean, y = _step(run, images, labels)
        now_step = time.perf_counter()
        run.step, run.seen, run.steps_run = run.step + 1, run.seen + 1, run.steps_run + 1
        batch = torch.stack([loss.detach().double() * len(y), (clean.argmax(1) == y).sum().double(),
                             torch.tensor(float(len(y)), dtype=torch.float64, device=run.dev)])
        timing = torch.tensor([waited, now_step - t_step], dtype=torch.float64, device=run.dev)
        t_step = now_step
        for sums in (run.window, run.epoch_sums):
            sums[:3] += batch
            sums[3:] += timing
        if _line_due(run.step, cfg.log_every, run.stop_step, run.seen == run.steps_per_epoch,
                     time.time() - run.t_window, run.dev):
            _progress_line(run)
        if run.step == run.stop_step or run.stop.set:
            return run.seen == run.steps_per_epoch
        if cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0 and run.seen < run.steps_per_epoch:
            run.checkpoint()
    return True


def _step(run: Run, images, labels):
    """One optimisation step: forward, loss (CE, or CE on the clean view + JSD), backward, SGD,
    schedule. Returns the loss, the logits the accuracy is read from, and the labels."""
    y = labels.to(run.dev, non_blocking=True)
    x = to_model_input(images, run.dev, run.mean, run.std, run.channels_last)
    with torch.autocast(run.dev.type, dtype=run.amp_dtype or torch.float32, enabled=run.amp_dtype is not None):
        logits = run.ddp(x)
    if run.views == 3:
        loss, clean = jsd_loss(logits, y, run.cfg.jsd_weight)
    else:
        clean = logits.float()
        loss = F.cross_entropy(clean, y)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    run.sync()
    return loss, clean, y


def _progress_line(run: Run) -> None:
    loss_sum, correct, n, wait_s, step_s = sum_across_ranks(run.window.clone())
    now = time.time()
    rate = run.steps_run / max(now - run.t_run, 1e-9)
    end_step = run.stop_step or run.total_steps
    record = {"type": "step", "step": run.step, "total_steps": run.total_steps, "epoch": run.epoch,
              "lr": run.scheduler.get_last_lr()[0], "loss": loss_sum / n, "acc": correct / n,
              "samples_per_s": n / max(now - run.t_window, 1e-9), "data_wait": wait_s / max(step_s, 1e-12),
              "eta_s": (end_step - run.step) / rate}
    run.show(record)
    run.echo(format_step_line(record, run.cfg.epochs))
    run.window.zero_()
    run.t_window = now


def end_epoch(run: Run) -> None:
    """The epoch's record (and the held-out score), the curves, a checkpoint."""
    loss_sum, correct, n, wait_s, step_s = sum_across_ranks(run.epoch_sums.clone())
    record = {"type": "epoch", "epoch": run.epoch, "step": run.step, "train_loss": loss_sum / n,
              "train_acc": correct / n, "data_wait": wait_s / max(step_s, 1e-12), "time_s": time.time() - run.t_epoch}
    if run.held_out:
        record.update(run.held_out.score(run.net, run.dev, run.mean, run.std, run.amp_dtype, run.channels_last))
    run.show(record)
    if run.main:
        write_curves_png(run.out / CURVES_NAME, run.log.records, f"{run.name} on {run.cfg.shards}")
    run.echo(f"epoch {run.epoch + 1}/{run.cfg.epochs}: loss {record['train_loss']:.4f} acc {record['train_acc']:.4f} "
             f"data-wait {100 * record['data_wait']:.1f}%"
             + (f" test error {record['test_error']:.4f}" if "test_error" in record else ""))
    run.epoch, run.seen = run.epoch + 1, 0
    run.checkpoint()


def summarize(run: Run) -> dict:
    """The run summary (summary.json), the last log record and the final curves."""
    cfg, out = run.cfg, run.out
    elapsed = time.time() - run.t_run
    steps_per_rank = gather(run.steps_run, run.world)
    epochs_logged = [r for r in run.log.records if r.get("type") == "epoch"]
    summary = {"run": run.folder.shown, "model": run.name, "parameters": count_parameters(run.net), "epochs": cfg.epochs,
               "epochs_done": run.epoch, "steps": run.step, "total_steps": run.total_steps,
               "complete": run.epoch == cfg.epochs, "samples_seen": run.step * cfg.batch_size,
               "world_size": run.world, "steps_this_launch_per_rank": steps_per_rank, "device": str(run.dev),
               "threads": torch.get_num_threads(), "precision": run.config["precision"], "loss": run.config["loss"],
               "echo_factor": run.echo_factor,
               "train_samples_per_s": run.steps_run * cfg.batch_size / max(elapsed, 1e-9) if run.steps_run else None,
               "time_s": elapsed, "data_wait_per_epoch": [r.get("data_wait") for r in epochs_logged],
               "checkpoint": run.folder.name(CHECKPOINT_NAME), "weights": run.folder.name("model.pt")}
    if epochs_logged:
        summary.update({k: epochs_logged[-1][k] for k in ("train_loss", "train_acc", "test_loss", "test_acc",
                                                          "test_error") if k in epochs_logged[-1]})
    run.log.write({"type": "end", **summary})
    if run.main:
        atomic_write_json(out / SUMMARY_NAME, summary)
        write_curves_png(out / CURVES_NAME, run.log.records, f"{run.name} on {cfg.shards}")
        run.folder.at_end()
    if run.world > 1:
        dist.barrier()  # no rank tears its connections down while another still uses them
    return summary


# ------------------------------------------------------------------ pieces of the loop
def cosine_factor(step: int, total: int, floor: float = 1e-6) -> float:
    """Learning-rate multiplier at `step`: cosine from 1 down to `floor` over `total` steps."""
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(1, total)))


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
            raise OptionError("{precision} fp16 needs a CUDA device; use bf16 or fp32 on CPU")
        return torch.float16
    raise IpmixError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")


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


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _already_finished(state: dict, epochs: int, max_steps: int | None, folder: RunFolder) -> dict | None:
    """{note, summary} when a resumed run has nothing left to do (then no file may change)."""
    out = folder.shown
    step, total = int(state["step"]), int(state["config"]["total_steps"])
    if int(state["epoch"]) >= epochs:
        note = f"the run in {out} is complete ({step}/{total} steps); nothing to do, no file changed"
    elif max_steps and step >= max_steps:
        note = f"the run in {out} is already at step {step} (--max-steps {max_steps}); nothing to do, no file changed"
    else:
        return None
    try:
        summary = json.loads((folder.path / SUMMARY_NAME).read_text())
    except (OSError, ValueError):
        summary = {"run": out, "steps": step, "total_steps": total, "complete": int(state["epoch"]) >= epochs}
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
