"""`ipmix augment`: look at the augmentation before paying for shards."""

from __future__ import annotations

import io

import click

from ipmix_cli.augment.presets import CROPS, PRESETS, RECIPES
from ipmix_cli.cli.params import LocalPath


@click.group("augment")
def augment():
    """Inspect the IPMix augmentation (and the AugMix/PixMix baselines)."""


@augment.command("preview")
@click.argument("image_or_folder", type=LocalPath("the picture or folder"))
@click.option("--fractals", "fractals", required=True, type=LocalPath("the mixing set", remote=True),
              help="Mixing folder (a fractal set or any folder of pictures; sub-folders are read too).")
@click.option("--cache-dir", type=LocalPath("the cache folder"), default=None,
              help="Where the mixing bank's cache file goes [default: an ipmix folder in the user's cache folder].")
@click.option("--out", "out", required=True, type=LocalPath("the preview PNG", dir_okay=False), help="PNG file to write.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="cifar", show_default=True)
@click.option("--recipe", type=click.Choice(list(RECIPES)), default="ipmix", show_default=True)
@click.option("--n", "n", type=click.IntRange(1, 32), default=6, show_default=True, help="Augmented views per row.")
@click.option("--rows", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Pictures taken from a folder.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--zoom", type=click.IntRange(1, 16), default=None, help="Pixel zoom (default: tiles of about 128 px).")
@click.option("--severity", type=float, default=None, help="Op severity in (0, 10].")
@click.option("--beta", type=float, default=None, help="Add/multiply coefficient β > 0.")
@click.option("--width", type=int, default=None, help="Chains per view (k).")
@click.option("--depth", type=int, default=None, help="Most ops per chain (t).")
@click.option("--all-ops", is_flag=True, default=None, help="Add autocontrast, colour, contrast, brightness, sharpness.")
@click.option("--overflow", type=click.Choice(["clip", "wrap"]), default=None,
              help="P-op results: clip (default) or the reference's uint8 wrap-around.")
@click.option("--min-ops", type=click.Choice(["0", "1"]), default=None,
              help="Ops per chain from 0 (the authors' code) or 1 (the paper) up to the depth.")
@click.option("--partner", type=click.Choice(["fractal", "mixed"]), default=None,
              help="P-chain partner: the mixing picture, or it or op(x) half of the time.")
@click.option("--patch-sizes", default=None, help="Comma-separated patch sizes, e.g. 4,8,16,32.")
@click.option("--crop", type=click.Choice(list(CROPS)), default=None,
              help="Train-time crop [default: the preset's, pad (cifar) or random-resized (imagenet)].")
@click.option("--flip", type=click.Choice(["0", "1"]), default=None,
              help="Random horizontal flip after the crop: 1 (default) or 0.")
def preview(image_or_folder, fractals, cache_dir, out, preset, recipe, n, rows, seed, zoom, severity, beta, width, depth,
            all_ops, overflow, min_ops, partner, patch_sizes, crop, flip):
    """Write a PNG grid, one row per picture: its training crop | mixing picture | N augmented views."""
    from pathlib import Path

    from fractalgen.files import atomic_write_bytes
    from ipmix_cli.common import storage
    from ipmix_cli.augment import MixingBank, resolve_config
    from ipmix_cli.common.cachedir import default_cache_dir
    from ipmix_cli.augment.preview import input_files, preview_grid
    from ipmix_cli.common.errors import IpmixError

    if not Path(out).parent.is_dir():
        raise IpmixError(f"cannot write {out}: {Path(out).parent} is not an existing folder")
    cfg = resolve_config(preset, recipe, views=1, severity=severity, beta=beta, width=width, depth=depth,
                         all_ops=all_ops, overflow=overflow, min_ops=min_ops, partner=partner,
                         patch_sizes=patch_sizes, crop=crop, flip=flip)
    inputs = input_files(image_or_folder, rows)
    local_fractals = storage.localize(fractals, Path(cache_dir) if cache_dir else default_cache_dir(), "--fractals")
    bank = MixingBank.from_folder(local_fractals, cfg, cache_dir=cache_dir)
    click.echo(bank.describe())
    sheet = preview_grid(inputs, bank, cfg, n=n, seed=seed, zoom=zoom)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    atomic_write_bytes(out, buf.getvalue())
    click.echo(f"wrote {out}: {len(inputs)} row(s) x {n} {recipe} view(s), {sheet.size[0]}x{sheet.size[1]} px")
