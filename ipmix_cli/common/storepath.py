"""A shard folder in object storage, seen through the few pathlib calls that `shards verify`,
`inspect` and `preview` make on a local folder.

    root = as_path("s3://bucket/run/shards")     # a StorePath (a local path gives a Path)
    (root / "manifest.json").read_text()
    with (root / "epoch-0000/ipmix-e0000-00000.tar").open("rb") as f: ...

The prefix is listed once (names and sizes); `is_file`, `is_dir`, `exists`, `stat` and `glob`
answer from that listing, and `open` reads a whole object with one GET into memory.
"""

from __future__ import annotations

import fnmatch
import io
import posixpath
from pathlib import Path
from types import SimpleNamespace

from ipmix_cli.common.objstore import Prefix, is_store_url


class StoreFolder:
    """One listing of every object under a prefix URL (Prefix.listing)."""

    def __init__(self, url: str, option: str = "OUT", options: dict | None = None):
        self.prefix = Prefix(url, option, options)
        self.url = self.prefix.url
        self.sizes = {rel: entry.size for rel, entry in self.prefix.listing().items()}


class StorePath:
    def __init__(self, folder: StoreFolder, rel: str = ""):
        self.folder = folder
        self.rel = posixpath.normpath(rel) if rel else ""
        if self.rel == ".":
            self.rel = ""

    def __truediv__(self, part) -> StorePath:
        return StorePath(self.folder, posixpath.join(self.rel, str(part)))

    def __str__(self) -> str:
        return f"{self.folder.url}/{self.rel}" if self.rel else self.folder.url

    def __repr__(self) -> str:
        return f"StorePath({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, StorePath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __lt__(self, other: StorePath) -> bool:
        return str(self) < str(other)

    @property
    def name(self) -> str:
        return posixpath.basename(self.rel) if self.rel else self.folder.url.rsplit("/", 1)[-1]

    @property
    def parent(self) -> StorePath:
        return StorePath(self.folder, posixpath.dirname(self.rel))

    def with_name(self, name: str) -> StorePath:
        return self.parent / name

    def relative_to(self, other: StorePath) -> str:
        return posixpath.relpath(self.rel, other.rel or ".")

    def is_file(self) -> bool:
        return self.rel in self.folder.sizes

    def is_dir(self) -> bool:
        prefix = f"{self.rel}/" if self.rel else ""
        return any(name.startswith(prefix) for name in self.folder.sizes)

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def stat(self):
        if not self.is_file():
            raise FileNotFoundError(str(self))
        return SimpleNamespace(st_size=self.folder.sizes[self.rel])

    def glob(self, pattern: str):
        """Files and folders directly under this one whose names match `pattern`."""
        prefix = f"{self.rel}/" if self.rel else ""
        children = {name[len(prefix):].split("/", 1)[0] for name in self.folder.sizes if name.startswith(prefix)}
        return [self / child for child in sorted(children) if fnmatch.fnmatchcase(child, pattern)]

    def read_bytes(self) -> bytes:
        try:
            return self.folder.prefix.read(self.rel, self.folder.sizes.get(self.rel))
        except FileNotFoundError:
            raise FileNotFoundError(f"{self} is not in the store") from None

    def read_text(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.read_bytes().decode(encoding, errors)

    def open(self, mode: str = "rb"):
        if mode != "rb":
            raise ValueError(f"a StorePath is opened for reading only ('rb'), not {mode!r}")
        return io.BytesIO(self.read_bytes())


def as_path(out, option: str = "OUT", options: dict | None = None):
    """A Path for a local folder or file; a StorePath for an object-store URL (of a folder, or
    of a manifest .json in it)."""
    if not is_store_url(out):
        return Path(out)
    url = str(out)
    if url.endswith(".json"):
        folder, name = url.rsplit("/", 1)
        return StorePath(StoreFolder(folder, option, options), name)
    return StorePath(StoreFolder(url, option, options))
