"""Check a finished shard set against its manifest, byte for byte and sample by sample.

`verify(out)` checks: the manifest (schema, version, required keys, complete), every shard
present with the recorded size and sha256, each tar well formed, keys of the form
``e{epoch:04d}s{position:07d}`` and unique within the epoch, the members of a sample adjacent
and in the order ``fields..., cls, json``, labels in range, the json metadata, counts per shard
and per epoch, and the wids index (and DALI `.idx` files where present) against the tars.
`deep=True` also decodes every image and checks its shape. All problems are collected; if
there is any, `VerifyError` (an IpmixError) is raised naming the first bad shard, with the full
report on its `.report` attribute.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from ipmix_cli.common.errors import IpmixError
from ipmix_cli.common.progress import Progress
from ipmix_cli.shardformat.fields import LABEL, META, sample_fields
from ipmix_cli.shardformat.formats import decode_image
from ipmix_cli.shardformat.manifest import MANIFEST, SCHEMA, Manifest, ManifestError
from ipmix_cli.shardformat.tario import TarFormatError, group_samples, iter_entries
from ipmix_cli.shards.indexes import DALI_VERSION, dali_index_path, dali_lines
from ipmix_cli.shards.manifest import config_hash
from ipmix_cli.common.storepath import as_path

KEY_RE = re.compile(r"^e(\d{4})s(\d{7})$")
MAX_PROBLEMS_PER_SHARD = 5

class VerifyError(IpmixError):
    """Verification failed; `.report` holds every problem found."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


def read_manifest(out, storage_options: dict | None = None) -> tuple[Path, dict]:
    """`out` is the shard folder or its manifest.json, local or an object-store URL (then the
    folder is a StorePath, reached with `storage_options`); returns (folder, manifest)."""
    out = as_path(out, options=storage_options)
    path = out if out.is_file() else out / MANIFEST
    if not out.exists():
        raise IpmixError(f"{out} does not exist")
    if not path.is_file():
        raise IpmixError(f"{out} holds no manifest.json: not a shard folder, or the build has not finished")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IpmixError(f"cannot read {path}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise IpmixError(f"{path} is not an ipmix shards manifest (schema {SCHEMA!r} missing)")
    return path.parent, manifest


def manifest_problems(doc: dict) -> tuple[Manifest | None, list[str]]:
    """(the manifest, its problems for a finished build); the manifest is None when it cannot
    even be read, and the problems are then that one fault."""
    try:
        m = Manifest.from_json(doc)
    except ManifestError as exc:
        return None, [str(exc) if str(exc).startswith("manifest") else f"manifest: {exc}"]
    problems = m.validate()
    if "config" not in m.absent and "config_hash" not in m.absent and config_hash(m.config) != m.config_hash:
        problems.append("manifest config_hash does not match its config (edited after the build?); the shards "
                        "were made with the hashed configuration: restore the manifest or rebuild")
    return m, problems


def read_checked_manifest(out, storage_options: dict | None = None) -> tuple[Path, Manifest]:
    """`read_manifest`, then IpmixError naming the first problem if it is not a finished build."""
    root, doc = read_manifest(out, storage_options)
    m, problems = manifest_problems(doc)
    if problems:
        raise IpmixError(f"{root}/{MANIFEST}: {problems[0]}")
    return root, m


class _HashingReader:
    """Read-through wrapper that hashes every byte handed out."""

    def __init__(self, f):
        self.f, self.sha, self.md5, self.nbytes = f, hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0

    def read(self, n=-1):
        data = self.f.read(n)
        self.sha.update(data)
        self.md5.update(data)
        self.nbytes += len(data)
        return data

    def drain(self):
        while self.read(1 << 20):
            pass


class _ShardCheck:
    """Problems of one shard, capped so a systematic fault does not flood the report."""

    def __init__(self, rel):
        self.rel, self.problems, self.dropped = rel, [], 0

    def add(self, message):
        if len(self.problems) < MAX_PROBLEMS_PER_SHARD:
            self.problems.append(message)
        else:
            self.dropped += 1


def _check_sample(check, m, epoch, key, sample, keys_seen, deep, counters):
    match = KEY_RE.match(key)
    if not match:
        check.add(f"key {key!r} is not of the form eEEEEsPPPPPPP")
    elif int(match.group(1)) != epoch:
        check.add(f"key {key} belongs to epoch {int(match.group(1))}, found in epoch {epoch}")
    if key in keys_seen:
        check.add(f"duplicate key {key} (also in {keys_seen[key]})")
    keys_seen[key] = check.rel
    expected = sample_fields(m.fields)
    names = list(sample)
    missing = [f for f in expected if f not in sample]
    extra = [f for f in names if f not in expected]
    if missing:
        check.add(f"sample {key} lacks field {missing[0]!r}")
    if extra:
        check.add(f"sample {key} has unexpected field {extra[0]!r}")
    if not missing and not extra and names != expected:
        check.add(f"sample {key} members are in order {names}, expected {expected}")
    if LABEL in sample:
        text = sample[LABEL].decode("ascii", "replace").strip()
        if not text.isdigit() or not 0 <= int(text) < m.num_classes:
            check.add(f"sample {key} label {text[:20]!r} is not in 0..{m.num_classes - 1}")
        else:
            counters["histogram"][int(text)] += 1
    if META in sample:
        try:
            meta = json.loads(sample[META])
            if not isinstance(meta.get("index"), int) or not isinstance(meta.get("pad"), bool):
                raise ValueError("needs an int 'index' and a bool 'pad'")
            counters["pads"] += meta["pad"]
        except (ValueError, AttributeError, UnicodeDecodeError) as exc:
            check.add(f"sample {key} json metadata is bad: {exc}")
    if deep:
        size = m.image_size
        for field in m.fields:
            if field not in sample:
                continue
            try:
                arr = decode_image(field, sample[field])
            except IpmixError as exc:
                check.add(f"sample {key} field {field}: {exc}")
                continue
            if arr.shape != (size, size, 3):
                check.add(f"sample {key} field {field} is {arr.shape[1]}x{arr.shape[0]}, expected {size}x{size}")


def _check_shard(root, m, epoch, shard, keys_seen, deep, counters) -> tuple[_ShardCheck, dict]:
    rel = shard.path
    check = _ShardCheck(rel)
    path = root / rel
    facts = {"md5": None, "bytes": None}
    if not path.is_file():
        check.add("missing")
        return check, facts
    size = path.stat().st_size
    facts["bytes"] = size
    if size != shard.bytes:
        check.add(f"size {size} bytes, manifest says {shard.bytes}")
    entries = []
    count = 0
    with path.open("rb") as f:
        reader = _HashingReader(f)

        def tapped():
            for e in iter_entries(reader):
                entries.append((e.name, e.offset, e.size))
                yield e.name, e.data

        try:
            for key, sample in group_samples(tapped()):
                count += 1
                _check_sample(check, m, epoch, key, sample, keys_seen, deep, counters)
        except TarFormatError as exc:
            check.add(str(exc))
            entries = None
        reader.drain()
    sha = reader.sha.hexdigest()
    facts["md5"] = reader.md5.hexdigest()
    if sha != shard.sha256:
        check.add(f"sha256 {sha[:12]}... does not match the manifest's {shard.sha256[:12]}...")
    if entries is not None and count != shard.count:
        check.add(f"holds {count} samples, manifest says {shard.count}")
    idx = dali_index_path(path)
    if m.config.get("dali_index") and not idx.is_file():
        check.add(f"DALI index {idx.name} missing (the build was made with --dali-index; "
                  f"`ipmix shards build --out OUT --dali-index` writes it again)")
    elif entries is not None and idx.is_file():
        try:
            expected = dali_lines(entries, rel)
        except IpmixError as exc:
            check.add(str(exc))
        else:
            if idx.read_text(encoding="ascii", errors="replace").splitlines() != expected:
                check.add(f"DALI index {idx.name} does not match the tar ({DALI_VERSION} expected)")
    counters["samples"] += count
    return check, facts


def _check_wids(root, entry, facts_by_rel) -> list[tuple[str, str]]:
    rel = entry.index or f"epoch-{entry.epoch:04d}/wids-index.json"
    path = root / rel
    if not path.is_file():
        return [(rel, "wids index missing")]
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        listed = doc["shardlist"]
        if doc.get("__kind__") != "wids-shard-index-v1" or doc.get("wids_version") != 1:
            return [(rel, "wids index is not wids-shard-index-v1")]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [(rel, f"wids index unreadable: {exc}")]
    if len(listed) != len(entry.shards):
        return [(rel, f"wids index lists {len(listed)} shards, manifest {len(entry.shards)}")]
    problems = []
    for item, shard in zip(listed, entry.shards):
        target = os.path.normpath(str(path.parent / str(item.get("url"))))
        facts = facts_by_rel.get(shard.path, {})
        if target != os.path.normpath(str(root / shard.path)):
            problems.append((rel, f"url {item.get('url')!r} does not point at {shard.path}"))
        elif item.get("nsamples") != shard.count:
            problems.append((rel, f"nsamples {item.get('nsamples')} for {shard.path}, manifest {shard.count}"))
        elif facts.get("bytes") is not None and item.get("filesize") != facts["bytes"]:
            problems.append((rel, f"filesize {item.get('filesize')} for {shard.path}, file has {facts['bytes']}"))
        elif "md5sum" in item and facts.get("md5") is not None and item["md5sum"] != facts["md5"]:
            problems.append((rel, f"md5sum for {shard.path} does not match the file"))
    return problems


def verify(out, deep: bool = False, progress: bool = True, storage_options: dict | None = None) -> dict:
    """Check the shard set at `out`; return the report or raise VerifyError (see module doc)."""
    root, doc = read_manifest(out, storage_options)
    report = {"out": str(root), "ok": False, "deep": deep, "epochs": 0, "shards": 0, "samples": 0,
              "bytes": 0, "pads": 0, "problems": [], "warnings": []}
    m, schema = manifest_problems(doc)
    if schema:
        report["problems"] = [{"shard": MANIFEST, "problem": p} for p in schema]
        raise VerifyError(f"{root}/{MANIFEST}: {schema[0]}" + _more(len(schema)), report)

    counters = {"samples": 0, "pads": 0, "histogram": [0] * m.num_classes}
    total = sum(len(e.shards) for e in m.epochs)
    with Progress(total, "verify", enabled=progress) as bar:
        for entry in m.epochs:
            keys_seen: dict[str, str] = {}
            facts_by_rel = {}
            for shard in entry.shards:
                check, facts = _check_shard(root, m, entry.epoch, shard, keys_seen, deep, counters)
                facts_by_rel[shard.path] = facts
                report["bytes"] += facts["bytes"] or 0
                report["problems"] += [{"shard": check.rel, "problem": p} for p in check.problems]
                if check.dropped:
                    report["problems"].append({"shard": check.rel, "problem": f"... and {check.dropped} more problems"})
                report["shards"] += 1
                bar.update(1)
            report["problems"] += [{"shard": s, "problem": p} for s, p in _check_wids(root, entry, facts_by_rel)]
            listed = {root / s.path for s in entry.shards}
            edir = root / f"epoch-{entry.epoch:04d}"
            if edir.is_dir():
                for stray in sorted(edir.glob("*.tar")):
                    if stray not in listed:
                        report["warnings"].append(f"{stray.relative_to(root)} is not listed in the manifest")
            report["epochs"] += 1
    report["warnings"] += _stray_epoch_folders(root, m)
    expected = m.samples_per_epoch * len(m.epochs)
    if counters["samples"] != expected and not report["problems"]:
        report["problems"].append({"shard": MANIFEST, "problem": f"{counters['samples']} samples, expected {expected}"})
    report.update(samples=counters["samples"], pads=counters["pads"], class_histogram=counters["histogram"])
    problems = report["problems"]
    report["ok"] = not problems
    if problems:
        first = problems[0]
        raise VerifyError(f"{root}/{first['shard']}: {first['problem']}" + _more(len(problems)), report)
    return report


def _stray_epoch_folders(root: Path, m: Manifest) -> list[str]:
    """Epoch folders on disk that the manifest does not list: an extra epoch, or one left after
    the manifest dropped it. Readers that glob folders would take their shards."""
    listed = {Path(s.path).parts[0] for e in m.epochs for s in e.shards if len(Path(s.path).parts) > 1}
    return [f"{d.name}{os.sep} is an epoch folder the manifest does not list (left from another build? "
            f"readers that glob folders would read it)"
            for d in sorted(root.glob("epoch-*")) if d.is_dir() and d.name not in listed]


def _more(n: int) -> str:
    return f" (and {n - 1} more problem{'s' if n > 2 else ''})" if n > 1 else ""
