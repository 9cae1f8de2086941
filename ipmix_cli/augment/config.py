"""AugmentConfig: one resolved, validated, JSON-able description of the augmentation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ipmix_cli.augment.policy import OP_NAMES, row_id
from ipmix_cli.augment.presets import CROPS, OVERFLOWS, PARTNERS, PRESETS, RECIPES
from ipmix_cli.common.errors import IpmixError

CONFIG_VERSION = 1

OVERRIDES = ("width", "depth", "min_ops", "severity", "beta", "ops", "all_ops", "patch_sizes",
             "partner", "overflow", "image_size", "mixing_size", "crop", "flip")


@dataclass(frozen=True)
class AugmentConfig:
    preset: str
    recipe: str
    views: int
    image_size: int
    width: int            # k: chains (IPMix, AugMix) or maximum mixing rounds (PixMix)
    depth: int            # t: ops per chain drawn uniformly from [min_ops, t]
    min_ops: int          # 0 as the reference code, 1 as the paper
    severity: float
    beta: float
    ops: tuple
    patch_sizes: tuple
    partner: str          # P-chain partner: "fractal" always, or "mixed" (fractal or op(x), 1/2 each)
    overflow: str         # "clip" (default) or "wrap" (the reference's uint8 wrap-around)
    crop: str             # "pad" (CIFAR), "random-resized" (ImageNet), "center" or "none" (see CROPS)
    mixing_size: int      # shorter side the mixing pictures are resized to
    flip: bool = True     # the random horizontal flip after the crop (off for digits, text, signs...)
    version: int = CONFIG_VERSION

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["ops"] = list(self.ops)
        d["patch_sizes"] = list(self.patch_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AugmentConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise IpmixError(f"unknown augmentation setting(s): {', '.join(unknown)}")
        optional = {f.name for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
        missing = sorted(names - set(d) - optional)  # settings written before `flip` existed flipped
        if missing:
            raise IpmixError(f"augmentation settings lack: {', '.join(missing)}")
        d = dict(d)
        d["ops"] = tuple(d["ops"])
        d["patch_sizes"] = tuple(int(s) for s in d["patch_sizes"])
        cfg = cls(**d)
        validate(cfg)
        return cfg

    # ---- what the kernels receive
    def kernel_recipe(self):
        """The kernels' view of this configuration, a `chains.Recipe` (every field of one type,
        so one compiled signature serves every configuration)."""
        from ipmix_cli.augment import chains

        return chains.Recipe(
            recipe=chains.RECIPES.index(self.recipe), width=int(self.width), depth=int(self.depth),
            min_ops=int(self.min_ops), severity=float(self.severity), beta=float(self.beta),
            p_chain=float(RECIPES[self.recipe]["p_chain"]),
            partner_aug=0.5 if self.partner == "mixed" else 0.0,
            overflow=OVERFLOWS.index(self.overflow), alpha=1.0, skip_a=1.0, skip_b=1.0,
            ops=self.op_ids(), patch_sizes=self.patch_array())

    def op_ids(self) -> np.ndarray:
        ids = [row_id(self.recipe, name) for name in self.ops] or [0]
        return np.array(ids, dtype=np.int64)

    def patch_array(self) -> np.ndarray:
        return np.array(self.patch_sizes or (self.image_size,), dtype=np.int64)


def _as_tuple(value, kind):
    given = value
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    try:
        return tuple(kind(v) for v in value)
    except (TypeError, ValueError):
        what = "whole numbers" if kind is int else "names"
        raise IpmixError(f"cannot read {given!r} as a comma-separated list of {what}") from None


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _as_bool(name: str, value) -> bool:
    text = str(value).strip().lower()
    if isinstance(value, (bool, int)) and value in (0, 1) or text in _TRUE + _FALSE:
        return text in _TRUE
    raise IpmixError(f"{name} takes 0 or 1 (or true/false), not {value!r}")


def resolve_config(preset: str = "cifar", recipe: str = "ipmix", views: int = 1, **overrides) -> AugmentConfig:
    """The preset's table, the recipe's defaults, then the overrides (None = not given)."""
    if preset not in PRESETS:
        raise IpmixError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    if recipe not in RECIPES:
        raise IpmixError(f"unknown recipe {recipe!r} (choose from {', '.join(RECIPES)})")
    unknown = sorted(k for k in overrides if k not in OVERRIDES)
    if unknown:
        raise IpmixError(f"unknown augmentation option(s): {', '.join(unknown)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    p, r = PRESETS[preset], RECIPES[recipe]
    try:
        image_size = int(given.get("image_size", p["image_size"]))
        views = int(views)
        width = int(given.get("width", r.get("width", p["width"])))
        depth = int(given.get("depth", p["depth"]))
        min_ops = int(given.get("min_ops", r["min_ops"]))
        severity = float(given.get("severity", p["severity"]))
        beta = float(given.get("beta", p["beta"]))
        mixing_default = p["mixing_size"] if image_size == p["image_size"] else \
            int(round(image_size * p["mixing_size"] / p["image_size"]))
        mixing_size = int(given.get("mixing_size", mixing_default))
    except (TypeError, ValueError) as exc:
        raise IpmixError(f"bad augmentation option: {exc}") from None
    if "ops" in given:
        ops = _as_tuple(given["ops"], str)
    else:
        ops = r["all_ops"] if given.get("all_ops") else r["ops"]
    if "patch_sizes" in given:
        patch_sizes = _as_tuple(given["patch_sizes"], int)
    else:
        patch_sizes = tuple(s for s in p["patch_sizes"] if s < image_size) + (image_size,) \
            if image_size != p["image_size"] else p["patch_sizes"]
    cfg = AugmentConfig(
        preset=preset, recipe=recipe, views=views, image_size=image_size, width=width,
        depth=depth, min_ops=min_ops, severity=severity, beta=beta, ops=tuple(ops),
        patch_sizes=tuple(patch_sizes), partner=str(given.get("partner", p["partner"])),
        overflow=str(given.get("overflow", "clip")), crop=str(given.get("crop", p["crop"])),
        mixing_size=mixing_size, flip=_as_bool("flip", given.get("flip", True)),
    )
    validate(cfg)
    return cfg


def validate(cfg: AugmentConfig) -> None:
    """Reject bad settings with one line each, before any worker sees them."""
    if cfg.version != CONFIG_VERSION:
        raise IpmixError(f"augmentation settings version {cfg.version} is not supported (this is {CONFIG_VERSION})")
    if cfg.preset not in PRESETS:
        raise IpmixError(f"unknown preset {cfg.preset!r} (choose from {', '.join(PRESETS)})")
    if cfg.recipe not in RECIPES:
        raise IpmixError(f"unknown recipe {cfg.recipe!r} (choose from {', '.join(RECIPES)})")
    if cfg.views not in (1, 3):
        raise IpmixError(f"views must be 1 (one augmented view) or 3 (clean + two views for JSD), not {cfg.views}")
    if cfg.recipe == "none" and cfg.views != 1:
        raise IpmixError("recipe 'none' makes no augmented views: use views 1")
    if cfg.image_size < 8:
        raise IpmixError(f"image size must be at least 8 pixels, not {cfg.image_size}")
    if cfg.width < 1:
        raise IpmixError(f"width k must be at least 1, not {cfg.width}")
    if cfg.depth < 0:
        raise IpmixError(f"depth t must be 0 or more, not {cfg.depth}")
    if cfg.min_ops not in (0, 1):
        raise IpmixError(f"min_ops must be 0 (ops per chain 0..t, the code) or 1 (1..t, the paper), not {cfg.min_ops}")
    if cfg.min_ops > cfg.depth:
        raise IpmixError(f"depth t = {cfg.depth} is below the minimum of {cfg.min_ops} op per chain")
    if not 0.0 < cfg.severity <= 10.0:
        raise IpmixError(f"severity must be in (0, 10], not {cfg.severity:g}")
    if not cfg.beta > 0.0:
        raise IpmixError(f"beta must be greater than 0, not {cfg.beta:g}")
    bad = [o for o in cfg.ops if o not in OP_NAMES]
    if bad:
        raise IpmixError(f"unknown op {bad[0]!r} (choose from {', '.join(OP_NAMES)})")
    if cfg.recipe != "none" and not cfg.ops:
        raise IpmixError("the op list is empty")
    for s in cfg.patch_sizes:
        if s > cfg.image_size:
            raise IpmixError(f"patch size {s} is larger than the {cfg.image_size}x{cfg.image_size} image")
        if s < 2:
            raise IpmixError(f"patch size must be at least 2, not {s}")
    if cfg.recipe == "ipmix" and not cfg.patch_sizes:
        raise IpmixError("the patch size list is empty")
    if cfg.partner not in PARTNERS:
        raise IpmixError(f"unknown P-chain partner {cfg.partner!r} (choose from {', '.join(PARTNERS)})")
    if cfg.overflow not in OVERFLOWS:
        raise IpmixError(f"unknown overflow {cfg.overflow!r} (choose from {', '.join(OVERFLOWS)})")
    if cfg.crop not in CROPS:
        raise IpmixError(f"unknown crop {cfg.crop!r} (choose from {', '.join(CROPS)})")
    if not isinstance(cfg.flip, bool):
        raise IpmixError(f"flip must be true or false, not {cfg.flip!r}")
    if cfg.mixing_size < cfg.image_size:
        raise IpmixError(f"mixing size {cfg.mixing_size} is below the image size {cfg.image_size}")
