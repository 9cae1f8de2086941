"""`ipmix shards verify | inspect | preview` (registered on the `shards` group)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ipmix_cli.cli.params import LocalPath, storage_option
from ipmix_cli.common.objstore import parse_storage_options


@click.command("verify")
@click.argument("out", type=LocalPath("the shard folder", path_type=Path, remote=True))
@click.option("--deep", is_flag=True, help="Also decode every image and check its size and label.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@storage_option
def verify_cmd(out, deep, as_json, quiet, storage_options):
    """Check every shard of OUT against its manifest: sizes, sha256, tar structure, keys,
    sample layout, labels and counts. Exit 1 naming the first bad shard."""
    from ipmix_cli.shards.verify import VerifyError, verify

    try:
        report = verify(out, deep=deep, progress=not quiet and not as_json,
                        storage_options=parse_storage_options(storage_options))
    except VerifyError as exc:
        if as_json:
            click.echo(json.dumps(exc.report, indent=1))
        else:
            for p in exc.report["problems"]:
                click.echo(f"BAD  {p['shard']}: {p['problem']}", err=True)
        raise
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    for warning in report["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    depth = "deep" if deep else "structure, sizes and hashes"
    click.echo(
        f"OK  {report['out']}: {report['epochs']} epoch(s), {report['shards']} shards, "
        f"{report['samples']} samples ({report['pads']} pads), {report['bytes']} bytes; checked {depth}"
    )


@click.command("inspect")
@click.argument("out", type=LocalPath("the shard folder", path_type=Path, remote=True))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--epoch", type=int, default=0, show_default=True,
              help="Epoch whose labels and pad flags are counted.")
@click.option("--no-scan", is_flag=True, help="Do not read any shard; sizes and counts from the manifest only.")
@storage_option
def inspect_cmd(out, as_json, epoch, no_scan, storage_options):
    """Summarise the shard set OUT: configuration, epochs, shards, samples, bytes, pads and
    the class histogram."""
    from ipmix_cli.shards.inspect import inspect, render_inspect

    summary = inspect(out, scan_epoch=None if no_scan else epoch, storage_options=parse_storage_options(storage_options))
    click.echo(json.dumps(summary, indent=1) if as_json else render_inspect(summary))


@click.command("preview")
@click.argument("out", type=LocalPath("the shard folder", path_type=Path, remote=True))
@click.option("--out", "dest", type=LocalPath("the preview PNG", path_type=Path), default=None,
              help="PNG to write [default: OUT-preview-epoch-EEEE.png beside the folder, not inside it].")
@click.option("--epoch", type=int, default=0, show_default=True)
@click.option("--n", type=int, default=32, show_default=True, help="Number of samples.")
@storage_option
def preview_cmd(out, dest, epoch, n, storage_options):
    """Write a contact sheet of the first N samples of an epoch, labelled with class names
    (three views: clean | aug1 | aug2 side by side; * marks a padding draw)."""
    from ipmix_cli.shards.preview import preview

    result = preview(out, dest, epoch=epoch, n=n, storage_options=parse_storage_options(storage_options))
    click.echo(f"wrote {result['path']}: {result['samples']} samples of epoch {epoch} "
               f"({result['width']}x{result['height']} px)")
