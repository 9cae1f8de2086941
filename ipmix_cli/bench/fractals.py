"""`ipmix bench fractals`: renderer throughput on one core at 256², Numba compile time apart,
the wall time of writing a whole set on 2 workers, and whether a second process recompiles."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


from ipmix_cli.bench.common import one_core

# Run in a fresh interpreter: render one picture of each family and say how long that took and
# how many kernels were compiled (cache misses) versus loaded from Numba's on-disk cache.
_PROBE = r"""
import json, time
t0 = time.perf_counter()
import numpy as np
from fractalgen import escape, ifs
t1 = time.perf_counter()
escape.render_escape(np.random.default_rng(0), 256)
ifs.render_ifs(np.random.default_rng(0), 256)
t2 = time.perf_counter()
kernels = [escape.escape_fields, escape.escape_counts, escape.shade_image, ifs.plasma, ifs.chaos_game,
           ifs.stamp3, ifs.compose]
misses = sum(sum(k.stats.cache_misses.values()) for k in kernels)
hits = sum(sum(k.stats.cache_hits.values()) for k in kernels)
print(json.dumps({"import_s": t1 - t0, "first_render_s": t2 - t1, "misses": misses, "hits": hits}))
"""


def _probe(cache_dir: str | None) -> dict:
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rates(render, n: int, repeats: int):
    """Per run: images/s by wall clock and by this thread's CPU time; every image's wall ms."""
    import numpy as np

    wall_rates, cpu_rates, per_image = [], [], []
    for run in range(repeats):
        w0, c0 = time.perf_counter(), time.thread_time()
        for i in range(n):
            t = time.perf_counter()
            render(np.random.default_rng([12345, run, i]), 256)
            per_image.append((time.perf_counter() - t) * 1e3)
        wall_rates.append(n / (time.perf_counter() - w0))
        cpu_rates.append(n / max(time.thread_time() - c0, 1e-9))
    return statistics.median(wall_rates), statistics.median(cpu_rates), per_image


def _png_ms(encode, images) -> tuple[float, float]:
    """Median ms per picture over 3 passes, and mean KiB."""
    times, sizes = [], []
    for _ in range(3):
        t = time.perf_counter()
        sizes = [len(encode(im)) for im in images]
        times.append((time.perf_counter() - t) / len(images) * 1e3)
    return statistics.median(times), statistics.mean(sizes) / 1024


def _pillow_png(level: int):
    import io

    from PIL import Image

    def encode(rgb):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG", compress_level=level)
        return buf.getvalue()

    return encode


def measure(repeats: int, n_ifs: int, n_escape: int, n_write: int) -> dict:
    """Throughput of the fractal renderers (one core, 256², median of runs) and of writing a set."""
    import numpy as np

    from fractalgen import escape, ifs
    from fractalgen.render import render_set

    figures = {}
    with tempfile.TemporaryDirectory(prefix="ipmix-bench-numba-") as cache:
        cold, warm = _probe(cache), _probe(cache)
    figures["numba_compile_s"] = round(cold["first_render_s"] - warm["first_render_s"], 3)
    figures["numba_cold_first_render_s"] = round(cold["first_render_s"], 3)
    figures["numba_cached_first_render_s"] = round(warm["first_render_s"], 3)
    figures["second_process_recompiles"] = warm["misses"] > 0
    figures["second_process_cache_hits"] = warm["hits"]
    installed = _probe(None)  # the cache beside the installed package, as the CLI uses it
    _probe(None)
    figures["cli_cache_recompiles"] = _probe(None)["misses"] > 0
    figures["cli_first_render_s"] = round(installed["first_render_s"], 3)

    with one_core():
        escape.render_escape(np.random.default_rng(0), 256)  # load kernels outside the timings
        ifs.render_ifs(np.random.default_rng(0), 256)

        wall, cpu, _ = _rates(ifs.render_ifs, n_ifs, repeats)
        figures["ifs_images_per_s"] = round(wall, 1)
        figures["ifs_images_per_cpu_s"] = round(cpu, 1)
        wall, cpu, per_image = _rates(escape.render_escape, n_escape, repeats)
        figures["escape_images_per_s"] = round(wall, 1)
        figures["escape_images_per_cpu_s"] = round(cpu, 1)
        figures["escape_worst_ms"] = round(max(per_image), 2)
        figures["escape_p99_ms"] = round(float(np.percentile(per_image, 99)), 2)
        sample = [escape.render_escape(np.random.default_rng([7, i]), 256)[0] for i in range(10)]
        sample += [ifs.render_ifs(np.random.default_rng([7, i]), 256)[0] for i in range(10)]
        from fractalgen.render import encode_png

        for name, encode in (("png", encode_png), ("pillow_png_level1", _pillow_png(1)),
                             ("pillow_png_level6", _pillow_png(6))):
            ms, kib = _png_ms(encode, sample)
            figures[f"{name}_ms"] = round(ms, 2)
            figures[f"{name}_kib"] = round(kib, 1)

    if n_write:
        with tempfile.TemporaryDirectory(prefix="ipmix-bench-set-") as tmp:
            t = time.perf_counter()
            manifest = render_set(os.path.join(tmp, "set"), escape=n_write, ifs=n_write, size=256, seed=1, workers=2)
            figures["write_images"] = 2 * n_write
            figures["write_wall_s_2_workers"] = round(time.perf_counter() - t, 2)
            figures["write_mib"] = round(sum(e["bytes"] for e in manifest["images"]) / 2**20, 1)
    figures["cpus_available"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    figures["load_average_1min"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return figures
