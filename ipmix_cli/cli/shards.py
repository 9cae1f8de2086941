"""`ipmix shards build | combine` (+ verify, inspect, preview from shards_tools)."""

from __future__ import annotations

from pathlib import Path

import click

from ipmix_cli.cli.params import SEED, Count, ImageFormat, LocalPath, SourceSpec, storage_option
from ipmix_cli.common import storage
from ipmix_cli.common.progress import hms
from ipmix_cli.shards import limits


def _log(msg: str) -> None:
    click.echo(msg, err=True)


@click.group()
def shards():
    """Materialize augmented epochs as WebDataset shards, and check them."""


@shards.command("build")
@click.option("--source", type=SourceSpec("the source of 'shards build'", remote_folders=True, remote_kinds=storage.BUILD_SOURCE_KINDS), help="digits | digits:test | cifar10:PATH | cifar100:PATH | folder:PATH | PATH | wds:URLS")
@click.option("--fractals", type=LocalPath("the mixing set", remote=True, path_type=Path),
              help="The mixing set: a folder of pictures (class sub-folders are read too).")
@click.option("--cache-dir", type=LocalPath("the cache folder", path_type=Path), default=None,
              help="Where the mixing bank's cache file goes [default: an ipmix folder in the user's cache folder].")
@click.option("--out", required=True, type=LocalPath("OUT of 'shards build'", remote=True, path_type=Path),
              help="Output folder, or a URL of an object store (s3://bucket/prefix, gs://..., az://...).")
@click.option("--epochs", type=Count(1, limits.MAX_EPOCHS), help="Epochs to materialize [default: 1].")
@click.option("--preset", type=click.Choice(["cifar", "imagenet"]), help="Training size and crop [default: cifar].")
@click.option("--recipe", type=click.Choice(["ipmix", "augmix", "pixmix", "none"]), help="[default: ipmix]")
@click.option("--views", type=click.Choice(["1", "3"]),
              help="1, or 3 for the JSD triple (clean, aug1, aug2) [default: 1].")
@click.option("--seed", type=SEED, help="[default: 0]")
@click.option("--workers", type=Count(1, limits.MAX_WORKERS), default=1, show_default=True,
              help="Processes on this machine.")
@click.option("--format", "fmt", type=ImageFormat(),
              help="Image encoding (jpeg is jpg) [default: npy up to 64 px, jpg q95 above].")
@click.option("--quality", type=Count(1, 100), help="Quality of jpg/webp [default: 95].")
@click.option("--shards", type=Count(1, limits.MAX_SHARDS), help="Shards per epoch [default: chosen from the size].")
@click.option("--dry-run", is_flag=True, help="Print the plan, bytes on disk and time estimate; write nothing.")
@click.option("--overwrite", is_flag=True, help="Delete the build in OUT and start afresh.")
@click.option("--extend-epochs", type=Count(1, limits.MAX_EPOCHS), help="Add this many epochs to the build in OUT.")
@click.option("--skip-bad/--no-skip-bad", default=None, help="Skip unreadable source images (listed in the manifest).")
@click.option("--num-nodes", type=Count(1, limits.MAX_NODES),
              help="Machines sharing the build [default: SLURM_ARRAY_TASK_COUNT, else 1].")
@click.option("--node-rank", type=Count(0, limits.MAX_NODES - 1),
              help="This machine's part, 0..N-1 (required with --num-nodes N > 1) "
                   "[default: SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN].")
@click.option("--backend", type=click.Choice(["joblib", "dask"]), default="joblib", show_default=True)
@click.option("--scheduler", help="Dask scheduler address (with --backend dask), e.g. tcp://host:8786.")
@click.option("--dali-index/--no-dali-index", default=None, help="Also write DALI .idx files.")
@click.option("--aug", "aug_options", multiple=True, metavar="KEY=VALUE",
              help="An augmentation option, repeatable: width, depth, min_ops, severity, beta, ops, all_ops, "
                   "patch_sizes, partner, overflow, mixing_size, crop (pad, random-resized, center, none), "
                   "flip (0 or 1) (e.g. --aug min_ops=1 --aug flip=0).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the result (or with --dry-run the plan) as one JSON object on stdout.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@storage_option
def build_cmd(source, fractals, cache_dir, out, epochs, preset, recipe, views, seed, workers, fmt, quality, shards, dry_run,
              overwrite, extend_epochs, skip_bad, num_nodes, node_rank, backend, scheduler, dali_index, aug_options,
              as_json, quiet, storage_options):
    """Materialize K augmented epochs of SOURCE as WebDataset shards in OUT.

    Re-running the same command resumes (finished shards are checked and kept). Options
    left out are taken from OUT's manifest when OUT already holds a build. On a SLURM array
    job, --num-nodes and --node-rank default to the array's size and this task's place in it.
    """
    import os

    from ipmix_cli.common.heap import keep_freed_memory
    from ipmix_cli.common.objstore import parse_storage_options
    from ipmix_cli.shards.build import build_result, build_shards
    from ipmix_cli.shards.nodes import node_part

    keep_freed_memory()  # this process is the build's own (a library caller's process is left as it is)
    if node_rank is None and (num_nodes or 1) > 1 and "SLURM_ARRAY_TASK_ID" not in os.environ:
        raise click.UsageError("--num-nodes > 1 needs --node-rank (this machine's part, 0..N-1)")
    num_nodes, node_rank, from_slurm = node_part(num_nodes, node_rank)
    if from_slurm:
        _log(f"SLURM array job: {from_slurm}")
    log = (lambda m: None) if quiet else _log
    result = build_shards(source=source, fractals=fractals, out=out, epochs=epochs, preset=preset, recipe=recipe,
                          views=None if views is None else int(views), seed=seed, workers=workers, format=fmt, quality=quality, shards=shards,
                          dry_run=dry_run, overwrite=overwrite, extend_epochs=extend_epochs, skip_bad=skip_bad,
                          num_nodes=num_nodes, node_rank=node_rank, backend=backend, scheduler=scheduler,
                          dali_index=dali_index, augment=parse_aug_options(aug_options) if aug_options else None,
                          progress=not quiet, log=log, cache_dir=cache_dir,
                          storage_options=parse_storage_options(storage_options))
    if as_json:
        import json

        click.echo(json.dumps(result if dry_run else build_result(result, out), sort_keys=True))
    elif dry_run:
        click.echo(render_plan(result))
    elif result.get("complete"):
        click.echo(f"{out}: {result['num_epochs']} epoch(s) x {result['shards_per_epoch']} shards x "
                   f"{result['samples_per_shard']} samples, {result['totals']['bytes'] / 1e6:.1f} MB"
                   + (f", {len(result['bad_samples'])} bad source image(s) skipped" if result["bad_samples"] else ""))


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def parse_aug_options(pairs) -> dict:
    """`KEY=VALUE` strings → overrides for `resolve_config` (which checks names and values)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--aug")
        if key == "all_ops":
            if value.lower() not in _TRUE | _FALSE:
                raise click.BadParameter(f"all_ops takes true or false, not {value!r}", param_hint="--aug")
            value = value.lower() in _TRUE
        options[key] = value
    return options


def render_plan(p: dict) -> str:
    q = f" q{p['quality']}" if p["quality"] else ""
    lines = [
        "dry run: nothing written",
        f"source samples     {p['source_samples']}",
        f"epochs             {p['epochs']}",
        f"shards per epoch   {p['shards_per_epoch']} x {p['samples_per_shard']} samples "
        f"= {p['samples_per_epoch']} ({p['pads_per_epoch']} padding draws)",
        f"sample fields      {', '.join(p['fields'])} ({p['image_size']} px, {p['format']}{q}) + cls + json",
        f"bytes per sample   {p['bytes_per_sample']:,.0f} (measured on {p['pilot_samples']} pilot samples)",
        f"bytes per epoch    {p['bytes_per_epoch'] / 1e6:,.1f} MB",
        f"bytes on disk      {p['bytes_total'] / 1e6:,.1f} MB",
        f"time estimate      {hms(p['estimated_seconds'])} (h:mm:ss) for {p['tasks_this_node']} shard(s) to build on "
        f"{p['parallel_workers']} worker(s) at once: {hms(p['startup_seconds'])} to load (on a first run, compile) the kernels, then "
        f"{p['pilot_seconds'] / max(1, p['pilot_samples']) * 1e3:.2f} ms per sample on one core",
    ]
    return "\n".join(lines)


@shards.command("combine")
@click.argument("out", type=LocalPath("the shard folder", remote=True, path_type=Path))
@click.option("--cache-dir", type=LocalPath("the cache folder", path_type=Path), default=None,
              help="Where a URL OUT's records are staged [default: the temporary folder].")
@storage_option
def combine_cmd(out, cache_dir, storage_options):
    """Merge the parts of a multi-node build (--num-nodes/--node-rank) into OUT/manifest.json.

    Runs automatically when the last part finishes; run it by hand when parts finished on
    machines that could not see each other's records at the time. OUT may be a URL: the
    parts are merged in the bucket, nothing is copied to a shared disk."""
    from ipmix_cli.common.objstore import parse_storage_options
    from ipmix_cli.shards.build import combine

    m = combine(out, log=_log, cache_dir=cache_dir, storage_options=parse_storage_options(storage_options))
    click.echo(f"{out}: complete, {m['totals']['shards']} shards, {m['totals']['samples']} samples")


try:
    from ipmix_cli.cli import shards_tools
except ImportError:  # the tools are optional for building
    shards_tools = None
if shards_tools is not None:
    for _name in ("verify_cmd", "inspect_cmd", "preview_cmd"):
        if hasattr(shards_tools, _name):
            shards.add_command(getattr(shards_tools, _name))
