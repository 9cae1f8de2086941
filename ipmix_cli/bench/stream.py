"""`ipmix bench stream`: samples/s the ShardLoader delivers as batched uint8 tensors on one
core, against an online loader that applies IPMix per sample inside a torch DataLoader the
way the reference code does (per-image PIL, `ipmix_cli.augment.reference`), same run. Also the
224 px shards streamed from a local S3 server (moto, its own process) against the same shards
on local disk, passes alternating, so both see the same machine load; per wall-second and per
CPU-second of the loader's process (the server's CPU is left out, as with a remote store)."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ipmix_cli.bench.common import median_time, one_core

GOAL_RATIO_32 = 15.0
GOAL_SINGLE_32 = 25_000.0
GOAL_S3_VS_LOCAL = 0.9
PARTS = ("disk", "s3", "online")


def _patterns(n: int, size: int, seed: int) -> np.ndarray:
    """Smooth colour waves plus a little noise: photo-like pictures without any download."""
    rs = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        f, g, ph = rs.uniform(2, 9, 3), rs.uniform(2, 9, 3), rs.uniform(0, 6.3, 3)
        wave = 128 + 100 * np.sin(f * x[..., None] + g * y[..., None] + ph)
        out[i] = np.clip(wave + rs.normal(0, 10, wave.shape), 0, 255).astype(np.uint8)
    return out


def _write_pngs(folder: Path, images) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:04d}.png")


def stream_rate(shards, batch_size: int, epochs: int, repeats: int) -> float:
    """Samples/s of `epochs` training epochs read by one in-process ShardLoader."""
    from ipmix_cli.stream import ShardLoader

    loader = ShardLoader(shards, batch_size, num_workers=0, world_size=1, rank=0)
    delivered = len(loader) * batch_size * epochs

    def run():
        for t in range(epochs):
            loader.set_epoch(t)
            for _ in loader:
                pass

    return delivered / median_time(run, repeats=repeats, warmup=1)


def paired_rates(local, url: str, batch_size: int, epochs: int, repeats: int) -> dict:
    """Median samples/s of `epochs` training epochs read from `local` and from `url`, one pass
    of each in turn (after one untimed pass of each), so drifting load hits both alike: per
    wall-second ("local", "s3") and per CPU-second of this process, all its threads
    ("local_cpu", "s3_cpu"), which other processes on a busy machine disturb less."""
    from ipmix_cli.stream import ShardLoader

    loaders = {"local": ShardLoader(local, batch_size, num_workers=0, world_size=1, rank=0),
               "s3": ShardLoader(url, batch_size, num_workers=0, world_size=1, rank=0)}
    delivered = len(loaders["local"]) * batch_size * epochs

    def one_pass(loader) -> tuple[float, float]:
        t0, cpu0 = time.perf_counter(), time.process_time()
        for t in range(epochs):
            loader.set_epoch(t)
            for _ in loader:
                pass
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        loader.close()  # no fetching ahead while the other loader is timed (each pass starts cold)
        return seconds, cpu

    for loader in loaders.values():
        one_pass(loader)
    passes: dict = {name: [] for name in loaders}
    for _ in range(repeats):
        for name, loader in loaders.items():
            passes[name].append(one_pass(loader))
    rates = {}
    for name, timed in passes.items():
        rates[name] = delivered / statistics.median(wall for wall, _ in timed)
        rates[f"{name}_cpu"] = delivered / statistics.median(cpu for _, cpu in timed)
    return rates


def object_store_figures(sets: dict, batch_size: int, epochs: int, repeats: int, log) -> dict:
    """Each shard set of `sets` (figure name -> folder) from a local S3 server vs from local disk
    (see the module docstring). The goal is held against the first."""
    from ipmix_cli.bench import object_store

    if not object_store.available():
        return {"s3_case": f"not measured: needs {object_store.NEEDS}"}
    try:
        server_cores = set(range(os.cpu_count() or 1)) - os.sched_getaffinity(0)
    except AttributeError:
        server_cores = set()
    figures: dict = {}
    with object_store.local_s3(server_cores or None) as server:
        server.fs.mkdir("ipmix-bench")
        uploads = {name: (shards, True) for name, shards in sets.items()}
        first = next(iter(sets))
        uploads[f"{first}_no_store_sha256"] = (sets[first], False)
        for name, (shards, checksums) in uploads.items():
            url = f"s3://ipmix-bench/{name}"
            if checksums:
                object_store.upload_as_built(shards, url)
            else:
                server.fs.put(str(shards), url, recursive=True)
            log(f"streaming {name} from a local S3 server and from disk, alternating")
            rates = paired_rates(shards, url, batch_size, epochs, repeats)
            figures.update({f"stream_{name}_local_paired_samples_per_s": round(rates["local"], 1),
                            f"stream_{name}_s3_samples_per_s": round(rates["s3"], 1),
                            f"s3_vs_local_{name}": round(rates["s3"] / rates["local"], 3),
                            f"stream_{name}_local_paired_samples_per_cpu_s": round(rates["local_cpu"], 1),
                            f"stream_{name}_s3_samples_per_cpu_s": round(rates["s3_cpu"], 1),
                            f"s3_vs_local_cpu_{name}": round(rates["s3_cpu"] / rates["local_cpu"], 3)})
    figures.update(goal_s3_vs_local=GOAL_S3_VS_LOCAL, goal_met_s3=figures[f"s3_vs_local_{first}"] >= GOAL_S3_VS_LOCAL,
                   s3_case="moto server on 127.0.0.1 in its own process; shards uploaded as a build uploads "
                           "them (with S3's SHA-256 checksum; '_no_store_sha256': without, so the loader "
                           "hashes each shard); one GET per shard, checked (size, sha256) and fetched "
                           "ahead of decoding; no cache")
    return figures


def online_rate(cfg, bank, images, labels, batch_size: int, samples: int, repeats: int) -> float:
    """Samples/s of a DataLoader whose Dataset crops, flips and applies IPMix per sample with
    the per-image PIL reference, returning uint8 tensors (no normalisation, like the shards)."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    from ipmix_cli.augment.reference import reference_sample

    class OnlineIPMix(Dataset):
        def __init__(self):
            self.epoch = 0

        def __len__(self):
            return samples

        def __getitem__(self, i):
            views = reference_sample(cfg, bank.pixels, images[i % len(images)], 0, self.epoch, i)
            return torch.from_numpy(views).permute(0, 3, 1, 2), int(labels[i % len(labels)])

    dataset = OnlineIPMix()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0, drop_last=True)
    delivered = samples // batch_size * batch_size

    def run():
        dataset.epoch += 1
        for _ in loader:
            pass

    return delivered / median_time(run, repeats=repeats, warmup=1)


def measure_stream(repeats: int = 5, quick: bool = False, batch_size: int = 128, log=None, parts=PARTS) -> dict:
    """The figures of `ipmix bench stream` (see the module docstring) for `parts`: "disk"
    (shards streamed from local disk), "s3" (from a local S3 server beside local disk) and
    "online" (IPMix per sample in a DataLoader); the speedups need "disk" and "online"."""
    with one_core():
        return _measure(repeats, quick, batch_size, log or (lambda msg: None), set(parts))


def _measure(repeats: int, quick: bool, batch_size: int, log, parts: set) -> dict:
    from ipmix_cli.shards import build_shards

    if quick:
        batch_size = min(batch_size, 16)
    source32 = "digits:test" if quick else "digits"
    online_32 = 64 if quick else 512
    online_224 = 16 if quick else 64
    n224 = 16 if quick else 256
    read_epochs = 1 if quick else 4
    b224 = min(batch_size, 8 if quick else 32)
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="ipmix-bench-stream-") as tmp:
        tmp = Path(tmp)
        _write_pngs(tmp / "mix", _patterns(8, 256, seed=3))
        for c in range(2):
            _write_pngs(tmp / "src224" / f"class{c}", _patterns(n224 // 2, 256, seed=10 + c))
        builds = {
            "32_single_png": dict(source=source32, preset="cifar", views=1, format="png"),
            "32_single_npy": dict(source=source32, preset="cifar", views=1, format="npy"),
            "32_triple_png": dict(source=source32, preset="cifar", views=3, format="png"),
            "32_triple_npy": dict(source=source32, preset="cifar", views=3, format="npy"),
            "224_single_jpg": dict(source=f"folder:{tmp / 'src224'}", preset="imagenet", views=1, format="jpg"),
        }
        if "disk" not in parts:  # only the shard set the other parts read
            builds = {"224_single_jpg": builds["224_single_jpg"]} if "s3" in parts else {}
        for name, kw in builds.items():
            log(f"building {name} shards")
            manifest = build_shards(fractals=str(tmp / "mix"), out=str(tmp / name), epochs=2, seed=0,
                                    workers=1, progress=False, **kw)
            figures[f"shard_bytes_per_sample_{name}"] = round(
                sum(s["bytes"] for s in manifest["epochs"][0]["shards"]) / manifest["samples_per_epoch"], 1)
        if "disk" in parts:
            for name in builds:
                log(f"streaming {name}")
                b = b224 if name.startswith("224") else batch_size
                figures[f"stream_{name}_samples_per_s"] = round(stream_rate(tmp / name, b, read_epochs, repeats), 1)
        if "s3" in parts:
            # The same 224 px samples in 2 shards per epoch (about 5 MB each; shards of a real
            # 224 px set are larger still), and in the 8 small shards above.
            log("building 224_single_jpg shards, 2 per epoch")
            build_shards(fractals=str(tmp / "mix"), out=str(tmp / "224_jpg_2_shards"), epochs=2, seed=0, workers=1,
                         progress=False, shards=2, **builds["224_single_jpg"])
            figures.update(object_store_figures({"224_jpg_2_shards": tmp / "224_jpg_2_shards",
                                                 "224_single_jpg": tmp / "224_single_jpg"},
                                                b224, read_epochs, repeats, log))
        if "online" in parts:
            figures.update(_online_figures(tmp, source32, online_32, online_224, batch_size, b224, repeats, log))

    if {"disk", "online"} <= parts:
        figures.update(_speedups(figures))
    figures["batch_size"] = batch_size
    figures["batch_size_224"] = b224
    figures["repeats"] = repeats
    figures["note"] = ("one core (num_workers=0 in both loaders); samples/s delivered as batched uint8 tensors; "
                       "online = per-sample reference IPMix (PIL) inside a torch DataLoader")
    return figures


def _online_figures(tmp: Path, source32: str, online_32: int, online_224: int, batch_size: int, b224: int,
                    repeats: int, log) -> dict:
    from ipmix_cli.augment import MixingBank, resolve_config
    from ipmix_cli.data.sources import open_source

    figures = {}
    src = open_source(source32)
    n = min(len(src), online_32)
    images32 = [src.read(i) for i in range(n)]
    labels32 = src.labels[:n]
    src224 = open_source(f"folder:{tmp / 'src224'}")
    images224 = [src224.read(i) for i in range(len(src224))]
    online = {
        "32_single": (resolve_config("cifar", "ipmix", views=1), images32, labels32, batch_size, online_32),
        "32_triple": (resolve_config("cifar", "ipmix", views=3), images32, labels32, batch_size, online_32 // 2),
        "224_single": (resolve_config("imagenet", "ipmix", views=1), images224, src224.labels, b224, online_224),
    }
    for name, (cfg, imgs, labels, b, samples) in online.items():
        log(f"online IPMix {name}")
        bank = MixingBank.from_folder(tmp / "mix", cfg, cache_dir=tmp / "cache")
        figures[f"online_{name}_samples_per_s"] = round(online_rate(cfg, bank, imgs, labels, b, samples, repeats), 1)
    return figures


def _speedups(figures: dict) -> dict:
    """Streaming from disk against online IPMix, and the goals held against them."""
    from ipmix_cli.shardformat.formats import default_format

    out = {}
    pairs = {"32_single": "32_single_png", "32_triple": "32_triple_png", "224_single": "224_single_jpg"}
    for online_name, stream_name in pairs.items():
        out[f"speedup_{online_name}"] = round(
            figures[f"stream_{stream_name}_samples_per_s"] / figures[f"online_{online_name}_samples_per_s"], 1)
    for online_name in ("32_single", "32_triple"):
        out[f"speedup_{online_name}_npy"] = round(
            figures[f"stream_{online_name}_npy_samples_per_s"] / figures[f"online_{online_name}_samples_per_s"], 1)
    out["goal_speedup_32"] = GOAL_RATIO_32
    out["goal_stream_32_single_samples_per_s"] = GOAL_SINGLE_32
    for fmt in ("png", "npy"):
        sfx = "" if fmt == "png" else "_npy"
        out[f"goal_met_{fmt}"] = bool(
            min(out[f"speedup_32_single{sfx}"], out[f"speedup_32_triple{sfx}"]) >= GOAL_RATIO_32
            and figures[f"stream_32_single_{fmt}_samples_per_s"] >= GOAL_SINGLE_32)
    out["default_format_32"] = default_format(32)[0]
    out["goal_met"] = out[f"goal_met_{out['default_format_32']}"]
    return out
