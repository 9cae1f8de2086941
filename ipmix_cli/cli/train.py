"""`ipmix train`: options and printing only; the loop is ipmix_cli.train.train (imported when the
command runs, so `ipmix train --help` works without torch)."""

from __future__ import annotations

import json
import os

import click

from ipmix_cli.cli.params import LocalPath, SourceSpec, storage_option
from ipmix_cli.common.objstore import parse_storage_options


@click.command("train")
@click.option("--shards", required=True,
              type=LocalPath("the shards (train --shards)", keep=("pipe", "http", "https"), remote=True),
              help="Shard directory (or its manifest.json, or an http(s):// URL of it), or its object-store URL "
                   "(s3://bucket/prefix, gs://..., az://...), streamed shard by shard.")
@click.option("--model", default="auto", show_default=True,
              help="resnet18, wrn-40-4 (any wrn-D-K), resnet50, small-cnn, torchvision:NAME, timm:NAME; "
                   "auto = wrn-40-4 at 32 px, resnet50 above.")
@click.option("--epochs", required=True, type=int, help="Training epochs (epoch t reads materialized epoch t mod K).")
@click.option("--out", required=True, type=LocalPath("the run folder (train --out)", remote=True),
              help="Run directory: checkpoint, log, curves, summary; or an object-store URL (s3://bucket/runs/x), "
                   "written in a local staging folder and uploaded after each checkpoint and at the end.")
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
@click.option("--test", "test_spec", default=None, type=SourceSpec("the test set"), help="Held-out source scored each epoch, e.g. digits:test.")
@click.option("--log-every", default=50, show_default=True, type=int,
              help="Steps between progress lines (there is also one at least every 10 s).")
@click.option("--checkpoint-every", default=0, show_default=True, type=int,
              help="Also checkpoint every N steps (0: at epoch ends only).")
@click.option("--threads", type=int, default=None,
              help="torch intra-op threads per process [default: usable CPUs / processes on this machine].")
@click.option("--tensorboard", is_flag=True, help="Also write TensorBoard event files into RUN/tensorboard.")
@click.option("--cache-dir", type=LocalPath("the shard cache (train --cache-dir)"), default=None,
              help="Keep shards read from object storage in this folder for later epochs (with --cache-limit).")
@click.option("--cache-limit", default=None, metavar="SIZE",
              help="Most bytes the shard cache may hold, e.g. 20GB or 512MiB; least recently used shards go first.")
@storage_option(what="an object-store --shards or --out")
@click.option("--json", "as_json", is_flag=True,
              help="Print the final summary (summary.json's fields) as one JSON object instead of the table.")
def train_command(shards, model, epochs, out, resume, batch_size, lr, weight_decay, momentum, seed, workers,
                  jsd_weight, max_steps, device, precision, test_spec, log_every, checkpoint_every, threads,
                  tensorboard, cache_dir, cache_limit, storage_options, as_json):
    """Train a classifier on pre-built shards (one process, or several under torchrun)."""
    from ipmix_cli.train.loop import StoppedWithCheckpoint, train

    try:
        summary = train(shards, model, epochs, out, resume=resume, batch_size=batch_size, lr=lr,
                        weight_decay=weight_decay, momentum=momentum, seed=seed, num_workers=workers,
                        jsd_weight=jsd_weight, max_steps=max_steps, device=device, precision=precision,
                        test=test_spec, log_every=log_every, checkpoint_every=checkpoint_every,
                        threads=threads, tensorboard=tensorboard, cache_dir=cache_dir, cache_limit=cache_limit,
                        storage_options=parse_storage_options(storage_options),
                        echo=lambda line: click.echo(line, err=True))
    except StoppedWithCheckpoint:
        # train() said to resume with --resume; the CLI's generic "run the same command again"
        # would be wrong here (the same command without --resume refuses the run directory).
        raise click.exceptions.Exit(130) from None
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(json.dumps(summary) if as_json else "summary:\n" + format_summary(summary))


def format_summary(summary: dict) -> str:
    keys = ("model", "parameters", "steps", "total_steps", "complete", "train_loss", "train_acc", "test_error",
            "echo_factor", "train_samples_per_s", "time_s", "weights", "run")
    return "\n".join(f"  {k:<20} {summary[k]:.4g}" if isinstance(summary[k], float) else f"  {k:<20} {summary[k]}"
                     for k in keys if summary.get(k) is not None)
