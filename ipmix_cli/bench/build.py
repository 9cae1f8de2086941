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
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ipmix_cli.bench.common import one_core
from ipmix_cli.common.errors import IpmixError


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
    from ipmix_cli.data.sources import DigitsSource

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
    """One whole in-process build into a fresh folder (deleted afterwards, outside the timing)."""
    from ipmix_cli.shards import build_shards

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    m = build_shards(out=out, progress=False, **kw)
    dt = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return dt, m


# --------------------------------------------------------------------------- the command as users run it

def _pin(core: int | None):
    """preexec_fn that pins the child to one core (what `taskset -c CORE` does)."""
    if core is None:
        return None
    return lambda: os.sched_setaffinity(0, {core})


def build_command(source: str, fractals: Path, out: Path, *, epochs: int, recipe: str, views: int,
                  workers: int) -> list[str]:
    return [sys.executable, "-m", "ipmix_cli", "shards", "build", "--source", source, "--fractals", str(fractals),
            "--out", str(out), "--epochs", str(epochs), "--recipe", recipe, "--views", str(views),
            "--workers", str(workers), "--seed", "3", "--quiet"]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def time_command(cmd: list[str], out: Path, core: int | None) -> tuple[float, float]:
    """(wall, CPU) seconds of `ipmix shards build` as a whole process (start-up, every shard's
    fsync and the manifest included; CPU time of the process and its workers, which is what it
    would take with the cores to itself); OUT (a folder or a file) is deleted before and after,
    outside the timing."""
    _remove(out)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_pin(core))
    dt = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    _remove(out)
    if res.returncode != 0:
        raise IpmixError(f"{' '.join(cmd[2:])} failed: {res.stderr.strip()[-400:]}")
    return dt, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


# The floor as the peers were timed: a whole plain-Python process (start-up and reading
# the data included) that writes every 3,073-byte CIFAR record of each epoch with one f.write,
# then one fsync. argv: the CIFAR-10 binary folder, the output file, the epochs.
FLOOR_SCRIPT = """
import glob, os, sys
folder, out, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = b"".join(open(f, "rb").read() for f in sorted(glob.glob(os.path.join(folder, "data_batch_*.bin"))))
rows = [data[i:i + 3073] for i in range(0, len(data), 3073)]
with open(out, "wb") as f:
    for _ in range(epochs):
        for r in rows:
            f.write(r)
    f.flush()
    os.fsync(f.fileno())
"""


def floor_command(cifar_root: Path, out: Path, epochs: int) -> list[str]:
    """The plain-Python writer over the same CIFAR binary source as a build, as a process:
    time it with time_command (OUT is its file)."""
    return [sys.executable, "-c", FLOOR_SCRIPT, str(cifar_root / "cifar-10-batches-bin"), str(out), str(epochs)]


def disk_rate(folder: Path, total_bytes: int, block: int = 4 << 20) -> float:
    """The disk's own rate for `total_bytes` written in 4 MB calls and fsynced; bytes/s."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "disk.bin"
    data = np.random.default_rng(0).integers(0, 256, block, dtype=np.uint8).tobytes()
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        left = total_bytes
        while left > 0:
            f.write(data[:min(left, block)])
            left -= block
        f.flush()
        os.fsync(f.fileno())
    dt = time.perf_counter() - t0
    path.unlink()
    return total_bytes / dt


def engine_rates(source: str, fractals: Path, samples: int, min_seconds: float = 0.5) -> dict:
    """The engine alone on this process's core: `make_views` over the source's pictures in the
    build's chunks, one view and JSD triple (samples/s, a median of 3 repeats of ≥ min_seconds;
    `<name>_cpu` from this process's CPU time)."""
    from ipmix_cli.augment import Augmenter, MixingBank, resolve_config
    from ipmix_cli.bench.augment import _timed
    from ipmix_cli.shards.build import chunk_rows
    from ipmix_cli.data.sources import open_source

    src = open_source(source)
    step = chunk_rows(32)
    n = min(samples, 8 * step)
    images = src.read_many(np.arange(n))
    keys = np.arange(n, dtype=np.int64)
    rates = {}
    for name, views in (("view", 1), ("jsd", 3)):
        cfg = resolve_config(preset="cifar", recipe="ipmix", views=views)
        aug = Augmenter(cfg, MixingBank.from_folder(fractals, cfg))

        def run():
            for lo in range(0, n, step):
                aug.make_views(images[lo:lo + step], 3, 0, keys[lo:lo + step])

        wall, cpu, _ = _timed(run, 3, min_seconds)
        rates[name], rates[f"{name}_cpu"] = n / wall, n / cpu
    return rates


# The builds of the 32 px part: (name, recipe, views, workers, pinned to one core)
CASES32 = (("none_view", "none", 1, 1, True), ("ipmix_view", "ipmix", 1, 1, True), ("ipmix_jsd", "ipmix", 3, 1, True),
           ("none_view_w1", "none", 1, 1, False), ("none_view_w2", "none", 1, 2, False),
           ("ipmix_jsd_w1", "ipmix", 3, 1, False), ("ipmix_jsd_w2", "ipmix", 3, 2, False))


def stage_breakdown(source: str, fractals: Path, out: Path, *, recipe: str, views: int, epochs: int) -> dict:
    """Where a sample's time goes in a one-worker build on one core (in-process, so the
    workers' stage clocks come back): microseconds per sample for each stage, plus the rest
    (planning, manifest, records, Python between the stages)."""
    with one_core():
        dt, m = _build(out, source=source, fractals=fractals, epochs=epochs, recipe=recipe, views=views,
                       seed=3, workers=1)
    return _stages_us(m, dt)


def _stages_us(m: dict, seconds: float) -> dict:
    """Microseconds per sample of each stage of a one-worker build that took `seconds`; the
    224 px preset's read stage is the JPEG decode and crop, its encode stage the JPEG encode."""
    from ipmix_cli.shards.build import STAGES

    n = m["totals"]["samples"]
    st = m["build_stats"]["stage_seconds"]
    us = {k: 1e6 * st.get(k, 0.0) / n for k in STAGES}
    us["rest"] = 1e6 * seconds / n - sum(us.values())
    return {k: round(v, 2) for k, v in us.items()}


def cache_bytecode() -> None:
    """Write the bytecode of ipmix's own modules, as Python does on first import, so the timed
    commands start as an installed package starts (pip compiles what it installs; an editable
    install under PYTHONDONTWRITEBYTECODE would otherwise compile every module from source in
    every process, about 0.1 CPU-s)."""
    import compileall

    import fractalgen
    import ipmix_cli

    for package in (ipmix_cli, fractalgen):
        compileall.compile_dir(Path(package.__file__).parent, quiet=2)


def measure_epoch32(tmp: Path, cifar: str, mix: Path, samples: int, epochs: int, repeats: int, log) -> dict:
    """Rounds of: every build of CASES32 as a process, the engine and the floor on the same
    core, the disk's rate for the JSD build's bytes; interleaved so a slow spell hits all alike.
    Returns medians and the ratios the build is held to."""
    cache_bytecode()
    core = sorted(os.sched_getaffinity(0))[0]
    total = samples * epochs
    cmds = {name: build_command(cifar, mix, tmp / f"o-{name}", epochs=epochs, recipe=r, views=v, workers=w)
            for name, r, v, w, _ in CASES32}
    pinned = {name: p for name, _, _, _, p in CASES32}

    time_command(cmds["ipmix_view"], tmp / "o-warm", core)  # loads the compiled kernels once
    rates: dict = {k: [] for k in [*cmds, *(f"{c}_cpu" for c in cmds), "engine_view", "engine_jsd", "engine_view_cpu",
                                    "engine_jsd_cpu", "floor", "disk_mb_s", "load"]}
    jsd_bytes = none_bytes = None
    for r in range(repeats):
        log(f"32 px round {r + 1} of {repeats} ...")
        for name, cmd in cmds.items():
            wall, cpu = time_command(cmd, tmp / f"o-{name}", core if pinned[name] else None)
            rates[name].append(total / wall)
            rates[f"{name}_cpu"].append(total / cpu)
        with one_core():
            eng = engine_rates(cifar, mix, samples)
            for k in ("view", "jsd", "view_cpu", "jsd_cpu"):
                rates[f"engine_{k}"].append(eng[k])
            floor_wall, _ = time_command(floor_command(Path(cifar.split(":", 1)[1]), tmp / "floor.bin", epochs),
                                         tmp / "floor.bin", core)
            rates["floor"].append(total / floor_wall)
        if jsd_bytes is None:
            jsd_bytes = _build(tmp / "o-size", source=cifar, fractals=mix, epochs=epochs, views=3, seed=3,
                               workers=2)[1]["totals"]["bytes"]
            none_bytes = _build(tmp / "o-size", source=cifar, fractals=mix, epochs=epochs, recipe="none", views=1,
                                seed=3, workers=2)[1]["totals"]["bytes"]
        rates["disk_mb_s"].append(disk_rate(tmp / "disk", jsd_bytes) / 1e6)
        rates["load"].append(os.getloadavg()[0])
    med = {k: statistics.median(v) for k, v in rates.items()}
    jsd_w2_mb_s = med["ipmix_jsd_w2"] * jsd_bytes / total / 1e6
    none_w2_mb_s = med["none_view_w2"] * none_bytes / total / 1e6
    fig = {f"build32_{k}_samples_per_s": round(v, 1) for k, v in med.items() if k in cmds}
    fig.update({f"build32_{k[:-4]}_cpu_samples_per_s": round(v, 1) for k, v in med.items() if k.endswith("_cpu")})
    fig.update({
        "load_average_median": round(med["load"], 2),
        "build32_samples": total, "build32_epochs": epochs, "build32_rounds": repeats,
        "engine32_view_samples_per_s": round(med["engine_view"], 1),
        "engine32_jsd_samples_per_s": round(med["engine_jsd"], 1),
        "engine32_view_cpu_samples_per_s": round(med["engine_view_cpu"], 1),
        "engine32_jsd_cpu_samples_per_s": round(med["engine_jsd_cpu"], 1),
        # per CPU-second: what the ratios are with the core to itself (a shared machine's wall
        # clock also counts the other jobs)
        "ratio_view_build_to_engine_cpu": round(med["ipmix_view_cpu"] / med["engine_view_cpu"], 3),
        "ratio_jsd_build_to_engine_cpu": round(med["ipmix_jsd_cpu"] / med["engine_jsd_cpu"], 3),
        "floor_samples_per_s": round(med["floor"], 1),
        "disk_write_fsync_mb_s": round(med["disk_mb_s"], 1),
        "ratio_view_build_to_engine": round(med["ipmix_view"] / med["engine_view"], 3),
        "ratio_jsd_build_to_engine": round(med["ipmix_jsd"] / med["engine_jsd"], 3),
        "ratio_none_to_floor": round(med["none_view"] / med["floor"], 3),
        "scaling_none_w2_to_w1": round(med["none_view_w2"] / med["none_view_w1"], 3),
        "scaling_jsd_w2_to_w1": round(med["ipmix_jsd_w2"] / med["ipmix_jsd_w1"], 3),
        "jsd_w2_share_of_disk_rate": round(jsd_w2_mb_s / med["disk_mb_s"], 3),
        "none_w2_share_of_disk_rate": round(none_w2_mb_s / med["disk_mb_s"], 3),
        "build32_command": " ".join(["ipmix", *cmds["ipmix_jsd"][3:]]).replace(str(tmp), "TMP"),
    })
    for name, recipe, views in (("none_view", "none", 1), ("ipmix_view", "ipmix", 1), ("ipmix_jsd", "ipmix", 3)):
        fig[f"stages_us_per_sample_{name}"] = stage_breakdown(cifar, mix, tmp / "o-stages", recipe=recipe,
                                                              views=views, epochs=epochs)
    return fig


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
    """Largest peak RSS (MB) of the 2 processes of a fresh 2-worker build (the build's own and its worker)."""
    res = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, source, str(fractals), str(out)],
                         capture_output=True, text=True, check=True)
    return max(json.loads(res.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------- formats

def format_table(images: np.ndarray, candidates) -> list[dict]:
    from ipmix_cli.shardformat.formats import measure_formats

    return measure_formats(list(images), candidates, repeats=3)


PARTS = ("epoch32", "rss", "photo224", "formats", "s3")


def run_bench(samples: int = 50_000, repeats: int = 3, photos_per_class: int = 150, quick: bool = False,
              formats: bool = True, log=None, parts=PARTS, epochs: int = 2) -> dict:
    log = log or (lambda m: None)
    from ipmix_cli.augment import MixingBank, resolve_config
    from ipmix_cli.common.heap import keep_freed_memory

    keep_freed_memory()  # as `ipmix shards build` does: the in-process stages and engine alike

    figures: dict = {"source_32": f"digits (1,797) repeated to {samples} samples, CIFAR-10 binary layout",
                     "source_224": f"{2 * photos_per_class} JPEG crops of the 2 sklearn sample photographs"}
    tmp = Path(tempfile.mkdtemp(prefix="ipmix-bench-build-"))
    try:
        mix = write_mixing_folder(tmp / "mix")
        write_digits_cifar(tmp / "cifar", samples)
        cifar = f"cifar10:{tmp / 'cifar'}"

        if "epoch32" in parts:
            figures.update(measure_epoch32(tmp, cifar, mix, samples, epochs, repeats, log))

        if "s3" in parts:  # the epoch32 build again, to an S3 server: fixed costs weigh as much
            from ipmix_cli.bench.objstore_build import measure_s3

            figures.update(measure_s3(tmp, cifar, samples, epochs, mix, repeats, log))

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
                            "photo224_bytes_per_sample": m224["totals"]["bytes"] / m224["samples_per_epoch"],
                            "stages_us_per_sample_photo224": _stages_us(m224, dt)})

        if formats and "formats" in parts:
            log("format table ...")
            from ipmix_cli.augment import Augmenter
            from ipmix_cli.data.sources import open_source

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
