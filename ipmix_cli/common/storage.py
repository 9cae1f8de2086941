"""Where a data path a user gives lives: on this machine, behind a `pipe:` command, or at a URL.

    where = classify("s3://bucket/shards")   # Where(kind="url", scheme="s3", ...)
    require_local("s3://bucket/shards", "--out", "OUT of 'shards build'")  # IpmixError

Local paths stay plain paths (today's fast path) and a file:// URL is its path. Any other
`scheme://...` is never taken for a local folder. Where a command reads or writes only local
paths so far, require_local refuses it with one line that says what must be local (and, for a
scheme fsspec does not know, which stores there are and their extras). check_scheme is the check for places that
read URLs: an unknown scheme, or a store whose filesystem package is missing, names the extra.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass

from ipmix_cli.common.errors import IpmixError

# Object stores ipmix offers as extras: scheme -> (filesystem package, extra name).
EXTRAS = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
    "az": ("adlfs", "azure"),
    "abfs": ("adlfs", "azure"),
    "abfss": ("adlfs", "azure"),
}
EXTRAS_HINT = "s3:// (pip install 'ipmix[s3]'), gs:// (pip install 'ipmix[gcs]') or az:// (pip install 'ipmix[azure]')"

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class Where:
    text: str          # the path as the user gave it
    kind: str          # "local", "pipe" or "url"
    scheme: str = ""   # the URL scheme, lower case ("" unless kind == "url")

    @property
    def local_path(self) -> str:
        """The path on this machine (a file:// URL gives its path)."""
        return self.text[len("file://"):] if self.scheme == "file" else self.text


def classify(text) -> Where:
    text = str(text)
    if text.startswith("pipe:"):
        return Where(text, "pipe")
    m = _URL.match(text)
    if not m:
        return Where(text, "local")
    scheme = m.group(1).lower()
    return Where(text, "local" if scheme == "file" else "url", scheme)


def _unknown(scheme: str) -> bool:
    """True for a scheme neither ipmix's extras nor fsspec know. Without fsspec installed
    (it comes with torch, dask and every extra) only the extras' schemes are known for sure,
    so nothing else is called unknown."""
    if scheme in EXTRAS:
        return False
    try:
        from fsspec.registry import known_implementations, registry
    except ImportError:
        return False
    return scheme not in known_implementations and scheme not in registry


def check_scheme(where: Where, option: str, shown: str = "") -> None:
    """IpmixError unless the URL's filesystem is known and its package installed."""
    if where.kind != "url":
        return
    shown = shown or where.text
    if _unknown(where.scheme):
        raise IpmixError(f"{option} {shown}: unknown storage scheme '{where.scheme}://'; "
                         f"give a local path, or {EXTRAS_HINT}")
    package, extra = EXTRAS.get(where.scheme, (None, None))
    if package is not None and importlib.util.find_spec(package) is None:
        raise IpmixError(f"{option} {shown}: {where.scheme}:// needs the {package} package: "
                         f"pip install 'ipmix[{extra}]'")


def require_local(text, option: str, role: str, *, keep: tuple[str, ...] = (), given: str = "",
                  remote: bool = False) -> str:
    """`text` as a local path; IpmixError for a URL or a `pipe:` command, except the kinds or
    schemes in `keep` (e.g. ("pipe", "http", "https")), which come back unchanged, and, with
    `remote`, URLs of an object store (EXTRAS) whose package is installed, also unchanged.
    `role` names what must be local in the message, e.g. "OUT of 'shards build'"; `given` is
    the whole value shown there when `text` is a part of it."""
    where = classify(text)
    shown = given or where.text
    if where.kind == "local":
        return where.local_path
    if where.kind in keep or where.scheme in keep:
        return where.text
    if remote and where.scheme in EXTRAS:
        check_scheme(where, option, shown)
        return where.text
    if where.kind == "pipe":
        raise IpmixError(f"{option} {shown}: {role} must be a local path (pipe: commands are read only "
                         f"by 'train --shards' and ShardLoader)")
    if _unknown(where.scheme):
        raise IpmixError(f"{option} {shown}: unknown storage scheme '{where.scheme}://' (the stores ipmix "
                         f"knows: {EXTRAS_HINT}); {role} must be a local path for now")
    # A known store is refused here whether or not its package is installed: installing it
    # would not help until this command reads or writes object storage.
    raise IpmixError(f"{option} {shown}: {role} must be a local path for now "
                     f"(ipmix does not read or write object storage there yet)")


# Source specs whose part after the colon is a path (see ipmix_cli.data.sources).
PATH_SOURCE_KINDS = ("cifar10", "cifar100", "cifar10-test", "cifar100-test", "folder", "wds")
# Those whose path is a folder that localize_source can copy from a prefix URL.
FOLDER_SOURCE_KINDS = ("cifar10", "cifar100", "cifar10-test", "cifar100-test", "folder")
# What a build may read from a prefix URL: those, and a folder of WebDataset shards (wds:URL).
BUILD_SOURCE_KINDS = FOLDER_SOURCE_KINDS + ("wds",)


def require_local_source(spec: str, option: str, role: str, *, remote_folders: bool = False,
                         remote_kinds: tuple[str, ...] = ("folder",)) -> str:
    """A source spec (digits, cifar10:PATH, folder:PATH, wds:PATTERN or a bare folder) whose path
    is local; the spec comes back with a file:// URL turned into its path. With
    `remote_folders`, a folder (folder:URL or a bare URL; and the other `remote_kinds`) may be a
    URL (see localize_source)."""
    kind, sep, rest = spec.partition(":")
    if sep and kind in PATH_SOURCE_KINDS:
        remote = remote_folders and kind in remote_kinds
        _check_not_pattern(kind, rest, option, spec)
        return f"{kind}:{require_local(rest, option, f'{role} ({kind}:PATH)', given=spec, remote=remote)}"
    if spec in ("digits", "digits:train", "digits:test"):
        return spec
    return require_local(spec, option, role, remote=remote_folders)


# --------------------------------------------------------------------------- reading a folder

def fetch_folder(url: str, cache_root, option: str, options: dict | None = None) -> str:
    """A local copy of every object under the prefix `url` (or of the one object at `url`),
    as a folder path; listed and downloaded through objstore.Prefix (its retries, its one-line
    errors, `options` for the store).

    The copy lives in cache_root/remote/<key>, where the key hashes the URL and one listing of
    the prefix (names, sizes, ETags): an unchanged prefix is listed once and not downloaded
    again; a changed object gives a new copy. The copy appears by one rename, so a killed
    download never leaves a copy that looks complete; processes sharing cache_root download a
    copy once (the first holds a lock on the folder while it downloads, the others then find it)."""
    import hashlib
    import json
    from pathlib import Path

    from ipmix_cli.common.objstore import Prefix

    prefix = Prefix(url, option, options)
    listing = prefix.listing()
    folder, _, name = prefix.url.rpartition("/")
    if not listing and "/" in folder.partition("://")[2]:  # perhaps the URL of one object
        prefix = Prefix(folder, option, options)
        entry = prefix.entry(name)
        listing = {name: entry} if entry is not None else {}
    files = []
    for rel, entry in sorted(listing.items()):
        if rel.endswith("/"):  # a folder marker some tools write
            continue
        if any(part in ("", ".", "..") for part in rel.split("/")):
            raise IpmixError(f"{option} {url}: object {prefix.path(rel)!r} has a name that is not a safe relative path")
        files.append((rel, entry.size, entry.etag))
    if not files:
        raise IpmixError(f"{option} {url}: no objects under this prefix")

    key = hashlib.sha256(json.dumps([url, files]).encode()).hexdigest()[:32]
    dest = Path(cache_root) / "remote" / key
    if dest.is_dir():
        return str(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _folder_lock(dest.parent):
            if not dest.is_dir():  # not made by another process while this one waited
                _download(prefix, files, dest, f"{option} {url}")
    except OSError as exc:
        raise IpmixError(f"{option} {url}: download failed: {_reason(exc)}") from None
    return str(dest)


def _download(prefix, files, dest, shown: str) -> None:
    """The objects `files` ((name, size, tag) under `prefix`) into the new folder `dest`, by
    way of a temporary folder renamed once every size is checked."""
    import os
    import shutil

    tmp = dest.with_name(f"{dest.name}.part-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for rel, *_ in files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        prefix.get_files([f[0] for f in files], [tmp / f[0] for f in files])
        for rel, size, _ in files:
            got = (tmp / rel).stat().st_size
            if got != size:
                raise IpmixError(f"{shown}: {rel} arrived with {got} bytes, the listing said {size}; "
                                 f"run the command again")
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():  # not another process (where there is no lock) having finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _folder_lock(folder):
    """A context manager holding an exclusive lock on `folder` (an advisory flock, released
    when the holder exits or is killed); where the platform has none, a lock that holds nothing."""
    import contextlib
    import os

    try:
        import fcntl
    except ImportError:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def locked():
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    return locked()


def etag(info: dict) -> str:
    """The version tag of an object in a listing, as its store spells it (S3's ETag, GCS's md5Hash)."""
    return str(info.get("ETag") or info.get("etag") or info.get("md5Hash") or "")


def _reason(exc: Exception) -> str:
    """One line for an error of a storage client."""
    if isinstance(exc, FileNotFoundError):
        return f"not found ({str(exc).strip().splitlines()[0] if str(exc).strip() else 'no such bucket'})"
    if isinstance(exc, PermissionError):
        return ("access denied (check the credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE "
                "or the store's own)")
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def localize(path, cache_root, option: str):
    """`path` itself when local; the local copy of a folder URL (see fetch_folder)."""
    if path is None or classify(path).kind != "url":
        return path
    return fetch_folder(str(path), cache_root, option)


def _check_not_pattern(kind: str, rest: str, option: str, spec: str) -> None:
    """A shard pattern (brace range or glob) is expanded on local files only; in a store the
    source is the prefix that holds the shards."""
    if kind == "wds" and classify(rest).kind == "url" and any(c in rest for c in "{*?["):
        raise IpmixError(f"{option} {spec}: patterns are expanded for local files only; "
                         f"give the prefix that holds the shards (wds:{rest.split('{')[0].rsplit('/', 1)[0]}/)")


def localize_source(spec: str, cache_root, option: str = "--source", kinds: tuple[str, ...] = ("folder",)) -> str:
    """A source spec whose folder: (or bare folder) URL, or that of another kind in `kinds`
    (e.g. cifar10-test:URL of the extracted batches folder), is replaced by its local copy."""
    kind, sep, rest = spec.partition(":")
    if sep and kind in kinds and classify(rest).kind == "url":
        _check_not_pattern(kind, rest, option, spec)
        return f"{kind}:" + fetch_folder(rest, cache_root, option)
    if classify(spec).kind == "url":
        return "folder:" + fetch_folder(spec, cache_root, option)
    return spec
