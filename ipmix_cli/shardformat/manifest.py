"""OUT/manifest.json as both sides read it: the manifest, its epochs and their shards (and the
per-shard records a build keeps in OUT/.records) as frozen dataclasses with `from_json` /
`to_json`, and `validate` for the manifest.

`from_json` takes the parsed JSON document and checks what every reader relies on (the schema
name, the types of the keys present, fields, image size, classes, and an epoch list whose
shards have a path and a count); it raises `ManifestError` naming the first fault. `validate`
lists everything else a finished build promises (the keys a build writes, a readable version,
complete, fields that match views and format, counts that add up). `to_json` gives back the
same document: a key absent when read stays absent, keys this version does not know are kept,
so a manifest written by ipmix comes back byte for byte (written with `sort_keys`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields as dataclass_fields

from ipmix_cli.common.errors import IpmixError
from ipmix_cli.shardformat.fields import FORMATS, extension, image_format

SCHEMA = "ipmix-shards"
# 2: shard files named ipmix-eEEEE-SSSSS.tar (unique within a build); 1 named them
# shard-SSSSS.tar in every epoch folder. Readers take both; builds write and resume 2 only.
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"


class ManifestError(IpmixError):
    """A manifest that no reader can use; the message names the first fault."""


def _is(value, kind) -> bool:
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _typed(doc: dict, where: str, types: dict, required: tuple, nullable=()) -> dict:
    """The known keys of `doc` after checking their types (None only for those in `nullable`);
    ManifestError on the first fault."""
    for key in required:
        if key not in doc:
            raise ManifestError(f"{where} lacks {key!r}")
    for key, kind in types.items():
        if key in doc and not (doc[key] is None and key in nullable) and not _is(doc[key], kind):
            raise ManifestError(f"{where} {key!r} should be {kind.__name__}, is {type(doc[key]).__name__}")
    return {k: doc[k] for k in types if k in doc}


@dataclass(frozen=True)
class ShardEntry:
    """One shard as the manifest lists it: where it is (relative to OUT), how many samples,
    its size and sha256."""

    path: str
    count: int
    bytes: int | None = None
    sha256: str | None = None

    _TYPES = {"path": str, "count": int, "bytes": int, "sha256": str}

    def to_json(self) -> dict:
        return {"path": self.path, "count": self.count, "bytes": self.bytes, "sha256": self.sha256}

    @classmethod
    def from_json(cls, doc, where: str) -> ShardEntry:
        if not isinstance(doc, dict) or not _is(doc.get("path"), str) or not _is(doc.get("count"), int) \
                or doc["count"] < 0:
            raise ManifestError(f"{where} has a shard entry without a path and count: {doc!r}")
        return cls(**_typed(doc, where, cls._TYPES, (), ("bytes", "sha256")))


@dataclass(frozen=True)
class ShardRecord:
    """OUT/.records/epoch-EEEE/shard-SSSSS.json: what the worker that wrote a shard knows of it,
    written after the shard's fsync and rename. A resumed build keeps a shard whose record and
    file agree; the manifest lists `entry()` of each."""

    epoch: int
    shard: int
    path: str
    count: int
    bytes: int
    sha256: str
    md5: str | None = None  # by older builds (their wids indexes listed it), and to stores that keep no SHA-256
    config_hash: str | None = None  # of the build that wrote the shard
    bad_samples: list | None = None  # source pictures skipped, and what stood in for them
    dali_index: bool | None = None  # the shard's DALI .idx was written with it, before this record
    absent: frozenset = frozenset()  # optional keys the document did not have

    _TYPES = {"epoch": int, "shard": int, "path": str, "count": int, "bytes": int, "sha256": str, "md5": str,
              "config_hash": str, "bad_samples": list, "dali_index": bool}
    _OPTIONAL = ("md5", "config_hash", "bad_samples", "dali_index")

    def to_json(self) -> dict:
        doc = {k: getattr(self, k) for k in self._TYPES}
        return {k: v for k, v in doc.items() if k not in self.absent}

    @classmethod
    def from_json(cls, doc) -> ShardRecord:
        if not isinstance(doc, dict):
            raise ManifestError(f"a shard record is a JSON object, not {type(doc).__name__}")
        required = tuple(k for k in cls._TYPES if k not in cls._OPTIONAL)
        known = _typed(doc, "shard record", cls._TYPES, required)
        return cls(absent=frozenset(k for k in cls._OPTIONAL if k not in doc), **known)

    def entry(self) -> ShardEntry:
        return ShardEntry(self.path, self.count, self.bytes, self.sha256)


@dataclass(frozen=True)
class EpochEntry:
    """One materialized epoch: its shards in order, its wids index, its totals."""

    epoch: int
    shards: tuple[ShardEntry, ...]
    index: str | None = None  # the wids index, relative to OUT
    samples: int | None = None
    bytes: int | None = None
    absent: frozenset = frozenset()  # keys the document did not have (kept out of to_json)

    _TYPES = {"epoch": int, "index": str, "samples": int, "bytes": int}

    def to_json(self) -> dict:
        doc = {"epoch": self.epoch, "index": self.index, "samples": self.samples, "bytes": self.bytes,
               "shards": [s.to_json() for s in self.shards]}
        return {k: v for k, v in doc.items() if k not in self.absent}

    @classmethod
    def from_json(cls, doc, i: int) -> EpochEntry:
        where = f"materialized epoch {i}"
        if not isinstance(doc, dict) or not isinstance(doc.get("shards"), list) or not doc["shards"]:
            raise ManifestError(f"{where} lists no shards")
        known = _typed(doc, where, cls._TYPES, ("epoch",))
        shards = tuple(ShardEntry.from_json(s, where) for s in doc["shards"])
        absent = frozenset(k for k in ("index", "samples", "bytes") if k not in doc)
        return cls(shards=shards, absent=absent, **known)

    @classmethod
    def of_shards(cls, epoch: int, index: str, shards: list[ShardEntry]) -> EpochEntry:
        return cls(epoch, tuple(shards), index, sum(s.count for s in shards), sum(s.bytes for s in shards))


# The keys a build writes, in the order `Manifest` holds them, with their JSON types.
_MANIFEST_TYPES = {
    "schema": str, "schema_version": int, "complete": bool, "config": dict, "config_hash": str,
    "seed": int, "image_size": int, "views": int, "format": str, "quality": int, "fields": list,
    "classes": list, "num_classes": int, "num_epochs": int, "samples_per_epoch": int,
    "source_samples": int, "pads_per_epoch": int, "shards_per_epoch": int, "samples_per_shard": int,
    "epochs": list, "bad_samples": list, "totals": dict, "source": dict, "mixing_set": dict,
    "versions": dict,
}
# What readers need; `validate` asks for the rest of what a finished build holds.
_READ_REQUIRED = ("schema", "fields", "epochs", "image_size", "num_classes")
_BUILD_REQUIRED = ("schema", "schema_version", "complete", "config", "config_hash", "seed", "image_size",
                   "views", "format", "fields", "classes", "num_classes", "samples_per_epoch",
                   "shards_per_epoch", "samples_per_shard", "epochs")


_NULLABLE = frozenset(_MANIFEST_TYPES) - set(_BUILD_REQUIRED)


@dataclass(frozen=True)
class Manifest:
    """OUT/manifest.json. `config` is the resolved build configuration (hashed into
    `config_hash` by the builder); `source`, `mixing_set` and `versions` describe inputs."""

    schema: str
    fields: tuple[str, ...]
    epochs: tuple[EpochEntry, ...]
    image_size: int
    num_classes: int
    schema_version: int | None = None
    complete: bool = False
    config: dict | None = None
    config_hash: str | None = None
    seed: int | None = None
    views: int | None = None
    format: str | None = None
    quality: int | None = None
    classes: tuple[str, ...] | None = None
    num_epochs: int | None = None
    samples_per_epoch: int | None = None
    source_samples: int | None = None
    pads_per_epoch: int | None = None
    shards_per_epoch: int | None = None
    samples_per_shard: int | None = None
    bad_samples: list | None = None
    totals: dict | None = None
    source: dict | None = None
    mixing_set: dict | None = None
    versions: dict | None = None
    extra: dict = field(default_factory=dict)  # keys this version does not know (a `base_url`...)
    absent: frozenset = frozenset()  # known keys the document did not have

    @classmethod
    def from_json(cls, doc) -> Manifest:
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise ManifestError(f"not an ipmix shards manifest (schema {SCHEMA!r} missing)")
        known = _typed(doc, "manifest", _MANIFEST_TYPES, _READ_REQUIRED, _NULLABLE)
        if not known["fields"] or any(not isinstance(f, str) or image_format(f) is None for f in known["fields"]):
            raise ManifestError(f"unsupported fields {known['fields']} (images must be png, jpg, webp or npy)")
        if not known["epochs"]:
            raise ManifestError("the manifest lists no epochs")
        known["epochs"] = tuple(EpochEntry.from_json(e, i) for i, e in enumerate(known["epochs"]))
        known["fields"] = tuple(known["fields"])
        if known.get("classes") is not None:
            known["classes"] = tuple(known["classes"])
        extra = {k: v for k, v in doc.items() if k not in _MANIFEST_TYPES}
        absent = frozenset(k for k in _MANIFEST_TYPES if k not in doc)
        return cls(extra=extra, absent=absent, **known)

    def to_json(self) -> dict:
        doc = {}
        for f in dataclass_fields(self):
            if f.name in ("extra", "absent") or f.name in self.absent:
                continue
            value = getattr(self, f.name)
            if f.name == "epochs":
                value = [e.to_json() for e in value]
            elif isinstance(value, tuple):
                value = list(value)
            doc[f.name] = value
        doc.update(self.extra)
        return doc

    def class_names(self) -> list[str]:
        return [str(c) for c in self.classes] if self.classes is not None else [str(i) for i in range(self.num_classes)]

    def epoch(self, number: int) -> EpochEntry | None:
        return next((e for e in self.epochs if e.epoch == number), None)

    def validate(self) -> list[str]:
        """What is wrong for a finished build (empty when nothing is); see the module doc."""
        missing = [k for k in _BUILD_REQUIRED if k in self.absent]
        if missing:
            return [f"manifest lacks {k!r}" for k in missing]
        problems = []
        if self.schema_version not in READABLE_VERSIONS:
            readable = ", ".join(map(str, READABLE_VERSIONS))
            problems.append(f"manifest schema_version {self.schema_version} is not supported (this ipmix reads "
                            f"version {readable}; a newer ipmix wrote it?)")
        if not self.complete:
            problems.append("manifest says the build is not complete (run the build command again to finish it)")
        if self.views not in (1, 3):
            problems.append(f"manifest views {self.views} is not 1 or 3")
        if len(self.fields) != self.views:
            problems.append(f"manifest has {len(self.fields)} fields for {self.views} views")
        for name in self.fields:
            if extension(name) not in FORMATS:  # written formats only: ipmix never writes `jpeg`
                problems.append(f"manifest field {name!r} is not an image field ({', '.join(FORMATS)})")
            elif extension(name) != self.format:
                problems.append(f"manifest field {name!r} does not match format {self.format!r}")
        if len(self.classes) != self.num_classes:
            problems.append(f"manifest lists {len(self.classes)} classes but num_classes is {self.num_classes}")
        if self.shards_per_epoch * self.samples_per_shard != self.samples_per_epoch:
            problems.append(f"manifest: {self.shards_per_epoch} shards x {self.samples_per_shard} samples "
                            f"!= samples_per_epoch {self.samples_per_epoch}")
        for entry in self.epochs:
            if len(entry.shards) != self.shards_per_epoch:
                problems.append(f"epoch {entry.epoch} lists {len(entry.shards)} shards, expected {self.shards_per_epoch}")
            for j, shard in enumerate(entry.shards):
                if shard.bytes is None or shard.sha256 is None:
                    problems.append(f"epoch {entry.epoch} shard {j} lacks path/count/bytes/sha256")
                elif shard.count != self.samples_per_shard:
                    problems.append(f"{shard.path}: manifest count {shard.count} != samples_per_shard "
                                    f"{self.samples_per_shard}")
        numbers = [e.epoch for e in self.epochs]
        if numbers != list(range(len(numbers))):
            problems.append(f"manifest epochs are {numbers}, expected 0..{len(numbers) - 1}")
        return problems
