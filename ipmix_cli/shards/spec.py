"""What a shard build is asked for, what it makes, and how it runs.

- `BuildRequest`: the options as a caller gave them (None: take it from OUT's manifest, or the
  default for a new build).
- `BuildSpec`: the resolved build; everything that decides the bytes of a shard, plus where the
  inputs are. Its `config()` is the manifest's "config" and its `config_hash` the build's hash.
- `RunOptions`: how to run it (workers, backend, nodes, progress, cache folder, dry run); none of
  it changes a byte of the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ipmix_cli.common.errors import OptionError
from ipmix_cli.shardformat.fields import image_fields
from ipmix_cli.shards import limits
from ipmix_cli.shards import manifest as mf

# A new build's options when neither the caller nor a manifest gives them.
DEFAULTS = {"epochs": 1, "preset": "cifar", "recipe": "ipmix", "views": 1, "seed": 0}


@dataclass(frozen=True)
class BuildRequest:
    source: str | None = None
    fractals: str | Path | None = None
    preset: str | None = None
    recipe: str | None = None
    views: int | None = None
    seed: int | None = None
    format: str | None = None
    quality: int | None = None
    shards: int | None = None
    skip_bad: bool | None = None
    dali_index: bool | None = None
    augment_options: dict | None = None  # overrides of the preset's augmentation (see resolve_config)
    epochs: int | None = None            # how many epochs OUT holds when done
    extend_epochs: int | None = None     # or: this many more than OUT holds now
    overwrite: bool = False              # delete the build in OUT first

    # The options a resumed or extended build takes from OUT's manifest when not given.
    FROM_MANIFEST = ("source", "fractals", "preset", "recipe", "views", "seed", "format", "quality", "shards",
                     "skip_bad", "dali_index", "augment_options")

    def validate(self) -> None:
        for name, low, high in (("epochs", 1, limits.MAX_EPOCHS), ("extend_epochs", 1, limits.MAX_EPOCHS),
                                ("shards", 1, limits.MAX_SHARDS), ("seed", 0, limits.MAX_SEED)):
            value = getattr(self, name)
            if value is not None:
                check_count(name, value, low, high)
        if self.extend_epochs and self.overwrite:
            raise OptionError("{extend_epochs} adds to the build in OUT and {overwrite} deletes it: give one of them")

    def given(self) -> dict:
        return {k: getattr(self, k) for k in self.FROM_MANIFEST}


@dataclass(frozen=True)
class BuildSpec:
    """A resolved build. The fields are in the order of the manifest's "config"."""

    source: str
    fractals: str | None
    preset: str
    recipe: str
    views: int
    seed: int
    image_size: int
    format: str
    quality: int | None
    shards: int
    skip_bad: bool
    dali_index: bool
    augment: object            # the resolved AugmentConfig
    augment_options: dict      # the overrides that led to it, as given
    source_fingerprint: str
    mixing_fingerprint: str | None

    def config(self) -> dict:
        """The manifest's "config": JSON types only."""
        d = {name: getattr(self, name) for name in self.__dataclass_fields__}
        d["augment"] = self.augment.to_dict()
        return d

    @property
    def config_hash(self) -> str:
        return mf.config_hash(self.config())

    @property
    def crop(self) -> str:
        return self.augment.crop

    @property
    def fields(self) -> list[str]:
        """The image members of a sample: one view, or the JSD triple."""
        return image_fields(self.views, self.format)


@dataclass(frozen=True)
class RunOptions:
    out: Path
    workers: int = 1
    backend: str = "joblib"           # joblib: processes on this machine; dask: a Dask cluster
    scheduler: str | None = None      # the Dask scheduler's address
    num_nodes: int = 1                # machines sharing the build (each runs its part)
    node_rank: int = 0
    progress: bool = True
    log: Callable[[str], None] | None = None
    cache_dir: Path | None = None     # the mixing bank's cache (and remote sources' copies)
    dry_run: bool = False
    pilot_samples: int = 64           # samples the dry run times
    remote: object = None             # a RemoteOut when OUT is a URL; `out` is then its local staging folder

    def validate(self) -> None:
        check_count("workers", self.workers, 1, limits.MAX_WORKERS)
        check_count("num_nodes", self.num_nodes, 1, limits.MAX_NODES)
        if not 0 <= int(self.node_rank) < int(self.num_nodes):
            raise OptionError("{node_rank} must be in 0..{last} (got {rank})", last=int(self.num_nodes) - 1,
                              rank=self.node_rank)
        if self.backend not in ("joblib", "dask"):
            raise OptionError("{backend} must be joblib or dask, not {value}", value=self.backend)
        if self.backend == "dask" and not self.scheduler:
            raise OptionError("{backend} dask needs {scheduler} ADDRESS (e.g. tcp://10.0.0.1:8786)")

    def say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)

    @property
    def shares_out_with_workers(self) -> bool:
        """Dask workers may run on other machines: what they read must lie in OUT, which they share."""
        return self.backend == "dask" and not self.dry_run and self.remote is None

    @property
    def shown(self):
        """OUT as the user gave it: the URL of a remote OUT, not its staging folder."""
        return self.remote.url if self.remote is not None else self.out


def check_count(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise OptionError("{%s} must be a whole number in {low}..{high}, not {value}" % name,
                          low=low, high=f"{high:,}", value=repr(value))
