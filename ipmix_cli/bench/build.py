"""`ipmix bench build`: wall time of whole shard builds (read → augment → encode → tar →
fsync → manifest), medians of several runs, with the per-image baseline measured in the same run.

Sources are made on the fly in a temporary folder:
- 32 px: the CIFAR-10 *binary* layout filled with scikit-learn's digits (all 1,797, upscaled
  to 32x32 RGB) repeated modulo their count up to --samples (50,000), read through the real
  `cifar10:PATH` source;
- 224 px: a class folder of JPEG crops and flips of the two real photographs scikit-learn ships
  (`load_sample_images`), read through the real folder source (JPEG decode included).
The 32 px parts mix with a folder of smooth synthetic pictures; the 224 px part renders a real
fractal set (64 pictures at 256 px), which the per-image baseline loads per sample from disk as
the reference code's mixing-set dataset does (a second baseline gets them pre-loaded).
"""

from __future__ import annotations

import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from ipmix_cli.bench.common import one_core, report


def write_mixing_folder(folder: Path, n: int = 16, size: int = 256) -> Path:
    from PIL import Image

    from ipmix_cli.bench.augment import smooth_images

    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(smooth_images(n, size, size, seed=11)):
        Image.fromarray(im).save(folder / f"mix-{i:03d}.png")
    return folder


def write_fractal_set(folder: Path, per_family: int = 32) -> Path:
    """A real mixing set: escape-time and IFS fractals at 256 px, as `ipmix fractals render` writes them."""
    from fractalgen.render import render_set

    render_set(folder, escape=per_family, ifs=per_family, size=256, seed=0)
    return folder


def write_digits_cifar(root: Path, samples: int) -> Path:
    """CIFAR-10 binary batches (label byte + 3072 planar bytes) of digits, repeated."""
    from ipmix_cli.shards.sources import DigitsSource

    digits = [DigitsSource("train"), DigitsSource("test")]
    pics = np.concatenate([np.stack([d.read(i) for i in range(len(d))]) for d in digits])
    labels = np.concatenate([d.labels for d in digits]).astype(np.uint8)
    planar = pics.transpose(0, 3, 1, 2).reshape(len(pics), 3072)
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    per = -(-samples // 5)
    for b in range(5):
        idx = np.arange(b * per, min(samples, (b + 1) * per)) % len(pics)
        recs = np.concatenate([labels[idx, None], planar[idx]], axis=1)
        (folder / f"data_batch_{b + 1}.bin").write_bytes(recs.tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(str(i) for i in range(10)) + "\n")
    return root


def write_photo_folder(root: Path, per_class: int, seed: int = 0) -> Path:
    """Random crops (and flips) of the two real sample photographs, as JPEG q92 files."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    for c, photo in enumerate(photos):
        d = root / f"photo{c}"
        d.mkdir(parents=True)
        h, w = photo.shape[:2]
        for i in range(per_class):
            ch, cw = rng.integers(h // 2, h + 1), rng.integers(w // 2, w + 1)
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            crop = photo[y:y + ch, x:x + cw]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            Image.fromarray(np.ascontiguousarray(crop)).save(d / f"{i:04d}.jpg", quality=92)
    return root


def _build(out: Path, **kw) -> tuple[float, dict]:
    """One whole build into a fresh folder (deleted afterwards, outside the timing)."""
    from ipmix_cli.shards import build_shards

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    m = build_shards(out=out, progress=False, **kw)
    dt = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return dt, m


def _median_builds(repeats: int, **kw) -> tuple[float, float, dict]:
    """(median seconds of `repeats` builds after a first one, first-build seconds, manifest).

    The first build pays for starting the worker processes and loading the compiled kernels."""
    cold, m = _build(**kw)
    times = []
    for _ in range(repeats):
        t, m = _build(**kw)
        times.append(t)
    return statistics.median(times), cold, m


# --------------------------------------------------------------------------- 224 px baseline

def _rrc_params(w: int, h: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params (scale 0.08-1, ratio 3/4-4/3): x, y, w, h."""
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = int(round(np.sqrt(target * ratio))), int(round(np.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch
    side = min(w, h)
    return (w - side) // 2, (h - side) // 2, side, side


def _pil_loader(path):
    """torchvision's ImageFolder loader: open, then convert to RGB."""
    from PIL import Image

    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


def _train_transform(img, size: int, rng: np.random.Generator):
    """RandomResizedCrop(size) + RandomHorizontalFlip as torchvision applies them to a PIL image."""
    from PIL import Image

    x, y, cw, ch = _rrc_params(*img.size, rng)
    out = img.crop((x, y, x + cw, y + ch)).resize((size, size), Image.BILINEAR)
    return out.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else out


def _mixing_transform(img, mixing_size: int, size: int, rng: np.random.Generator):
    """The reference's mixing set transform: Resize(shorter side) bilinear, RandomCrop(size)."""
    from PIL import Image

    w, h = img.size
    if w <= h:
        nw, nh = mixing_size, int(mixing_size * h / w)
    else:
        nw, nh = int(mixing_size * w / h), mixing_size
    img = img.resize((nw, nh), Image.BILINEAR)
    x, y = int(rng.integers(0, nw - size + 1)), int(rng.integers(0, nh - size + 1))
    return img.crop((x, y, x + size, y + size))


def reference_pipeline(files, cfg, mixing, seed: int = 0) -> list[bytes]:
    """The per-image pipeline of the reference code, one sample at a time:

    load (ImageFolder's loader) -> RandomResizedCrop + flip (PIL) -> draw a mixing picture ->
    IPMix (the per-image PIL/NumPy reference) -> JPEG encode with the build's settings.

    `mixing` is either a list of mixing-picture files, loaded and transformed per sample as
    the reference's mixing-set dataset does, or a pre-resized bank array (uint8 [N, H, W, 3])
    for the variant that gets its mixing pictures for free.
    """
    from PIL import Image

    from ipmix_cli.augment import rng as arng
    from ipmix_cli.augment.reference import reference_mixing_picture, reference_view

    out = []
    g = np.random.default_rng(seed)
    S = cfg.image_size
    for i, f in enumerate(files):
        x = np.asarray(_train_transform(_pil_loader(f), S, g), dtype=np.uint8)
        if isinstance(mixing, np.ndarray):
            mix = reference_mixing_picture(mixing, S, seed, 0, i)
        else:
            pic = _pil_loader(mixing[int(g.integers(len(mixing)))])
            mix = np.asarray(_mixing_transform(pic, cfg.mixing_size, S, g), dtype=np.uint8)
        st = arng.new_state(seed, 0, i, arng.STREAM_VIEW)
        view = reference_view(x, mix, st, cfg)
        buf = io.BytesIO()
        Image.fromarray(view).save(buf, format="JPEG", quality=95, subsampling=0)
        out.append(buf.getvalue())
    return out


# --------------------------------------------------------------------------- peak memory

_RSS_SCRIPT = """
import json, sys
from ipmix_cli.shards import build_shards
m = build_shards(source=sys.argv[1], fractals=sys.argv[2], out=sys.argv[3], views=3, workers=2,
                 progress=False, overwrite=True)
print(json.dumps(m["build_stats"]["peak_rss_mb_per_worker"]))
"""


def peak_rss_per_worker(source: str, fractals: Path, out: Path) -> float:
    """Largest peak RSS (MB) among the 2 worker processes of a fresh build."""
    res = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, source, str(fractals), str(out)],
                         capture_output=True, text=True, check=True)
    return max(json.loads(res.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------- formats

def format_table(images: np.ndarray, candidates) -> list[dict]:
    from ipmix_cli.shards.formats import measure_formats

    return measure_formats(list(images), candidates, repeats=3)


PARTS = ("epoch32", "scaling", "rss", "photo224", "formats")


def run_bench(samples: int = 50_000, repeats: int = 3, photos_per_class: int = 150, quick: bool = False,
              formats: bool = True, log=None, parts=PARTS) -> dict:
    log = log or (lambda m: None)
    from ipmix_cli.augment import MixingBank, resolve_config

    figures: dict = {"source_32": f"digits (1,797) repeated to {samples} samples, CIFAR-10 binary layout",
                     "source_224": f"{2 * photos_per_class} JPEG crops of the 2 sklearn sample photographs"}
    tmp = Path(tempfile.mkdtemp(prefix="ipmix-bench-build-"))
    try:
        mix = write_mixing_folder(tmp / "mix")
        write_digits_cifar(tmp / "cifar", samples)
        cifar = f"cifar10:{tmp / 'cifar'}"

        if "epoch32" in parts:
            log("32 px JSD triple, 2 workers ...")
            t, cold, m = _median_builds(repeats, source=cifar, fractals=mix, out=tmp / "o32", views=3, workers=2)
            figures.update({"epoch32_triple_2workers_s": t, "epoch32_triple_2workers_cold_s": cold,
                            "epoch32_samples": m["samples_per_epoch"],
                            "epoch32_triple_samples_per_s": m["samples_per_epoch"] / t,
                            "epoch32_triple_bytes": m["totals"]["bytes"], "epoch32_format": m["format"]})
            m1 = _build(source=cifar, fractals=mix, out=tmp / "o32", views=1, workers=2)[1]
            figures["epoch32_single_view_bytes"] = m1["totals"]["bytes"]

        if "scaling" in parts:
            log("scaling 1 -> 2 workers ...")
            n_scale = min(samples, 20_000)
            write_digits_cifar(tmp / "cifar-s", n_scale)
            src_s = f"cifar10:{tmp / 'cifar-s'}"
            t1 = _median_builds(repeats, source=src_s, fractals=mix, out=tmp / "s1", views=3, workers=1)[0]
            t2 = _median_builds(repeats, source=src_s, fractals=mix, out=tmp / "s2", views=3, workers=2)[0]
            figures.update({"scaling_samples": n_scale, "scaling_1worker_s": t1, "scaling_2workers_s": t2,
                            "scaling_efficiency_1_to_2": t1 / (2 * t2)})

        if "rss" in parts:
            log("peak RSS per worker at two dataset sizes ...")
            small = max(1000, samples // 5)
            write_digits_cifar(tmp / "cifar-small", small)
            figures[f"peak_rss_mb_per_worker_{small}"] = peak_rss_per_worker(
                f"cifar10:{tmp / 'cifar-small'}", mix, tmp / "r1")
            figures[f"peak_rss_mb_per_worker_{samples}"] = peak_rss_per_worker(cifar, mix, tmp / "r2")

        if "photo224" in parts:
            log("224 px single view on one core vs the per-image pipeline ...")
            photos = write_photo_folder(tmp / "photos", photos_per_class)
            files = sorted(photos.glob("*/*.jpg"))
            fractals = write_fractal_set(tmp / "fractals")
            cfg = resolve_config(preset="imagenet", recipe="ipmix", views=1)
            bank = MixingBank.from_folder(fractals, cfg)
            mix_files = sorted(fractals.glob("*.png"))
            n_ref = len(files) if not quick else min(len(files), 16)
            build = dict(source=str(photos), fractals=fractals, out=tmp / "o224", preset="imagenet", views=1,
                         workers=1)
            baselines = (("reference", mix_files), ("reference_preloaded", bank.pixels))
            with one_core():
                _, m224 = _build(**build)  # warm-up: starts the worker and loads the kernels
                for _, mixing in baselines:
                    reference_pipeline(files[:2], cfg, mixing)
                # interleaved, so a slow spell of the machine hits all three alike
                rates = {"ours": [], "reference": [], "reference_preloaded": []}
                for _ in range(repeats):
                    dt, m224 = _build(**build)
                    rates["ours"].append(m224["samples_per_epoch"] / dt)
                    for name, mixing in baselines:
                        t0 = time.perf_counter()
                        reference_pipeline(files[:n_ref], cfg, mixing)
                        rates[name].append(n_ref / (time.perf_counter() - t0))
            ours, ref, pre = (statistics.median(rates[k]) for k in ("ours", "reference", "reference_preloaded"))
            figures.update({"photo224_samples": m224["samples_per_epoch"], "photo224_ours_samples_per_s": ours,
                            "photo224_reference_samples_per_s": ref, "photo224_speedup": ours / ref,
                            "photo224_reference_preloaded_samples_per_s": pre,
                            "photo224_speedup_vs_preloaded": ours / pre,
                            "photo224_format": f"{m224['format']} q{m224['quality']}",
                            "photo224_bytes_per_sample": m224["totals"]["bytes"] / m224["samples_per_epoch"]})

        if formats and "formats" in parts:
            log("format table ...")
            from ipmix_cli.augment import Augmenter
            from ipmix_cli.shards.sources import open_source

            src = open_source(cifar)
            cfg32 = resolve_config(preset="cifar", recipe="ipmix", views=1)
            aug32 = Augmenter(cfg32, MixingBank.from_folder(mix, cfg32))
            imgs = np.stack([src.read(i) for i in range(256)])
            v32 = aug32.make_views(imgs, 0, 0, np.arange(256))[:, 0]
            cfg224 = resolve_config(preset="imagenet", recipe="ipmix", views=1)
            aug224 = Augmenter(cfg224, MixingBank.from_folder(mix, cfg224))
            from fractalgen.images import load_rgb

            if not (tmp / "photos").is_dir():
                write_photo_folder(tmp / "photos", photos_per_class)
            files = sorted((tmp / "photos").glob("*/*.jpg"))
            n224 = min(24, len(files))
            v224 = aug224.make_views([load_rgb(f) for f in files[:n224]], 0, 0, np.arange(n224))[:, 0]
            figures["formats_32"] = format_table(v32, [("npy", None), ("png", None), ("webp", 95), ("jpg", 95)])
            figures["formats_224"] = format_table(v224, [("jpg", 95), ("jpg", 90), ("webp", 95), ("webp", 90),
                                                        ("png", None), ("npy", None)])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return figures


@click.command("build")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
@click.option("--samples", type=click.IntRange(100, None), default=50_000, show_default=True,
              help="Samples of the 32 px epoch.")
@click.option("--repeats", type=click.IntRange(1, None), default=3, show_default=True,
              help="Timed runs per figure (the median is reported), after one warm-up run.")
@click.option("--photos-per-class", type=click.IntRange(2, None), default=150, show_default=True)
@click.option("--formats/--no-formats", default=True, show_default=True, help="Also measure the format table.")
@click.option("--quick", is_flag=True, help="Small sizes for a smoke run (figures not comparable).")
@click.option("--only", "only", multiple=True, type=click.Choice(PARTS),
              help="Measure only these parts (repeatable) [default: all].")
def bench_build(as_json, samples, repeats, photos_per_class, formats, quick, only):
    """Whole-build throughput: a 50,000-sample 32 px JSD-triple epoch on 2 workers, 224 px on
    one core against the per-image pipeline, scaling 1 -> 2 workers, peak RSS per worker."""
    if quick:
        samples, repeats, photos_per_class = min(samples, 2000), 1, min(photos_per_class, 8)
    figures = run_bench(samples=samples, repeats=repeats, photos_per_class=photos_per_class, quick=quick,
                        formats=formats, log=None if as_json else (lambda m: click.echo(m, err=True)),
                        parts=tuple(only) or PARTS)
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
