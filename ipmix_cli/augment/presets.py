"""The presets' tables (spec: IPMix as the reference code does it) and each recipe's defaults."""

from __future__ import annotations

from ipmix_cli.augment.policy import AUGMIX_ALL_OPS, AUGMIX_OPS, IPMIX_ALL_OPS, IPMIX_OPS

PRESETS = {
    "cifar": {
        "image_size": 32,
        "width": 3,
        "depth": 3,
        "severity": 3.0,
        "beta": 3.0,
        "patch_sizes": (4, 8, 16, 32),
        "partner": "fractal",    # CIFAR code: P chains always mix with the mixing picture
        "crop": "pad",           # 4 px zero padding + random crop + flip
        "mixing_size": 36,       # mixing pictures: shorter side 36, random crop 32
    },
    "imagenet": {
        "image_size": 224,
        "width": 3,
        "depth": 3,
        "severity": 1.0,
        "beta": 4.0,
        "patch_sizes": (4, 8, 16, 32, 64, 224),
        "partner": "mixed",      # ImageNet code: the mixing picture or op(x), 1/2 each
        "crop": "random-resized",  # RandomResizedCrop(224) + flip
        "mixing_size": 256,
    },
}

# Per recipe: the op list (and the list with all_ops), the smallest number of ops per chain,
# the probability of a P chain, and the recipe's own width.
RECIPES = {
    "ipmix": {"ops": IPMIX_OPS, "all_ops": IPMIX_ALL_OPS, "min_ops": 0, "p_chain": 0.5},
    "augmix": {"ops": AUGMIX_OPS, "all_ops": AUGMIX_ALL_OPS, "min_ops": 1, "p_chain": 0.0},
    "pixmix": {"ops": IPMIX_ALL_OPS, "all_ops": IPMIX_ALL_OPS, "min_ops": 0, "p_chain": 0.0, "width": 4},
    "none": {"ops": (), "all_ops": (), "min_ops": 0, "p_chain": 0.0},
}

# Recipes that mix with pictures of the mixing set (AugMix and `none` never look at it).
MIXING_RECIPES = ("ipmix", "pixmix")

PARTNERS = ("fractal", "mixed")
CROPS = ("pad", "random-resized")
