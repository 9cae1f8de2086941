"""Load and check a shard manifest (contracts D) and resolve where each shard lives."""

from __future__ import annotations

import json
import os

from ipmix_cli.errors import IpmixError

from .decode import DECODERS


def find_manifest(path) -> str:
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "manifest.json")
    if not os.path.isfile(path):
        raise IpmixError(f"no shard manifest at {path} (build shards with `ipmix shards build`)")
    return path


def load_manifest(path) -> tuple[dict, str]:
    """(manifest, the folder shard paths are relative to). IpmixError if it is unusable."""
    path = find_manifest(path)
    try:
        with open(path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError) as exc:
        raise IpmixError(f"cannot read shard manifest {path}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != "ipmix-shards":
        raise IpmixError(f"{path} is not an ipmix shard manifest")
    if manifest.get("schema_version") != 1:
        raise IpmixError(f"{path}: unsupported manifest schema_version {manifest.get('schema_version')!r}")
    if not manifest.get("complete"):
        raise IpmixError(f"{path}: the shard build is not complete; finish it (run the same build again)")
    for key in ("fields", "epochs", "image_size", "num_classes"):
        if key not in manifest:
            raise IpmixError(f"{path}: manifest lacks {key!r}")
    fields = manifest["fields"]
    if not fields or any(f.rsplit(".", 1)[-1].lower() not in DECODERS for f in fields):
        raise IpmixError(f"{path}: unsupported fields {fields} (images must be png, jpg, webp or npy)")
    epochs = manifest["epochs"]
    if not epochs:
        raise IpmixError(f"{path}: the manifest lists no epochs")
    for i, ep in enumerate(epochs):
        if not ep.get("shards"):
            raise IpmixError(f"{path}: materialized epoch {i} lists no shards")
    return manifest, os.path.dirname(os.path.abspath(path))


def shard_url(root: str, rel: str, base_url: str | None) -> str:
    """Local path under root, or base_url + rel (`{path}` inside base_url is replaced instead)."""
    if base_url is None:
        return os.path.join(root, rel)
    if "{path}" in base_url:
        return base_url.replace("{path}", rel)
    return base_url + rel
