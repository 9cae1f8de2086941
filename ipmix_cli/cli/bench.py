"""`ipmix bench ...`: options and printing; the measurements live in ipmix_cli.bench."""

from __future__ import annotations

import json
import time

import click

from ipmix_cli.bench import augment as augment_bench
from ipmix_cli.bench import build as build_bench
from ipmix_cli.bench import corrupt as corrupt_bench
from ipmix_cli.bench import fractals as fractals_bench
from ipmix_cli.bench import stream as stream_bench
from ipmix_cli.bench.common import machine


@click.group()
def bench():
    """Measure each stage's throughput on this machine (medians of several runs)."""


def report(figures: dict, as_json: bool) -> None:
    """Print figures as one JSON object (--json) or as aligned `name: value` lines."""
    figures = {**figures, "machine": machine()}
    if as_json:
        click.echo(json.dumps(figures, sort_keys=True))
        return
    width = max(len(k) for k in figures)
    for k, v in figures.items():
        if isinstance(v, float):
            v = f"{v:,.3f}" if abs(v) < 100 else f"{v:,.1f}"
        click.echo(f"{k:<{width}}  {v}")


@bench.command("fractals")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--n-ifs", type=click.IntRange(min=1), default=200, show_default=True, help="IFS pictures per run.")
@click.option("--n-escape", type=click.IntRange(min=1), default=60, show_default=True,
              help="Escape-time pictures per run.")
@click.option("--n-write", type=click.IntRange(min=0), default=3000, show_default=True,
              help="Escape-time and IFS pictures (each) for the write test on 2 workers; 0 skips it.")
def bench_fractals(as_json, repeats, n_ifs, n_escape, n_write):
    """Throughput of the fractal renderers (one core, 256², median of runs) and of writing a set."""
    report(fractals_bench.measure(repeats, n_ifs, n_escape, n_write), as_json)


@bench.command("augment")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(1, 50),
              help="Timed runs per figure (the median is reported).")
@click.option("--fractals", type=click.Path(file_okay=False), default=None,
              help="Mixing folder to use (default: generated patterns).")
@click.option("--quick", is_flag=True, help="A quarter of the images per call, repeats of 0.1 s (a rough figure).")
def bench_augment(as_json, repeats, fractals, quick):
    """Augmentation throughput on one core: IPMix one view and JSD triple at 32x32, one view at
    224x224, and one AugMix and PixMix view at both sizes, each against ipmix's per-image
    reference (reference.py) of the same recipe."""
    report(augment_bench.run_bench(repeats=repeats, fractals=fractals, quick=quick), as_json)


@bench.command("build")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
@click.option("--samples", type=click.IntRange(100, None), default=50_000, show_default=True,
              help="Samples of a 32 px epoch.")
@click.option("--epochs", type=click.IntRange(1, None), default=2, show_default=True,
              help="Epochs of each 32 px build.")
@click.option("--repeats", type=click.IntRange(1, None), default=3, show_default=True,
              help="Rounds (the median is reported), after one warm-up run.")
@click.option("--photos-per-class", type=click.IntRange(2, None), default=150, show_default=True)
@click.option("--formats/--no-formats", default=True, show_default=True, help="Also measure the format table.")
@click.option("--quick", is_flag=True, help="Small sizes for a smoke run (figures not comparable).")
@click.option("--only", "only", multiple=True, type=click.Choice(build_bench.PARTS),
              help="Measure only these parts (repeatable) [default: all].")
def bench_build(as_json, samples, epochs, repeats, photos_per_class, formats, quick, only):
    """Whole-build throughput of `ipmix shards build` run as a process: 32 px builds on one core
    beside the engine's rate and a plain-Python write+fsync floor measured in the same rounds
    (ratios and a per-stage breakdown), 1 -> 2 workers beside the disk's own rate, 224 px on one
    core against the per-image pipeline, peak RSS per worker, and (s3) a JSD build on 2 workers
    written to an S3 server on this machine (moto) against the same build to local disk."""
    if quick:
        samples, repeats, photos_per_class = min(samples, 2000), 1, min(photos_per_class, 8)
    figures = build_bench.run_bench(samples=samples, repeats=repeats, photos_per_class=photos_per_class, quick=quick,
                        formats=formats, log=None if as_json else (lambda m: click.echo(m, err=True)),
                        parts=tuple(only) or build_bench.PARTS, epochs=epochs)
    tables = {k: figures.pop(k) for k in ("formats_32", "formats_224") if k in figures}
    if as_json:
        report({**figures, **tables}, as_json=True)
        return
    report(figures, as_json=False)
    for name, rows in tables.items():
        click.echo(f"\n{name}: format quality  bytes  encode_us  decode_us  psnr_db")
        for r in rows:
            click.echo(f"  {r['format']:5s} {str(r['quality'] or '-'):>4s} {r['bytes']:8.0f} {r['encode_us']:9.1f} "
                       f"{r['decode_us']:9.1f} {r['psnr_db']:8.2f}")


@bench.command("stream")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(1, 50), help="Timed runs per figure (median).")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1, 4096))
@click.option("--quick", is_flag=True, help="Tiny data sets (a smoke test; figures are noisy).")
@click.option("--only", "only", multiple=True, type=click.Choice(stream_bench.PARTS),
              help="Measure only these parts (repeatable) [default: all]: disk (shards on local disk), "
                   "s3 (224 px shards from a local S3 server beside the same on disk), online.")
def bench_stream(as_json, repeats, batch_size, quick, only):
    """Samples/s streamed from shards vs online IPMix per sample, one core; and 224 px shards
    streamed from an S3 server on this machine (moto) against local disk."""
    t0 = time.perf_counter()
    log = (lambda msg: None) if as_json else (lambda msg: click.echo(f"... {msg}", err=True))
    figures = stream_bench.measure_stream(repeats=repeats, quick=quick, batch_size=batch_size, log=log,
                                          parts=tuple(only) or stream_bench.PARTS)
    figures["bench_seconds"] = round(time.perf_counter() - t0, 1)
    report(figures, as_json)


@bench.command("corrupt")
@click.option("--size", "side", type=click.IntRange(32, 1024), default=224, show_default=True,
              help="Image side (the package refuses images under 32 px).")
@click.option("--images", "n_images", type=click.IntRange(1, 1000), default=4, show_default=True)
@click.option("--repeats", type=click.IntRange(1, 50), default=3, show_default=True)
@click.option("--corruptions", default=None, help="Comma-separated subset (default: all 19).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def bench_corrupt(side, n_images, repeats, corruptions, as_json):
    """Each corruption, ipmix vs the imagecorruptions package: ms per image (median of
    --repeats runs over --images images x 5 severities, one core) and the ratio."""
    figures = corrupt_bench.measure(side, n_images, repeats, corruptions)
    if as_json:
        report(figures, True)
        return
    click.echo(f"{figures['image_side']} px, ImageNet-C severities, {n_images} images x 5 severities, "
               f"median of {repeats}, one core; baseline: {figures['baseline']}")
    click.echo(f"{'corruption':<20}{'ipmix ms':>10}{'reference ms':>14}{'ratio':>8}")
    for row in figures["corruptions"]:
        click.echo(f"{row['corruption']:<20}{row['ipmix_ms_per_image']:>10.2f}"
                   f"{row['reference_ms_per_image']:>14.2f}{row['ratio']:>7.2f}x")
