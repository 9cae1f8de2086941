"""`ipmix eval` (score a checkpoint) and `ipmix corrupt` (make a CIFAR-10-C-style test folder)."""

from __future__ import annotations

import json

import click

from ipmix_cli.cli.params import LocalPath, SourceSpec, storage_option
from ipmix_cli.common.objstore import parse_storage_options, staged_out
from ipmix_cli.common.storage import FOLDER_SOURCE_KINDS
from ipmix_cli.eval.corruptions import BENCHMARK, EXTRA, make_corrupted_set
from ipmix_cli.common.progress import Progress


@click.command("eval")
@click.option("--checkpoint", required=True, type=LocalPath("the checkpoint", remote=True),
              help="Run directory of `ipmix train`, or its checkpoint.pt (local, or an s3://, gs://, az:// URL).")
@click.option("--test", "test_spec", required=True,
              type=SourceSpec("the test set", remote_folders=True, remote_kinds=FOLDER_SOURCE_KINDS),
              help="Test source spec, e.g. digits:test or cifar10-test:PATH (PATH may be a folder URL).")
@click.option("--corrupted", type=LocalPath("the corrupted set", remote=True), default=None,
              help="A corrupted test set: CIFAR-10-C/100-C or `ipmix corrupt` (<corruption>.npy, severities "
                   "1-5 stacked, + labels.npy) or ImageNet-C (<corruption>/<severity>/<class>/*.JPEG).")
@click.option("--pgd", is_flag=True, help="Also report PGD-20 error (L-inf, eps 2/255, step 0.5/255, random start).")
@click.option("--pgd-limit", type=click.IntRange(min=1), default=None, help="Attack only the first N test samples.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Score only the first N clean test samples.")
@click.option("--out", type=LocalPath("the results file", remote=True), default=None,
              help="Write the results as JSON here (a file, or an object-store URL such as s3://bucket/evals/r.json).")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of PGD's random start.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object instead of a table.")
def eval_command(checkpoint, test_spec, corrupted, pgd, pgd_limit, limit, out, batch_size, device, seed, as_json):
    """Clean error, corruption error and RMS calibration error of a trained checkpoint."""
    from ipmix_cli.eval.evaluate import evaluate, format_report

    result = evaluate(checkpoint, test_spec, corrupted=corrupted, pgd=pgd, out=out, batch_size=batch_size,
                      device=device, limit=limit, pgd_limit=pgd_limit, seed=seed,
                      progress=None if as_json else (lambda name: click.echo(f"  scored {name}", err=True)))
    click.echo(json.dumps(result) if as_json else format_report(result))
    if out and not as_json:
        click.echo(f"results written to {out}")


@click.command("corrupt")
@click.option("--source", required=True, type=SourceSpec("the source of 'corrupt'"), help="Test source spec, e.g. digits:test, cifar10-test:PATH, folder:PATH.")
@click.option("--out", required=True, type=LocalPath("OUT of 'corrupt'", remote=True),
              help="Folder (or object-store URL) to write <corruption>.npy and labels.npy into.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--corruptions", default=None,
              help="Comma-separated subset (default: all 19): the 15 of the benchmark (" + ", ".join(BENCHMARK)
                   + "; or 'benchmark') and the extras (" + ", ".join(EXTRA) + "; or 'extra').")
@click.option("--profile", type=click.Choice(["cifar", "imagenet"]), default=None,
              help="Severity table: CIFAR-10-C's (made for 32 px) or ImageNet-C's (224 px) "
                   "[default: cifar up to 64 px, imagenet above].")
@click.option("--image-size", type=click.IntRange(min=8), default=None,
              help="Side of the output images (default: the source's, if square).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use only the first N samples.")
@click.option("--overwrite", is_flag=True, help="Replace a different corrupted set in --out.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the set's manifest (plus its folder as `out`) as one JSON object instead of the summary line.")
@storage_option
def corrupt_command(source, out, seed, corruptions, profile, image_size, limit, overwrite, as_json, storage_options):
    """Make a corrupted copy of any test set in CIFAR-10-C's layout: Hendrycks & Dietterich's
    corruptions (15 of the benchmark + 4 extras) x 5 severities. --out may be a URL: the set is
    made in a local folder and uploaded, manifest.json last."""
    with staged_out(out, "--out", parse_storage_options(storage_options)) as folder:
        manifest = make_corrupted_set(source, folder, seed=seed, corruptions=corruptions, image_size=image_size,
                                      limit=limit, overwrite=overwrite, progress=Progress, profile=profile)
    if as_json:
        click.echo(json.dumps({"out": str(out), **manifest}))
    else:
            click.echo(f"wrote {len(manifest['corruptions'])} corruptions x 5 severities of {manifest['samples']} "
                   f"images ({manifest['image_size']} px, {manifest['profile']} severities) to {out}")
    for name, counts in manifest.get("unchanged", {}).items():
        if any(counts):
            click.echo(f"warning: {name} left {'/'.join(map(str, counts))} of {manifest['samples']} images "
                       "unchanged (severities 1-5)", err=True)
