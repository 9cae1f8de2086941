"""OUT/manifest.json: the resolved configuration, its hash, and the per-epoch shard list.

The hash covers everything that decides the bytes of a shard (augmentation config, seed,
format, shard count, source and mixing-set fingerprints...) but not paths and not the
number of epochs, so a build can be resumed from another mount point and extended.
Per-shard records live in OUT/.records/ (one small JSON per finished shard); the manifest
is rebuilt from them and marked complete only when every shard of every epoch has one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path

from fractalgen.files import atomic_write_bytes, atomic_write_json
from ipmix_cli.common.errors import OptionError
from ipmix_cli.shardformat.manifest import (MANIFEST, READABLE_VERSIONS, SCHEMA, SCHEMA_VERSION, EpochEntry, Manifest,
                                            ManifestError, ShardRecord)
from ipmix_cli.shards.plan import epoch_folder

RECORDS = ".records"
# Paths (where things are, not what they are) and derived extras that never change a shard.
# What a build is made of is hashed; how it was asked for is not (`augment` holds the resolved
# augmentation, so the overrides that led to it need not be hashed again).
UNHASHED = ("source", "fractals", "dali_index", "augment_options")


def config_hash(config: dict) -> str:
    keyed = {k: v for k, v in config.items() if k not in UNHASHED}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def config_differences(old: dict, new: dict) -> list[str]:
    keys = sorted((set(old) | set(new)) - set(UNHASHED))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            sub = [f"{k}.{s}" for s in sorted(set(a) | set(b)) if a.get(s) != b.get(s)]
            out.extend(sub)
        else:
            out.append(f"{k}: {_short(a)} -> {_short(b)}")
    return out


def _short(v) -> str:
    s = json.dumps(v)
    return s if len(s) <= 24 else s[:12] + "…"


def versions() -> dict:
    return dict(_versions())


@functools.lru_cache(maxsize=1)
def _versions() -> dict:
    # package metadata lookups cost about a millisecond each; installed versions do not change
    out = {"python": platform.python_version()}
    for dist in ("ipmix", "numpy", "pillow", "numba", "webdataset"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def load_manifest(out) -> dict | None:
    path = Path(out) / MANIFEST
    if not path.exists():
        return None
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise OptionError("{path} is unreadable ({why}); use {overwrite} to rebuild", path=str(path), why=exc) from None
    if not isinstance(m, dict) or m.get("schema") != SCHEMA:
        raise OptionError("{path} is not an ipmix shards manifest; choose another {out} or use {overwrite}",
                          path=str(path))
    if m.get("schema_version") != SCHEMA_VERSION:
        older = m.get("schema_version") in READABLE_VERSIONS
        raise OptionError("{path} has schema version {found}, this ipmix writes {version}{note}; use {overwrite} "
                          "to rebuild", path=str(path), found=m.get("schema_version"), version=SCHEMA_VERSION,
                          note=" (its shards can still be read, verified and trained on, not extended)"
                          if older else "")
    return m


def record_path(out, epoch: int, shard: int) -> Path:
    return Path(out) / RECORDS / epoch_folder(epoch) / f"shard-{shard:05d}.json"


def read_record(out, epoch: int, shard: int) -> dict | None:
    """The shard's record (`ShardRecord`'s document), or None when there is none or it is damaged."""
    path = record_path(out, epoch, shard)
    try:
        return ShardRecord.from_json(json.loads(path.read_text())).to_json()
    except FileNotFoundError:
        return None
    except (OSError, ValueError, ManifestError):
        return None  # a damaged record only means the shard is rebuilt


def write_record(out, record: dict) -> None:
    """Write a shard's record by rename, without fsync: a record lost or emptied by a power
    cut only makes the resume check rebuild that shard (reads treat it as missing), while
    the shard's own bytes are always synced before its rename."""
    doc = ShardRecord.from_json(record).to_json()  # a record that would not read back is never written
    path = record_path(out, doc["epoch"], doc["shard"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(doc, sort_keys=True).encode(), fsync=False)


def base_manifest(config: dict, *, num_epochs: int, plan, classes, fields, source: dict, mixing: dict) -> dict:
    return Manifest(
        schema=SCHEMA,
        schema_version=SCHEMA_VERSION,
        complete=False,
        config=config,
        config_hash=config_hash(config),
        seed=config["seed"],
        image_size=config["image_size"],
        views=config["views"],
        format=config["format"],
        quality=config["quality"],
        fields=tuple(fields),
        classes=tuple(classes),
        num_classes=len(classes),
        num_epochs=num_epochs,
        samples_per_epoch=plan.samples_per_epoch,
        source_samples=plan.n_source,
        pads_per_epoch=plan.pads_per_epoch,
        shards_per_epoch=plan.shards,
        samples_per_shard=plan.samples_per_shard,
        epochs=(),
        bad_samples=[],
        totals={"shards": 0, "samples": 0, "bytes": 0},
        source=source,
        mixing_set=mixing,
        versions=versions(),
    ).to_json()


def epoch_entry(epoch: int, records: list[dict]) -> dict:
    shards = [ShardRecord.from_json(r).entry() for r in records]
    return EpochEntry.of_shards(epoch, f"{epoch_folder(epoch)}/wids-index.json", shards).to_json()


def write_manifest(out, manifest: dict) -> None:
    path = Path(out) / MANIFEST
    atomic_write_json(path, manifest)
    try:
        os.chmod(path, 0o644)  # readable by the training jobs of other users, like the shards
    except OSError:
        pass
