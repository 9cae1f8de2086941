"""The IPMix augmentation engine: PIL-exact ops, P-level patch mixing, chains and presets as
Numba kernels driven by a counter-based generator (see docs/augment.md).

Importing the package loads no kernel, and neither does `Augmenter` for the `none` recipe's pad
crop: a build that mixes nothing never imports Numba (see plain_crop.py)."""

from pathlib import Path

from fractalgen.numba_cache import drop_stale_cache

drop_stale_cache(Path(__file__).resolve().parent, __name__)

from ipmix_cli.augment.api import Augmenter, ipmix_one, view_state  # noqa: E402
from ipmix_cli.augment.bank import MixingBank  # noqa: E402
from ipmix_cli.augment.config import AugmentConfig, resolve_config  # noqa: E402

__all__ = ["AugmentConfig", "Augmenter", "MixingBank", "ipmix_one", "resolve_config", "view_state"]
