"""`ipmix bench augment`: the engine's throughput on one core, for IPMix and the AugMix and
PixMix baselines, against ipmix's per-image reference (reference.py: the same recipe with one
Pillow call per op) measured in the same run; medians of several runs."""

from __future__ import annotations

import statistics
import time

import numpy as np

from ipmix_cli.bench.common import one_core

BASELINE = "ipmix per-image reference"  # what every *_baseline_* figure and *_speedup is measured against


def smooth_images(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """Smooth random colour patterns with a little noise (photo-like histograms)."""
    rs = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    y /= height
    x /= width
    out = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        fx, fy, ph = rs.uniform(2, 9, 3), rs.uniform(2, 9, 3), rs.uniform(0, 6.3, 3)
        base = 128 + 100 * np.sin(fx * x[..., None] + fy * y[..., None] + ph)
        out[i] = np.clip(base + rs.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    return out


def _bank(cfg, fractals):
    from ipmix_cli.augment import MixingBank

    if fractals:
        return MixingBank.from_folder(fractals, cfg)
    R = cfg.mixing_size
    return MixingBank.from_array(smooth_images(16, R, R, seed=7))


MIN_REPEAT_S = 0.5  # shorter repeats (1,024 images at 32 px took ~15 ms) jumped by ±10 % run to run


def _timed(fn, repeats: int, min_seconds: float = MIN_REPEAT_S) -> tuple[float, float, float]:
    """Per-call medians of (wall seconds, CPU seconds of this process) over `repeats` repeats,
    after one warm-up call, and the median length of a repeat.

    A repeat calls `fn` as many times as it takes to last at least `min_seconds` (the count is
    set from the warm-up call). On a shared machine the CPU-time figure is what the process
    would get with the core to itself.
    """
    w0 = time.perf_counter()
    fn()
    calls = max(1, int(np.ceil(min_seconds / max(time.perf_counter() - w0, 1e-6))))
    wall, cpu = [], []
    while len(wall) < repeats:
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(calls):
            fn()
        w, c = time.perf_counter() - w0, time.process_time() - c0
        if w < min_seconds:  # the warm-up call was slow (a first call, a busy spell): lengthen
            calls = int(np.ceil(calls * min_seconds / max(w, 1e-6)))
            continue
        wall.append(w / calls)
        cpu.append(c / calls)
    repeat_s = statistics.median(wall) * calls
    return statistics.median(wall), statistics.median(cpu), repeat_s


def measure(cfg, fractals, images, n_fast: int, n_ref: int, repeats: int, min_seconds: float = MIN_REPEAT_S):
    """(fast, baseline) as (wall items/s, cpu items/s, seconds per repeat), and first-call seconds."""
    from ipmix_cli.augment import Augmenter
    from ipmix_cli.augment.reference import reference_make_views

    bank = _bank(cfg, fractals)
    aug = Augmenter(cfg, bank)
    fast_in = images[:n_fast] if isinstance(images, np.ndarray) else list(images[:n_fast])
    idx = np.arange(n_fast, dtype=np.int64)
    t0 = time.perf_counter()
    aug.make_views(fast_in[:2], 0, 0, idx[:2])
    first_call = time.perf_counter() - t0
    fast = _timed(lambda: aug.make_views(fast_in, 0, 0, idx), repeats, min_seconds)
    ref_in = fast_in[:n_ref]
    ref = _timed(lambda: reference_make_views(cfg, bank.pixels, ref_in, 0, 0, idx[:n_ref]), repeats, min_seconds)
    return (n_fast / fast[0], n_fast / fast[1], fast[2]), (n_ref / ref[0], n_ref / ref[1], ref[2]), first_call


def run_bench(repeats: int = 5, fractals=None, quick: bool = False) -> dict:
    with one_core():
        return _run_bench(repeats, fractals, quick)


def _run_bench(repeats: int, fractals, quick: bool) -> dict:
    from ipmix_cli.augment import resolve_config

    scale = 4 if quick else 1
    min_seconds = MIN_REPEAT_S / 5 if quick else MIN_REPEAT_S
    small = smooth_images(1024 // scale, 32, 32, seed=1)
    large = smooth_images(48 // scale, 256, 256, seed=2)
    figures = {}
    cases = [
        ("ipmix_32_view", resolve_config("cifar", "ipmix", views=1), small, 1024 // scale, 128 // scale),
        ("ipmix_32_jsd", resolve_config("cifar", "ipmix", views=3), small, 512 // scale, 64 // scale),
        ("ipmix_224_view", resolve_config("imagenet", "ipmix", views=1), large, 48 // scale, 16 // scale),
    ]
    for recipe in ("augmix", "pixmix"):  # the baselines, from the same kernels
        cases += [
            (f"{recipe}_32_view", resolve_config("cifar", recipe, views=1), small, 1024 // scale, 128 // scale),
            (f"{recipe}_224_view", resolve_config("imagenet", recipe, views=1), large, 48 // scale, 16 // scale),
        ]
    first_calls = {}
    for name, cfg, images, n_fast, n_ref in cases:
        fast, ref, first = measure(cfg, fractals, images, n_fast, n_ref, repeats, min_seconds)
        unit = "samples_per_s" if name.endswith("jsd") else "img_per_s"
        figures[f"{name}_{unit}"] = round(fast[0], 1)
        figures[f"{name}_baseline_{unit}"] = round(ref[0], 1)
        figures[f"{name}_speedup"] = round(fast[0] / ref[0], 2)
        figures[f"{name}_cpu_{unit}"] = round(fast[1], 1)
        figures[f"{name}_baseline_cpu_{unit}"] = round(ref[1], 1)
        figures[f"{name}_repeat_s"] = round(min(fast[2], ref[2]), 3)
        first_calls[name] = first
    # The first call of the process compiles the kernels (or loads them from Numba's cache).
    figures["numba_first_call_s"] = round(first_calls["ipmix_32_view"], 3)
    figures["baseline"] = BASELINE
    figures["repeats"] = repeats
    figures["note"] = (f"one core; *_baseline_* and *_speedup compare with the {BASELINE} "
                       "(reference.py: the same recipe and draws, one Pillow call per op, NumPy per mix), "
                       f"not with the authors' code; medians of repeated runs of at least {min_seconds} s each (wall clock; "
                       "*_cpu_* from this process's CPU time; *_repeat_s the shorter median repeat); "
                       "224 inputs are 256x256 pictures (RandomResizedCrop inside)")
    return figures
