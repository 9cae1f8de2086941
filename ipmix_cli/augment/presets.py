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
    "pixmix": {"ops": AUGMIX_OPS, "all_ops": AUGMIX_ALL_OPS, "min_ops": 0, "p_chain": 0.0, "width": 4},
    "none": {"ops": (), "all_ops": (), "min_ops": 0, "p_chain": 0.0},
}

# Recipes that mix with pictures of the mixing set (AugMix and `none` never look at it).
MIXING_RECIPES = ("ipmix", "pixmix")

PARTNERS = ("fractal", "mixed")

# How a P-level mix goes back to uint8; indexed as pixel_ops.OVERFLOW_CLIP, OVERFLOW_WRAP
OVERFLOWS = ("clip", "wrap")

# The train-time crop, before the flip and the augmentation:
#   pad             4 px zero padding, a random S x S crop (pictures of another size are first
#                   resized, shorter side S, and centre-cropped)
#   random-resized  torchvision's RandomResizedCrop(S): a random box of 8-100 % of the area, aspect
#                   3/4-4/3, resized (bilinear) to S x S
#   center          shorter side resized to S, the centre S x S (no randomness)
#   none            the whole picture resized to S x S (nothing cut off; the aspect is not kept)
CROPS = ("pad", "random-resized", "center", "none")

# The authors' code each recipe follows (read with its argparse defaults), and how to get the
# other setting the authors use.
AUTHORS_CODE = {
    "ipmix": "hzlsaber/IPMix @ 050bcb6 (IPMix_utils.py, cifar.py, imagenet.py)",
    "augmix": "google-research/augmix @ 9b9824c (augmentations.py, cifar.py, imagenet.py)",
    "pixmix": "andyzoujm/pixmix @ f867e87 (pixmix_utils.py, cifar.py, imagenet.py)",
    "none": "crop and flip only (the 'vanilla' row of the papers' tables)",
}
OTHER_SETTING = {
    "ipmix": "all_ops=true: its --all-ops (15 ops)",
    "augmix": "all_ops=true: its --all-ops (13 ops); its default training is the JSD triple (views 3)",
    "pixmix": "all_ops=true: its --all-ops (13 ops), as its README's training commands pass",
    "none": "",
}


def recipe_summary(augment: dict) -> str:
    """One line for a dataset card: which authors' code the recipe follows, the settings that
    made the shards and the crop and flip before them (an `AugmentConfig.to_dict()`)."""
    from ipmix_cli.augment.policy import ROWS, row_id

    recipe = augment["recipe"]
    flip = augment.get("flip", True)
    crop = f"crop `{augment['crop']}` {'+ random horizontal flip' if flip else 'without flip'}"
    if recipe == "none":
        return f"`none`: {AUTHORS_CODE['none']}; {crop}"
    text = f"`{recipe}`, following {AUTHORS_CODE[recipe]}"
    lo, hi = augment["min_ops"], augment["depth"]
    shape = (f"0-{augment['width']} mixing rounds" if recipe == "pixmix"
             else f"width {augment['width']}, depth {lo}-{hi} ops per chain")
    if recipe == "ipmix":
        shape += (f" (P chains: patch sizes {', '.join(map(str, augment['patch_sizes']))}, partner "
                  f"{augment['partner']}, overflow {augment['overflow']})")
    ops = list(augment["ops"])
    if "autocontrast" in ops:
        rule = ROWS[row_id(recipe, "autocontrast")]
        autocontrast = ("autocontrast cutoff 0 (Pillow's default)" if rule.coef == 0
                        else "autocontrast cutoff 10 - level %")
    else:
        autocontrast = "no autocontrast"
    beta = "" if recipe == "augmix" else f", beta {augment['beta']:g}"
    return (f"{text}: {shape}, severity {augment['severity']:g}{beta}, {len(ops)} ops "
            f"({', '.join(ops)}), {autocontrast}; {crop}")
