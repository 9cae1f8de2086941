"""A summary of a shard set: configuration, sizes, counts, pads and class balance."""

from __future__ import annotations

import json

from ipmix_cli.common.errors import IpmixError
from ipmix_cli.shardformat.fields import LABEL, META
from ipmix_cli.shardformat.tario import iter_samples
from ipmix_cli.shards.verify import read_checked_manifest


def _config_value(m, key: str):
    config = m.config or {}
    augment = config.get("augment") or {}
    return config.get(key, augment.get(key))


def _scan_epoch(root, m, entry) -> dict:
    """Labels and pad flags of one epoch, read from the `cls` and `json` members."""
    histogram = [0] * m.num_classes
    pads = samples = 0
    missing, errors = [], []
    for shard in entry.shards:
        path = root / shard.path
        if not path.is_file():
            missing.append(shard.path)
            continue
        try:
            with path.open("rb") as f:
                for _key, sample in iter_samples(f, fields=(LABEL, META)):
                    samples += 1
                    label = int(sample[LABEL])
                    if 0 <= label < len(histogram):
                        histogram[label] += 1
                    pads += bool(json.loads(sample[META]).get("pad"))
        except (IpmixError, ValueError) as exc:
            errors.append(f"{shard.path}: {exc}")
    return {"epoch": entry.epoch, "samples": samples, "pads": pads, "histogram": histogram,
            "missing": missing, "errors": errors}


def inspect(out, scan_epoch: int | None = 0, storage_options: dict | None = None) -> dict:
    """Summarise the shard set at `out` (folder or manifest.json).

    The sizes and counts come from the manifest and the files on disk; the class histogram
    and the pad count come from reading epoch `scan_epoch` (None: no scan, the histogram then
    comes from the source's class counts when the manifest records them).
    """
    root, m = read_checked_manifest(out, storage_options)
    epochs = []
    for entry in m.epochs:
        on_disk = [(root / s.path).is_file() for s in entry.shards]
        epochs.append({
            "epoch": entry.epoch,
            "shards": len(entry.shards),
            "samples": sum(s.count for s in entry.shards),
            "bytes": sum(s.bytes for s in entry.shards),
            "missing_shards": on_disk.count(False),
        })
    total_bytes = sum(e["bytes"] for e in epochs)
    total_samples = sum(e["samples"] for e in epochs)
    summary = {
        "out": str(root),
        "schema_version": m.schema_version,
        "complete": m.complete,
        "config_hash": m.config_hash,
        "preset": _config_value(m, "preset"),
        "recipe": _config_value(m, "recipe"),
        "views": m.views,
        "image_size": m.image_size,
        "format": m.format,
        "quality": m.quality,
        "fields": list(m.fields),
        "seed": m.seed,
        "num_classes": m.num_classes,
        "classes": list(m.classes),
        "source": m.source,
        "mixing_set": m.mixing_set,
        "epochs": len(epochs),
        "shards_per_epoch": m.shards_per_epoch,
        "samples_per_shard": m.samples_per_shard,
        "samples_per_epoch": m.samples_per_epoch,
        "samples": total_samples,
        "bytes": total_bytes,
        "bytes_per_epoch": [e["bytes"] for e in epochs],
        "bytes_per_sample": total_bytes / total_samples if total_samples else 0.0,
        "missing_shards": sum(e["missing_shards"] for e in epochs),
        "per_epoch": epochs,
        "versions": m.versions,
        "source_samples": m.source_samples,
        "pads_per_epoch": m.pads_per_epoch,
        "bad_samples": len(m.bad_samples or []),
    }
    if scan_epoch is not None and m.epochs:
        entry = m.epoch(scan_epoch)
        if entry is None:
            raise IpmixError(f"epoch {scan_epoch} is not in {root} (it has epochs 0..{len(m.epochs) - 1})")
        scan = _scan_epoch(root, m, entry)
        summary.update(
            histogram_from=f"scan of epoch {scan_epoch}",
            class_histogram=dict(zip(m.classes, scan["histogram"])),
            pads=scan["pads"],
            scanned_samples=scan["samples"],
            scan_errors=scan["errors"] + [f"{p}: missing" for p in scan["missing"]],
        )
    else:
        counts = (m.source or {}).get("class_counts")
        if isinstance(counts, dict):
            summary.update(histogram_from="source class counts", class_histogram=counts)
        elif isinstance(counts, list) and len(counts) == len(m.classes):
            summary.update(histogram_from="source class counts", class_histogram=dict(zip(m.classes, counts)))
    return summary


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"


def render_inspect(s: dict) -> str:
    """The summary as a few aligned lines of text."""
    fmt = s["format"] + (f" q{s['quality']}" if s.get("quality") else "")
    source = s.get("source") or {}
    src = source.get("spec") or source.get("kind") or "?"
    if source.get("path"):
        src += f" ({source['path']})"
    lines = [
        f"shards     {s['out']}",
        f"config     preset={s['preset']} recipe={s['recipe']} views={s['views']} size={s['image_size']} seed={s['seed']}",
        f"hash       {s['config_hash']}",
        f"source     {src}; {s['num_classes']} classes",
        f"format     {fmt}; fields {', '.join(s['fields'])} + cls + json",
        f"epochs     {s['epochs']} x {s['shards_per_epoch']} shards x {s['samples_per_shard']} samples"
        f" = {s['samples_per_epoch']} samples per epoch",
        f"size       {human_bytes(s['bytes'])} total, {human_bytes(sum(s['bytes_per_epoch']) / max(1, s['epochs']))}"
        f" per epoch, {human_bytes(s['bytes_per_sample'])} per sample",
    ]
    if not s["complete"]:
        lines.append("status     INCOMPLETE build (run the build again to finish it)")
    if s["missing_shards"]:
        lines.append(f"missing    {s['missing_shards']} shard files listed in the manifest are not on disk")
    if s.get("source_samples") is not None:
        lines.append(f"drawn      {s['source_samples']} source images per epoch + {s.get('pads_per_epoch') or 0} padding draws")
    if s.get("bad_samples"):
        lines.append(f"skipped    {s['bad_samples']} bad source images (listed in the manifest)")
    if "pads" in s:
        lines.append(f"pads       {s['pads']} padding draws in {s['histogram_from']}")
    for err in s.get("scan_errors", []):
        lines.append(f"error      {err}")
    if s.get("class_histogram"):
        hist = s["class_histogram"]
        top = max(hist.values()) or 1
        lines.append(f"classes    ({s['histogram_from']})")
        width = max(len(str(k)) for k in hist)
        for name, count in hist.items():
            lines.append(f"  {str(name):<{width}} {count:>8}  {'#' * round(30 * count / top)}")
    return "\n".join(lines)
