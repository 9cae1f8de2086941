"""Find and load a shard manifest (local or by URL) and resolve where each shard lives."""

from __future__ import annotations

import json
import os

from ipmix_cli.common.errors import IpmixError
from ipmix_cli.shardformat.manifest import MANIFEST, READABLE_VERSIONS, Manifest, ManifestError

from ipmix_cli.common.objstore import is_store_url
from .remote import read_manifest


def find_manifest(path) -> str:
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, MANIFEST)
    if not os.path.isfile(path):
        raise IpmixError(f"no shard manifest at {path} (build shards with `ipmix shards build`)")
    return path


def _read_remote(url: str) -> dict:
    from .reader import read_url

    try:
        return json.loads(read_url(url))
    except (OSError, ValueError) as exc:
        raise IpmixError(f"cannot read shard manifest {url}: {exc}") from None


def remote_base(url: str) -> str | None:
    """The folder URL of an http(s) manifest URL; None where it can't be derived (pipe:)."""
    if url.startswith(("http://", "https://")) and "/" in url.split("://", 1)[1]:
        return url.rsplit("/", 1)[0] + "/"
    return None


def load_manifest(path, storage_options: dict | None = None) -> tuple[Manifest, str]:
    """(manifest, the folder or URL shard paths are relative to). IpmixError if unusable.
    `path` is a shard folder, its manifest.json, a URL of the manifest (http(s)://, pipe:), or an
    object-store URL (s3://...) of the folder or of its manifest.json."""
    if is_store_url(path):
        doc, root = read_manifest(str(path), storage_options)
    elif isinstance(path, str) and (path.startswith("pipe:") or "://" in path):
        doc = _read_remote(path)
        root = remote_base(path)
    else:
        path = find_manifest(path)
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except (OSError, ValueError) as exc:
            raise IpmixError(f"cannot read shard manifest {path}: {exc}") from None
        root = os.path.dirname(os.path.abspath(path))
    try:
        manifest = Manifest.from_json(doc)
    except ManifestError as exc:
        raise IpmixError(f"{path}: {exc}") from None
    if manifest.schema_version not in READABLE_VERSIONS:
        raise IpmixError(f"{path}: unsupported manifest schema_version {manifest.schema_version!r}")
    if not manifest.complete:
        raise IpmixError(f"{path}: the shard build is not complete; finish it (run the same build again)")
    return manifest, root


def shard_url(root: str | None, rel: str, base_url: str | None) -> str:
    """base_url + rel (`{path}` inside base_url is replaced instead), or else rel under root
    (a local folder or the folder URL of a remote manifest)."""
    if base_url is None:
        if root is None:
            raise IpmixError("the manifest was read from a pipe: URL; pass base_url (e.g. 'pipe:curl -s https://host/run/{path}')")
        return root + rel if "://" in root else os.path.join(root, rel)
    if "{path}" in base_url:
        return base_url.replace("{path}", rel)
    return base_url + rel
