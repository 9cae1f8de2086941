"""The IPMix augmentation engine: PIL-exact ops, P-level patch mixing, chains and presets as
Numba kernels driven by a counter-based generator (see docs/augment.md)."""

from ipmix_cli.augment.api import Augmenter, ipmix_one, view_state
from ipmix_cli.augment.bank import MixingBank
from ipmix_cli.augment.config import AugmentConfig, resolve_config

__all__ = ["AugmentConfig", "Augmenter", "MixingBank", "ipmix_one", "resolve_config", "view_state"]
