"""`ipmix fractals`: render the fractal mixing set, preview it, measure its quality."""

from __future__ import annotations

import json
from pathlib import Path

import click

from fractalgen.limits import MAX_PICTURES, MAX_WORKERS
from ipmix_cli.cli.params import SEED, Count, LocalPath, storage_option
from ipmix_cli.common import storage
from ipmix_cli.common.objstore import parse_storage_options, staged_out
from ipmix_cli.common.errors import IpmixError


@click.group()
def fractals():
    """Render the fractal mixing set (escape-time + IFS + your own pictures), preview it and
    print its quality metrics."""


class _StageProgress:
    """Adapts render_set's (stage, done, total) callbacks to one progress display per stage."""

    def __init__(self, enabled: bool):
        self.enabled, self.stage, self.bar = enabled, None, None

    def __call__(self, stage, done, total):
        from ipmix_cli.common.progress import Progress

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = Progress(total, stage, enabled=self.enabled and stage != "verify")
            self.bar.done = done
        elif self.bar is not None:
            self.bar.update(done - self.bar.done)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@fractals.command("render")
@click.argument("out", type=LocalPath("OUT of 'fractals render'", remote=True, file_okay=False, path_type=Path))
@click.option("--escape", "escape_n", type=Count(0, MAX_PICTURES), default=3000, show_default=True,
              help="Escape-time (Mandelbrot/Julia orbit-trap) pictures.")
@click.option("--ifs", "ifs_n", type=Count(0, MAX_PICTURES), default=3000, show_default=True,
              help="IFS pictures.")
@click.option("--include", type=LocalPath("the --include folder or URL list", remote=True), default=None,
              help="Your own pictures: a folder (or a folder's s3://, gs://, az:// prefix, copied into the cache "
                   "folder first), or a text file of http(s) URLs (fetched once into OUT/.cache).")
@click.option("--size", type=Count(16, 4096), default=256, show_default=True, help="Side in pixels.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--workers", type=Count(1, MAX_WORKERS), default=1, show_default=True, help="Processes.")
@click.option("--overwrite", is_flag=True, help="Start afresh instead of completing what OUT holds.")
@click.option("--fetch-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds to wait on a URL (connect / each read).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object on stdout.")
@click.option("--quiet", is_flag=True, help="No progress display.")
@storage_option
def render(out, escape_n, ifs_n, include, size, seed, workers, overwrite, fetch_timeout, as_json, quiet,
           storage_options):
    """Write escape-time and IFS fractals (and --include pictures) as PNGs + OUT/manifest.json.

    Re-running completes an interrupted render; same seed and options give byte-identical files
    for any --workers. OUT may be a URL (s3://bucket/fractals): the set is made in a local
    folder and uploaded, manifest.json last."""
    import fractalgen
    from fractalgen.render import render_set, render_summary
    from ipmix_cli.common.progress import COMPILING, numba_cache_is_warm

    if not quiet and not numba_cache_is_warm(Path(fractalgen.__file__).parent, ("escape", "ifs")):
        click.echo(COMPILING, err=True)
    if include is not None:
        from ipmix_cli.common.cachedir import default_cache_dir

        include = Path(storage.localize(include, default_cache_dir(), "--include"))
    progress = _StageProgress(not quiet)
    try:
        with staged_out(out, "OUT", parse_storage_options(storage_options)) as folder:
            manifest = render_set(folder, escape=escape_n, ifs=ifs_n, include=include, size=size, seed=seed,
                                  workers=workers, overwrite=overwrite, progress=progress,
                                  fetch_options={"timeout": fetch_timeout})
    finally:
        progress.close()
    if as_json:
        click.echo(json.dumps(render_summary(out, manifest), sort_keys=True))
        return
    counts = manifest["counts"]
    click.echo(f"{out}: {counts['escape']} escape-time, {counts['ifs']} IFS, {counts['user']} own pictures"
               + (f", {len(manifest['skipped'])} skipped (reasons in manifest.json)" if manifest["skipped"] else ""))


@fractals.command("preview")
@click.argument("out", type=LocalPath("the mixing set", file_okay=False, path_type=Path))
@click.option("--out", "sheet", type=LocalPath("the contact sheet", dir_okay=False, path_type=Path), default=None,
              help="Contact sheet PNG (default: OUT-preview.png beside the folder, not inside it).")
@click.option("--count", type=click.IntRange(1, 1024), default=48, show_default=True)
@click.option("--cols", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--thumb", type=click.IntRange(16, 1024), default=128, show_default=True, help="Tile side in px.")
def preview(out, sheet, count, cols, thumb):
    """Write a contact sheet of the set (pictures spread over the families)."""
    from fractalgen.files import atomic_write_bytes
    from fractalgen.summary import preview_sheet
    import io

    image = preview_sheet(out, count=count, cols=cols, thumb=thumb)
    if sheet is None:
        named = out if out.name not in ("", ".", "..") else out.resolve()  # `preview .` has no name
        sheet = named.parent / f"{named.name}-preview.png"
    if not sheet.parent.is_dir():
        raise IpmixError(f"folder {sheet.parent} does not exist")
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    atomic_write_bytes(sheet, buf.getvalue())
    click.echo(str(sheet))


@fractals.command("stats")
@click.argument("out", type=LocalPath("the mixing set", file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.option("--sample", type=click.IntRange(min=2), default=256, show_default=True,
              help="Pictures per family the metrics look at (evenly spread).")
def stats(out, as_json, sample):
    """Quality metrics per family: near-empty fraction, mean/min pairwise distance of 32×32
    thumbnails, pooled hue entropy, edge density, grey-level entropy."""
    from fractalgen.summary import set_stats

    result = set_stats(out, sample=sample)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    cols = ["files", "count", "near_empty_fraction", "mean_pairwise", "min_pairwise", "hue_entropy_bits",
            "edge_density", "grey_entropy_bits"]
    heads = ["files", "measured", "near-empty", "mean-dist", "min-dist", "hue-bits", "edges", "grey-bits"]
    click.echo(f"{'family':<8} " + " ".join(f"{h:>10}" for h in heads))
    for fam, m in result.items():
        cells = []
        for c in cols:
            v = m.get(c)
            cells.append(f"{'-':>10}" if v is None else f"{v:>10d}" if isinstance(v, int) else f"{v:>10.3f}")
        click.echo(f"{fam:<8} " + " ".join(cells))
