"""A source and a mixing set in a bucket, as Dask workers open them when OUT is a URL.

The client reads a bucket input from its own local copy (storage.fetch_folder), which other
machines of a cluster without a shared disk do not have. So the build context carries the
input's URL instead of that path, and each worker fetches its own copy into its cache folder
(`--cache-dir`, a folder on every machine, else the worker's default cache folder) when it
loads the context: once per machine, by the same copy-then-rename. The copy must come from
the same listing the client saw (its folder is named after it), so every machine reads the
same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ipmix_cli.common import storage
from ipmix_cli.common.errors import IpmixError


@dataclass(frozen=True)
class BucketInput:
    """One input given as a URL: `given` as the user wrote it (a source spec or the --fractals
    URL) and `copy`, the name of the client's copy (fetch_folder's key of its listing)."""

    option: str
    given: str
    copy: str

    @classmethod
    def of(cls, option: str, given: str, local: str) -> BucketInput:
        """The input `given`, which the client opened from `local` (a spec or a path)."""
        return cls(option, given, Path(local.partition(":")[2] if option == "--source" else local).name)

    def fetch(self, cache_root) -> str:
        """This machine's copy: the localized source spec, or the mixing set's folder."""
        if self.option == "--source":
            local = storage.localize_source(self.given, cache_root, kinds=storage.BUILD_SOURCE_KINDS)
            name = Path(local.partition(":")[2]).name
        else:
            local = storage.fetch_folder(self.given, cache_root, self.option)
            name = Path(local).name
        if name != self.copy:
            raise IpmixError(f"{self.option} {self.given}: its objects changed while the build ran (a worker "
                             f"listed other objects than the build did); run the command again")
        return local


@dataclass(frozen=True)
class WorkerInputs:
    """The bucket inputs a Dask worker fetches for itself (None where the input is not a URL)."""

    source: BucketInput | None
    fractals: BucketInput | None
    mixing_size: int
    cache_dir: str | None  # --cache-dir as given; None: each worker's default cache folder

    def _cache_root(self) -> Path:
        from ipmix_cli.common.cachedir import default_cache_dir

        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    def open_source(self):
        from ipmix_cli.data.sources import open_source

        return open_source(self.source.fetch(self._cache_root()))

    def open_bank(self):
        from ipmix_cli.augment import MixingBank

        folder = self.fractals.fetch(self._cache_root())
        return MixingBank.from_folder(folder, size=self.mixing_size, cache_dir=self.cache_dir)
