"""`ipmix bench corrupt`: each corruption's time per image, ipmix against the imagecorruptions
package (ImageNet-C's definitions and severities on both sides), one core, medians."""

from __future__ import annotations

import statistics
import time

import numpy as np

from ipmix_cli.bench.common import one_core


def _images(n: int, side: int) -> np.ndarray:
    """Smooth colour patterns with noise: what photos look like to these filters."""
    rs = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side] / side
    out = np.empty((n, side, side, 3), np.uint8)
    for i in range(n):
        f, ph = rs.uniform(1, 9, (2, 3)), rs.uniform(0, 6.3, 3)
        base = 128 + 110 * np.sin(f[0] * xx[..., None] + f[1] * yy[..., None] + ph)
        out[i] = np.clip(base + rs.normal(0, 15, base.shape), 0, 255)
    return out


def _seconds_per_image(fn, images, repeats: int) -> float:
    """Median over `repeats` of the time to corrupt every image at severities 1-5, per image."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i, x in enumerate(images):
            for severity in range(1, 6):
                fn(x, severity, i)
        times.append((time.perf_counter() - t0) / (5 * len(images)))
    return statistics.median(times)


def measure(side: int = 224, n_images: int = 4, repeats: int = 3, names=None) -> dict:
    from ipmix_cli.eval.corruptions import CORRUPTIONS, corrupt_image, parse_corruptions
    from ipmix_cli.eval.corruptions.reference import load_reference

    reference = load_reference()
    names = parse_corruptions(names) if names else list(CORRUPTIONS)
    images = _images(n_images, side)
    rows = []
    with one_core():
        for name in names:
            corrupt_image(images[0], name, 1, 0, 0, "imagenet")  # compile / load textures
            ours = _seconds_per_image(lambda x, s, i: corrupt_image(x, name, s, 0, i, "imagenet"), images, repeats)

            def theirs(x, s, i):
                np.random.seed(i)
                reference(x, s, name)

            ref = _seconds_per_image(theirs, images, repeats)
            rows.append({"corruption": name, "ipmix_ms_per_image": round(ours * 1e3, 3),
                         "reference_ms_per_image": round(ref * 1e3, 3), "ratio": round(ref / ours, 2)})
    return {"baseline": "imagecorruptions package (ImageNet-C definitions)", "profile": "imagenet",
            "image_side": side, "images": n_images, "severities": 5, "repeats": repeats, "cores": 1,
            "corruptions": rows}
