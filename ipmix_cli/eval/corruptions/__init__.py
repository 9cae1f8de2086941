"""The standard image corruptions (Hendrycks & Dietterich: CIFAR-10-C and ImageNet-C), and
corrupted copies of any test set in CIFAR-10-C's layout.

`corrupt_image` applies one corruption at one severity with the table of a profile (`cifar`
for 32 px, `imagenet` for 224 px; chosen by image side unless given). Every image draws from
its own generator seeded by (seed, corruption, severity, index), so the output does not depend
on which corruptions are chosen, in what order they run, or how the work is split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fractalgen.numba_cache import drop_stale_cache

drop_stale_cache(Path(__file__).resolve().parent, __name__)

from ipmix_cli.eval.corruptions.tables import ALEXNET_ERRORS, ALL, BENCHMARK, EXTRA, FAMILY, PROFILES, profile_for
from ipmix_cli.common.errors import IpmixError

CORRUPTIONS = ALL  # every name, in the benchmark's order, extras last
SEVERITIES = (1, 2, 3, 4, 5)


def _ops():
    try:
        from ipmix_cli.eval.corruptions.ops import OPS
    except ImportError as exc:
        raise IpmixError(f"the corruptions need SciPy and scikit-image ({exc.name} is missing): "
                         "pip install 'ipmix[eval]'") from None
    return OPS


def resolve_profile(profile: str | None, side: int) -> str:
    if profile is None:
        return profile_for(side)
    if profile not in PROFILES:
        raise IpmixError(f"unknown profile {profile!r}; choose cifar (CIFAR-10-C, 32 px) or imagenet "
                         "(ImageNet-C, 224 px)")
    return profile


def corrupt_image(image: np.ndarray, name: str, severity: int, seed: int, index: int,
                  profile: str | None = None) -> np.ndarray:
    """One uint8 image [H, W, 3] corrupted by `name` at `severity` (1-5), deterministically."""
    if name not in CORRUPTIONS:
        raise IpmixError(f"unknown corruption {name!r}; choose from: {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise IpmixError(f"severity must be 1..5, got {severity}")
    table = PROFILES[resolve_profile(profile, image.shape[0])]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), ALL.index(name), int(severity), int(index)]))
    out = _ops()[name](np.asarray(image, dtype=np.uint8), table[name][severity - 1], rng, table)
    if out.dtype == np.uint8:  # the Pillow-based ones
        return out
    # The published sets truncate (np.uint8 of the float result), they do not round.
    return np.clip(out, 0, 255).astype(np.uint8)


def parse_corruptions(text: str | None) -> list[str]:
    """Names from a comma-separated list (`benchmark` and `extra` name the two groups), in the
    benchmark's order; all 19 when empty."""
    if not text:
        return list(CORRUPTIONS)
    names = []
    for token in (t.strip() for t in text.split(",")):
        names += list(BENCHMARK) if token == "benchmark" else list(EXTRA) if token == "extra" else [token] * bool(token)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown or not names:
        raise IpmixError(f"unknown corruption(s) {', '.join(unknown) or text!r}; choose from: "
                         f"{', '.join(CORRUPTIONS)} (or benchmark, extra)")
    return [n for n in CORRUPTIONS if n in names]


from ipmix_cli.eval.corruptions.corrupted_set import (  # noqa: E402
    PLAN_NAME, make_corrupted_set)

__all__ = ["ALEXNET_ERRORS", "ALL", "BENCHMARK", "CORRUPTIONS", "EXTRA", "FAMILY", "PLAN_NAME", "PROFILES",
           "SEVERITIES", "corrupt_image", "make_corrupted_set", "parse_corruptions",
           "resolve_profile"]
