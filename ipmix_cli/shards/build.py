"""`build_shards`: K augmented epochs of a source as WebDataset shards.

One (epoch, shard) is one idempotent task: read its samples (the plan says which), augment
them, encode, write a tar to a temporary name, fsync, rename, then record count, bytes and
sha256 in OUT/.records/. A re-run skips every shard whose record and file agree; the
manifest is marked complete only when every shard of every epoch has its record.
The bytes of a shard depend only on the configuration, never on workers, nodes or
interruptions.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fractalgen.errors import FractalgenError
from fractalgen.files import atomic_write_json, ensure_writable_dir, sha256_file
from ipmix_cli import storage
from ipmix_cli.errors import IpmixError
from ipmix_cli.progress import COMPILING, numba_cache_is_warm
from ipmix_cli.shards import limits
from ipmix_cli.shards import manifest as mf
from ipmix_cli.shardformat.fields import FORMATS, LABEL, META, image_fields
from ipmix_cli.shardformat.formats import encode_column, resolve_format
from ipmix_cli.shards.plan import Plan, choose_shard_count, node_tasks, sample_key, shard_name
from ipmix_cli.shards.sources import BadSourceImage, Source, open_source
from ipmix_cli.shardformat.tarwriter import BLOCK, TarWriter

MAX_REPLACEMENT_TRIES = 64


@dataclass
class BuildContext:
    """Everything a shard task needs. Pickled once per worker (the source and the mixing
    bank refer to files and memory maps, not pixels)."""

    out: str
    config: dict
    plan: Plan
    source: Source
    bank: object
    augment: dict
    fields: list
    fmt: str
    quality: int | None
    views: int
    image_size: int
    preset: str
    seed: int
    skip_bad: bool


def peak_rss_mb(maxrss: int | None = None, platform: str = sys.platform) -> float:
    """Peak resident memory of this process in MiB. getrusage reports it in KiB on Linux
    and in bytes on macOS."""
    if maxrss is None:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024.0 * 1024.0 if platform == "darwin" else 1024.0)


# --------------------------------------------------------------------------- one shard

_AUGMENTERS: dict = {}  # per process: one Augmenter per configuration


def _augmenter(ctx: BuildContext):
    from ipmix_cli.augment import AugmentConfig, Augmenter

    key = ("aug", ctx.config["_hash"])
    aug = _AUGMENTERS.get(key)
    if aug is None:
        aug = _AUGMENTERS[key] = Augmenter(AugmentConfig.from_dict(ctx.augment), ctx.bank)
    return aug


def run_task(ctx: BuildContext, epoch: int, shard: int) -> dict:
    """One idempotent task: keep the shard if its record and file agree, else (re)build it.
    The check runs in the worker, so resuming a big build hashes its shards in parallel."""
    return run_tasks_in_order(ctx, [(epoch, shard)])[0]


def _kept_record(ctx: BuildContext, epoch: int, shard: int) -> dict | None:
    out = Path(ctx.out)
    if shard_is_done(out, epoch, shard, ctx.config["_hash"]):
        return {**mf.read_record(out, epoch, shard), "skipped": True, "pid": os.getpid(),
                "peak_rss_mb": peak_rss_mb()}
    _remove_stale_temps(out, [(epoch, shard)])
    return None


def run_tasks_in_order(ctx: BuildContext, tasks, done=None) -> list[dict]:
    """Run tasks one after another in this process; returns their records (and passes each to
    `done` as soon as its record is written).

    A shard's fsync, rename and record happen in a thread while the next shard is made, so the
    worker does not wait for the disk; each record is still written only after its shard's
    fsync returned, and the last shard is finished before this returns (or raises)."""
    records = []
    finishing: _Finisher | None = None

    def collect(rec):
        records.append(rec)
        if done is not None:
            done(rec)

    try:
        for epoch, shard in tasks:
            kept = _kept_record(ctx, epoch, shard)
            if kept is not None:
                collect(kept)
                continue
            written = write_shard(ctx, epoch, shard)
            if finishing is not None:
                pending, finishing = finishing, None
                try:
                    collect(pending.result())
                except BaseException:
                    _discard(written)  # whole but never fsynced: no record, no file left
                    raise
            finishing = _Finisher(written)
        if finishing is not None:
            pending, finishing = finishing, None
            collect(pending.result())
    finally:
        if finishing is not None:  # an error or an interrupt in the next shard: this one is whole, finish it
            finishing.join()
    return records


def _fit(ctx: BuildContext, img: np.ndarray) -> np.ndarray:
    """The pad crop: a source of another size is resized and centre-cropped to S first."""
    s = ctx.image_size
    if img.shape[:2] == (s, s):
        return img
    from PIL import Image

    from fractalgen.images import resize_center_crop

    return np.asarray(resize_center_crop(Image.fromarray(img), s), dtype=np.uint8)


def _replacement(ctx: BuildContext, epoch: int, position: int, bad: list, read):
    """A deterministic stand-in for a bad sample (only with skip_bad)."""
    n = ctx.plan.n_source
    rng = np.random.default_rng([ctx.seed, epoch, position, 0xBAD])
    for _ in range(MAX_REPLACEMENT_TRIES):
        j = int(rng.integers(n))
        try:
            return j, read(j)
        except BadSourceImage as exc:
            bad.append({"index": j, "name": exc.path, "reason": exc.reason})
    raise IpmixError(f"too many bad source images: no readable replacement after {MAX_REPLACEMENT_TRIES} tries")


def _meta_json(index: int, pad: bool, replaces: int | None = None) -> bytes:
    """The sample's json member: what json.dumps(..., separators=(",", ":")) writes."""
    if replaces is None:
        return b'{"index":%d,"pad":%s}' % (index, b"true" if pad else b"false")
    return b'{"index":%d,"pad":%s,"replaces":%d}' % (index, b"true" if pad else b"false", replaces)


def _rows(ctx: BuildContext, aug, epoch, pos, idx, pad, bad):
    """Read and prepare one chunk; returns images, source indices, augmentation keys, json.

    With a per-picture crop (every crop but pad) each picture is cropped as soon as it is
    decoded (its pixels still in cache, and only the SxS crop kept)."""
    n = ctx.plan.n_source
    per_picture = ctx.augment["crop"] != "pad"  # crop() takes pictures of any size; pad needs S x S
    crops = np.empty((len(idx), ctx.image_size, ctx.image_size, 3), np.uint8) if per_picture else None
    batch = None
    if crops is None:
        read = ctx.source.read
        try:
            batch = ctx.source.read_many(idx)
        except BadSourceImage:
            pass  # read one by one below, to name (or skip) the bad ones
        s = ctx.image_size
        if isinstance(batch, np.ndarray) and batch.shape[1:] == (s, s, 3):  # the whole chunk read at once
            keys = idx + n * pad.astype(np.int64)
            meta = [_meta_json(i, p) for i, p in zip(idx.tolist(), pad.tolist())]
            return batch, idx, keys, meta
    else:
        read = ctx.source.read_image  # the Augmenter crops decoded pictures where they lie
    images, src_idx, keys, meta = [], [], [], []
    for r, (p, i, is_pad) in enumerate(zip(pos.tolist(), idx.tolist(), pad.tolist())):
        replaced = None
        try:
            img = batch[r] if batch is not None else read(i)
        except BadSourceImage as exc:
            if not ctx.skip_bad:
                raise
            bad.append({"index": i, "name": exc.path, "reason": exc.reason})
            replaced = i
            i, img = _replacement(ctx, epoch, p, bad, read)
        # Padding and replacement draws of an index already in the epoch get their own
        # augmentation stream, so they are new draws, not copies.
        key = i + n * (int(is_pad) + 2 * (replaced is not None))
        if crops is None:
            images.append(_fit(ctx, img))
        else:
            aug.crop(img, ctx.seed, epoch, key, out=crops[r])
        src_idx.append(i)
        keys.append(key)
        meta.append(_meta_json(i, is_pad, replaced))
    if crops is None:
        images = np.stack(images) if images else np.empty((0, ctx.image_size, ctx.image_size, 3), np.uint8)
    else:
        images = crops
    return images, np.asarray(src_idx, dtype=np.int64), np.asarray(keys, dtype=np.int64), meta


def chunk_rows(image_size: int) -> int:
    return 256 if image_size <= 64 else 16


STAGES = ("read", "augment", "encode", "tar", "hash", "write", "fsync")


def encode_shard(ctx: BuildContext, epoch: int, shard: int, writer: TarWriter, bad: list, limit=None,
                 seconds: dict | None = None) -> int:
    """Write the samples of one shard into `writer`; returns how many. Adds the time of the
    read, augment and encode stages to `seconds` when given."""
    seconds = {} if seconds is None else seconds
    clock = time.perf_counter
    aug = _augmenter(ctx)
    pos, idx, pad = ctx.plan.shard_rows(epoch, shard)
    if limit is not None:
        pos, idx, pad = pos[:limit], idx[:limit], pad[:limit]
    step = chunk_rows(ctx.image_size)
    labels = ctx.source.labels
    count = 0
    for lo in range(0, len(pos), step):
        sl = slice(lo, lo + step)
        t0 = clock()
        images, src_idx, keys, meta = _rows(ctx, aug, epoch, pos[sl], idx[sl], pad[sl], bad)
        t1 = clock()
        views = aug.make_views(images, ctx.seed, epoch, keys, cropped=ctx.augment["crop"] != "pad")
        t2 = clock()
        columns = [(f, encode_column(views[:, v], ctx.fmt, ctx.quality)) for v, f in enumerate(ctx.fields)]
        columns.append((LABEL, [b"%d" % c for c in labels[src_idx].tolist()]))
        columns.append((META, meta))
        t3 = clock()
        writer.add_samples([sample_key(epoch, p) for p in pos[sl].tolist()], columns)
        for stage, dt in (("read", t1 - t0), ("augment", t2 - t1), ("encode", t3 - t2)):
            seconds[stage] = seconds.get(stage, 0.0) + dt
        count += len(meta)
    return count


class _EarlyWriteback:
    """A shard file that asks the kernel to start writing its pages to disk as soon as
    WRITEBACK_BYTES are written (POSIX_FADV_DONTNEED starts writeback of dirty pages without
    waiting for it), so the fsync at the end waits for the last few MB instead of the whole
    shard, and finished pages leave the page cache."""

    WRITEBACK_BYTES = 4 << 20

    def __init__(self, f):
        self.f, self.done, self.written = f, 0, 0
        self.advise = getattr(os, "posix_fadvise", None)

    def write(self, data) -> int:
        n = self.f.write(data)
        self.written += n
        if self.advise is not None and self.written - self.done >= self.WRITEBACK_BYTES:
            self.f.flush()
            self.advise(self.f.fileno(), self.done, self.written - self.done, os.POSIX_FADV_DONTNEED)
            self.done = self.written
        return n


def _write_failed(exc: BaseException, tmp: Path, final: Path):
    try:
        os.unlink(tmp)
    except OSError:
        pass
    if isinstance(exc, OSError) and exc.errno is not None:
        raise IpmixError(f"writing {final} failed: {os.strerror(exc.errno).lower()} "
                         f"(nothing half-written was kept; free space and run again to resume)") from None
    raise exc


@dataclass
class _Written:
    """A shard whose bytes are all written to its temporary file (still open), not yet fsynced."""

    ctx: BuildContext
    epoch: int
    shard: int
    file: object
    tmp: Path
    final: Path
    writer: TarWriter
    count: int
    bad: list
    seconds: dict
    started: float


def write_shard(ctx: BuildContext, epoch: int, shard: int) -> _Written:
    final = Path(ctx.out) / shard_name(epoch, shard)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(final)
    bad: list = []
    seconds: dict = {}
    t0 = time.perf_counter()
    f = None
    try:
        f = open(tmp, "wb")
        writer = TarWriter(_EarlyWriteback(f))
        count = encode_shard(ctx, epoch, shard, writer, bad, seconds=seconds)
        writer.close()
        f.flush()
    except BaseException as exc:
        if f is not None:
            f.close()
        _write_failed(exc, tmp, final)
    return _Written(ctx, epoch, shard, f, tmp, final, writer, count, bad, seconds, t0)


def finish_shard(w: _Written) -> dict:
    """fsync, close and rename the shard, then write its record; returns the record."""
    try:
        t_sync = time.perf_counter()
        with w.file:
            os.fsync(w.file.fileno())
        w.seconds["fsync"] = time.perf_counter() - t_sync  # the wait, unless a _Finisher overlaps it
        os.replace(w.tmp, w.final)
    except BaseException as exc:
        _write_failed(exc, w.tmp, w.final)
    ctx = w.ctx
    record = {"epoch": w.epoch, "shard": w.shard, "path": shard_name(w.epoch, w.shard), "count": w.count,
              "bytes": w.writer.bytes, "sha256": w.writer.sha256, "md5": w.writer.md5,
              "config_hash": ctx.config["_hash"], "bad_samples": w.bad}
    mf.write_record(Path(ctx.out), record)
    record["seconds"] = time.perf_counter() - w.started
    record["stage_seconds"] = {**w.seconds, **w.writer.seconds}
    record["peak_rss_mb"] = peak_rss_mb()
    record["pid"] = os.getpid()
    return record


def _discard(w: _Written) -> None:
    w.file.close()
    try:
        os.unlink(w.tmp)
    except OSError:
        pass


def build_shard(ctx: BuildContext, epoch: int, shard: int) -> dict:
    """Write, fsync and record one shard (in this thread)."""
    return finish_shard(write_shard(ctx, epoch, shard))


class _Finisher:
    """`finish_shard` in a thread; `result()` waits for it and returns the record or raises."""

    def __init__(self, written: _Written):
        self._record, self._error = None, None
        self._thread = threading.Thread(target=self._run, args=(written,), name="ipmix-shard-fsync", daemon=True)
        self._thread.start()

    def _run(self, written):
        try:
            self._record = finish_shard(written)
        except BaseException as exc:  # handed to the main thread by result()
            self._error = exc

    def join(self) -> None:
        self._thread.join()

    def result(self) -> dict:
        t0 = time.perf_counter()
        self._thread.join()
        if self._error is not None:
            raise self._error
        stages = self._record["stage_seconds"]
        stages["fsync_background"] = stages["fsync"]
        stages["fsync"] = time.perf_counter() - t0  # what the worker waited for
        return self._record


# --------------------------------------------------------------------------- resume checks

def shard_is_done(out: Path, epoch: int, shard: int, config_hash: str, deep: bool = True) -> bool:
    rec = mf.read_record(out, epoch, shard)
    if not rec or rec.get("config_hash") != config_hash:
        return False
    path = out / shard_name(epoch, shard)
    try:
        if path.stat().st_size != rec["bytes"]:
            return False
        return not deep or sha256_file(path) == rec["sha256"]
    except (OSError, KeyError):
        return False


def _temp_path(final: Path) -> Path:
    return final.parent / f".{final.name}.{os.getpid()}.tmp"


def _remove_stale_temps(out: Path, tasks) -> None:
    for epoch, shard in tasks:
        final = out / shard_name(epoch, shard)
        if not final.parent.is_dir():
            continue
        for p in final.parent.glob(f".{final.name}.*.tmp"):
            try:
                p.unlink()
            except OSError:
                pass


# A shard's temporary file, or its record's (atomic_write_bytes): the shard number is in the name.
_TEMP_SHARD = re.compile(r"^\.(?:ipmix-e\d{4}-(\d{5})\.tar|shard-(\d{5})\.json)\..*\.tmp$")


def _remove_temps_of(out: Path, tasks) -> None:
    """Delete the temporary files of `tasks` (this node's), shards and records alike: what the
    workers that were stopped mid-write (a full disk or a failure in another worker ends the
    pool, Ctrl-C, ...) left behind. Temporary files of other nodes' tasks are left alone."""
    for folder in list(out.glob("epoch-[0-9][0-9][0-9][0-9]")) + list((out / mf.RECORDS).glob("epoch-[0-9]*")):
        epoch = int(folder.name.split("-")[1])
        for p in folder.glob(".*.tmp"):
            match = _TEMP_SHARD.match(p.name)
            if match and (epoch, int(match.group(1) or match.group(2))) in tasks:
                try:
                    p.unlink()
                except OSError:
                    pass


# --------------------------------------------------------------------------- combine

def write_wids_index_from_records(out, entry: dict, name: str, records: list[dict]) -> Path:
    """The same document as `indexes.write_wids_index`, with the md5 the workers computed
    while writing each shard instead of reading every shard again in the combining
    process (at 50,000 JSD triples that re-read was the only serial second of a build).
    A test holds the two writers to identical output."""
    from ipmix_cli.shards.indexes import WIDS_KIND

    out = Path(out)
    index_path = out / entry["index"]
    shardlist = [{"url": os.path.relpath(out / r["path"], index_path.parent).replace(os.sep, "/"),
                  "md5sum": r["md5"], "nsamples": int(r["count"]), "filesize": int(r["bytes"])} for r in records]
    index_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(index_path, {"__kind__": WIDS_KIND, "wids_version": 1, "name": name, "shardlist": shardlist})
    return index_path


def combine_parts(out, *, dali_index: bool | None = None, log=None) -> dict:
    """Merge the per-shard records of every part into OUT/manifest.json, write the wids
    (and DALI) indexes and the dataset card, and mark the build complete.

    Raises IpmixError naming what is missing when some part has not finished.
    """
    out = Path(out)
    m = mf.load_manifest(out)
    if m is None:
        raise IpmixError(f"{out} holds no manifest.json: nothing to combine (run ipmix shards build first)")
    chash, shards = m["config_hash"], m["shards_per_epoch"]
    missing, foreign, epochs, epoch_records, bad = [], [], [], [], {}
    for e in range(m["num_epochs"]):
        records = []
        for s in range(shards):
            rec = mf.read_record(out, e, s)
            path = out / shard_name(e, s)
            ok = rec is not None and rec.get("config_hash") == chash and path.is_file() \
                and path.stat().st_size == rec["bytes"]
            if not ok:
                missing.append(shard_name(e, s))
                if rec is not None and rec.get("config_hash") != chash:
                    foreign.append(shard_name(e, s))
                continue
            records.append(rec)
            for b in rec.get("bad_samples", []):
                bad[b["index"]] = b
        epochs.append(mf.epoch_entry(e, records))
        epoch_records.append(records)
    if foreign:  # a part run with other options (or an older build): say so, not "not built yet"
        raise IpmixError(f"{len(foreign)} shard(s) were built with a different configuration than the manifest's "
                         f"(first: {foreign[0]}); run that part again with the same options")
    if missing:
        raise IpmixError(f"{len(missing)} shard(s) not built yet (first: {missing[0]}); finish every "
                         f"part (--node-rank) and combine again")
    from ipmix_cli.shards.card import write_dataset_card
    from ipmix_cli.shards.indexes import write_dali_index, write_wids_index

    for entry, records in zip(epochs, epoch_records):  # named by content, not by folder
        name = f"ipmix-{chash[:12]}-epoch-{entry['epoch']:04d}"
        if all(r.get("md5") for r in records):
            write_wids_index_from_records(out, entry, name, records)
        else:
            write_wids_index(out, entry, name)
    if dali_index is not None:
        m["config"]["dali_index"] = bool(dali_index)
    if m["config"].get("dali_index", False):
        for entry in epochs:
            for s in entry["shards"]:
                write_dali_index(out / s["path"])
    m["epochs"] = epochs
    m["bad_samples"] = [bad[k] for k in sorted(bad)]
    m["totals"] = {"shards": sum(len(e["shards"]) for e in epochs),
                   "samples": sum(e["samples"] for e in epochs),
                   "bytes": sum(e["bytes"] for e in epochs)}
    m["complete"] = True
    write_dataset_card(out, m)
    mf.write_manifest(out, m)
    from ipmix_cli.shards.distributed import remove_contexts

    remove_contexts(out)
    if log:
        log(f"complete: {m['totals']['shards']} shards, {m['totals']['samples']} samples, "
            f"{m['totals']['bytes'] / 1e6:.1f} MB in {out}")
    return m


# --------------------------------------------------------------------------- orchestration

_OPTION_DEFAULTS = {"epochs": 1, "preset": "cifar", "recipe": "ipmix", "views": 1, "seed": 0}


def _needs_bank(recipe: str) -> bool:
    from ipmix_cli.augment.presets import MIXING_RECIPES

    return recipe in MIXING_RECIPES


def _open_bank(fractals, cfg, recipe, cache_dir=None, log=None):
    from ipmix_cli.augment import MixingBank

    if not _needs_bank(recipe):
        return None, {"path": str(fractals) if fractals else None, "fingerprint": None, "size": 0}
    if fractals is None:
        raise IpmixError(f"recipe {recipe} mixes with pictures: give the mixing set with --fractals DIR")
    if not Path(fractals).is_dir():
        raise IpmixError(f"fractal folder not found: {fractals}" if not Path(fractals).exists()
                         else f"--fractals {fractals} is a file; give the folder of mixing pictures")
    bank = MixingBank.from_folder(fractals, cfg, cache_dir=cache_dir)
    if log:
        log(bank.describe())
    return bank, {"path": str(fractals), "fingerprint": bank.fingerprint, "size": len(bank)}


def _clear_build(out: Path) -> None:
    for p in list(out.glob("epoch-[0-9][0-9][0-9][0-9]")) + [out / mf.RECORDS]:
        if p.is_dir():
            shutil.rmtree(p)
    for p in (out / mf.MANIFEST, out / "README.md"):
        if p.exists():
            p.unlink()


def _looks_like_ipmix_manifest(path: Path) -> bool:
    try:
        return b'"ipmix-shards"' in path.read_bytes()[:1 << 20] or path.stat().st_size == 0
    except OSError:
        return False


def _existing_build(out: Path, overwrite: bool):
    """The manifest of the build in OUT (None for a new or overwritten build); refuses to
    touch a folder that holds something else."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise IpmixError(f"--out {out} exists and is not a folder")
    try:
        existing = mf.load_manifest(out)
    except IpmixError:
        if not overwrite or not _looks_like_ipmix_manifest(out / mf.MANIFEST):
            raise
        existing = None  # an unreadable or older ipmix manifest: --overwrite replaces it
    is_build = (out / mf.MANIFEST).exists() or (out / mf.RECORDS).exists()
    if not is_build:
        try:
            stray = [p.name for p in out.iterdir() if not p.name.startswith(".")]
        except OSError as exc:
            raise IpmixError(f"cannot read --out {out}: {exc.strerror or exc}") from None
        if stray:
            raise IpmixError(f"--out {out} is not empty and holds no ipmix build (found {stray[0]}); "
                             f"choose an empty or new folder")
    return None if overwrite else existing


def _estimate_bytes_per_sample(fmt: str, image_size: int, views: int) -> float:
    raw = image_size * image_size * 3
    member = FORMATS[fmt].raw_ratio * raw + (128 if fmt == "npy" else 0)
    return views * (member + BLOCK + BLOCK / 2) + 2 * (BLOCK + BLOCK)


def _pilot(ctx: BuildContext, samples: int) -> dict:
    """Time a few samples end to end (read, augment, encode, tar) without writing a file."""

    class _Null:
        def write(self, data):
            return len(data)

    bad: list = []
    t0 = time.perf_counter()
    encode_shard(ctx, 0, 0, TarWriter(_Null()), bad, limit=min(4, samples))  # load or compile the kernels
    warmup = time.perf_counter() - t0
    writer = TarWriter(_Null())
    t0 = time.perf_counter()
    n = encode_shard(ctx, 0, 0, writer, bad, limit=samples)
    dt = time.perf_counter() - t0
    return {"samples": n, "seconds": dt, "warmup_seconds": warmup, "bytes_per_sample": writer.bytes / max(1, n)}


def build_shards(source=None, fractals=None, out=None, epochs=None, preset=None, recipe=None, views=None,
                 seed=None, workers=1, format=None, quality=None, shards=None, dry_run=False, overwrite=False,
                 extend_epochs=None, skip_bad=None, num_nodes=1, node_rank=0, backend="joblib", scheduler=None,
                 dali_index=None, augment=None, progress=True, log=None, pilot_samples=64, cache_dir=None) -> dict:
    """Build (or resume, or extend) a shard set in `out`; returns the manifest.

    Options left as None are taken from OUT's manifest when one exists (so
    `build_shards(out=OUT, extend_epochs=2)` adds two epochs with the same settings),
    otherwise from the defaults. With `dry_run` nothing is written and the plan is returned.
    `augment` holds overrides of the preset's augmentation options (see `resolve_config`).
    `cache_dir` holds the mixing bank's cache file (default: `default_cache_dir()`; with the
    Dask backend OUT/.cache/mixing-bank, since workers on other machines share OUT, not it).
    """
    log = log or (lambda msg: None)
    if out is None:
        raise IpmixError("--out is required")
    out = Path(storage.require_local(out, "--out", "OUT of 'shards build'"))
    _check_count("--workers", workers, 1, limits.MAX_WORKERS)
    _check_count("--num-nodes", num_nodes, 1, limits.MAX_NODES)
    if not 0 <= int(node_rank) < int(num_nodes):
        raise IpmixError(f"--node-rank must be in 0..{int(num_nodes) - 1} (got {node_rank})")
    for name, value, low, high in (("--epochs", epochs, 1, limits.MAX_EPOCHS),
                                   ("--extend-epochs", extend_epochs, 1, limits.MAX_EPOCHS),
                                   ("--shards", shards, 1, limits.MAX_SHARDS),
                                   ("--seed", seed, 0, limits.MAX_SEED)):
        if value is not None:
            _check_count(name, value, low, high)
    if backend not in ("joblib", "dask"):
        raise IpmixError(f"--backend must be joblib or dask, not {backend}")
    if backend == "dask" and not scheduler:
        raise IpmixError("--backend dask needs --scheduler ADDRESS (e.g. tcp://10.0.0.1:8786)")

    if extend_epochs and overwrite:
        raise IpmixError("--extend-epochs adds to the build in OUT and --overwrite deletes it: give one of them")
    existing = _existing_build(out, overwrite)

    given = {"source": source, "fractals": fractals, "preset": preset, "recipe": recipe, "views": views,
             "seed": seed, "format": format, "quality": quality, "shards": shards, "skip_bad": skip_bad,
             "dali_index": dali_index, "augment_options": augment}
    if existing is not None:
        old = existing["config"]
        for k, v in given.items():
            if v is None:
                given[k] = old.get(k)
        on_disk = existing["num_epochs"]
        if extend_epochs:
            epochs_total = on_disk + int(extend_epochs)
            if epochs is not None and epochs != on_disk:
                raise IpmixError("give either --epochs or --extend-epochs, not both")
        else:
            epochs_total = on_disk if epochs is None else int(epochs)
            if epochs_total != on_disk:
                hint = (f"use --extend-epochs {epochs_total - on_disk} to add epochs"
                        if epochs_total > on_disk else "use --overwrite to rebuild with fewer")
                raise IpmixError(f"{out} holds a build of {on_disk} epoch(s), not {epochs_total}; {hint}")
    else:
        if extend_epochs:
            raise IpmixError(f"--extend-epochs needs an existing build in {out}")
        for k in ("preset", "recipe", "views", "seed"):
            if given[k] is None:
                given[k] = _OPTION_DEFAULTS[k]
        given["skip_bad"] = bool(given["skip_bad"])
        given["dali_index"] = bool(given["dali_index"])
        epochs_total = _OPTION_DEFAULTS["epochs"] if epochs is None else int(epochs)
        if given["source"] is None:
            raise IpmixError("--source is required for a new build")
    if not 1 <= epochs_total <= limits.MAX_EPOCHS:
        raise IpmixError(f"a build holds 1..{limits.MAX_EPOCHS} epochs; {out} would hold {epochs_total}")

    from ipmix_cli.augment import resolve_config

    given["augment_options"] = dict(given["augment_options"] or {})
    cfg = resolve_config(preset=given["preset"], recipe=given["recipe"], views=int(given["views"]),
                         **given["augment_options"])
    from ipmix_cli.augment.bank import default_cache_dir

    if cache_dir:
        remote_copies = Path(cache_dir).expanduser()
    elif backend == "dask" and not dry_run:
        remote_copies = out / ".cache"  # Dask workers on other machines read the copies from OUT, which they share
    else:
        remote_copies = default_cache_dir()
    src = open_source(storage.localize_source(given["source"], remote_copies))
    if len(src) == 0:
        raise IpmixError(f"source {given['source']} holds no samples")
    bank_cache = cache_dir
    if bank_cache is None and backend == "dask" and not dry_run:
        # Dask workers may run on other machines: they map the bank from OUT, which they share.
        bank_cache = out / ".cache" / "mixing-bank"
    bank, mixing = _open_bank(storage.localize(given["fractals"], remote_copies, "--fractals"), cfg, given["recipe"],
                              bank_cache, log)
    fmt, q = resolve_format(given["format"], given["quality"], cfg.image_size)
    n_shards = given["shards"]
    if n_shards is None:
        n_shards = choose_shard_count(len(src), _estimate_bytes_per_sample(fmt, cfg.image_size, cfg.views))
    n_shards = int(n_shards)
    if not 1 <= n_shards <= len(src):
        raise IpmixError(f"--shards must be in 1..{len(src)} (the source size), not {n_shards}")
    if n_shards * epochs_total > limits.MAX_BUILD_SHARDS:
        raise IpmixError(f"{epochs_total} epochs x {n_shards} shards is more than {limits.MAX_BUILD_SHARDS:,} shards "
                         f"in one build; use fewer epochs or larger shards (--shards)")
    plan = Plan(len(src), n_shards, int(given["seed"]))
    fields = image_fields(cfg.views, fmt)

    config = {
        "source": given["source"], "fractals": str(given["fractals"]) if given["fractals"] else None,
        "preset": given["preset"], "recipe": given["recipe"], "views": cfg.views, "seed": int(given["seed"]),
        "image_size": cfg.image_size, "format": fmt, "quality": q, "shards": n_shards,
        "skip_bad": bool(given["skip_bad"]), "dali_index": bool(given["dali_index"]),
        "augment": cfg.to_dict(), "augment_options": given["augment_options"], "source_fingerprint": src.fingerprint,
        "mixing_fingerprint": mixing["fingerprint"],
    }
    chash = mf.config_hash(config)
    if existing is not None and existing["config_hash"] != chash:
        diffs = mf.config_differences(existing["config"], config)
        raise IpmixError(f"{out} was built with a different configuration ({'; '.join(diffs[:4]) or 'hash'}); "
                         f"use --overwrite to rebuild it, or another --out")

    ctx = BuildContext(out=str(out), config={**config, "_hash": chash}, plan=plan, source=src, bank=bank,
                       augment=cfg.to_dict(), fields=fields, fmt=fmt, quality=q, views=cfg.views,
                       image_size=cfg.image_size, preset=given["preset"], seed=int(given["seed"]),
                       skip_bad=bool(given["skip_bad"]))
    tasks = node_tasks(range(epochs_total), n_shards, int(num_nodes), int(node_rank))

    if _needs_kernels(given["recipe"]):
        log(COMPILING)
    if dry_run:
        _check_out_creatable(out)  # what the real run would hit first, without creating anything
        if existing is not None and not overwrite:
            # Finished shards (record and size match) are only re-hashed by the real run:
            # estimate the ones still to build (extend, resume), not the whole build.
            todo = sum(not shard_is_done(out, e, s, chash, deep=False) for e, s in tasks)
        else:
            todo = len(tasks)
        return _dry_run(ctx, plan, epochs_total, todo, workers, backend, pilot_samples)

    try:
        ensure_writable_dir(out)
    except FractalgenError as exc:
        raise IpmixError(str(exc)) from None
    if overwrite:
        _clear_build(out)
        existing = None
    source_info = {**src.describe(), "spec": given["source"]}
    if existing is None or existing["num_epochs"] != epochs_total:
        base = existing if existing is not None else mf.base_manifest(
            config, num_epochs=epochs_total, plan=plan, classes=src.classes, fields=fields,
            source=source_info, mixing=mixing)
        base = {**base, "num_epochs": epochs_total, "complete": False}
        mf.write_manifest(out, base)

    log(f"{len(tasks)} shard task(s) with {workers} worker(s)"
        + (f" (node {node_rank} of {num_nodes})" if num_nodes > 1 else "")
        + ("; finished shards are checked and kept" if existing is not None else ""))
    from ipmix_cli.shards.distributed import run_tasks

    try:
        stats = run_tasks(ctx, tasks, workers, backend, scheduler, progress)
    except BaseException:
        _remove_temps_of(out, tasks)  # the pool is down by now: no worker still writes them
        raise
    if stats["shards_kept"]:
        log(f"{stats['shards_kept']} shard(s) were already built and verified; built {stats['shards_built']}")

    all_done = all(mf.read_record(out, e, s) is not None
                   for e in range(epochs_total) for s in range(n_shards))
    if not all_done:
        log(f"part {node_rank} of {num_nodes} is done; when every part has finished, run "
            f"`ipmix shards combine {out}` (or re-run any part) to write the manifest")
        m = mf.load_manifest(out)
        m["part_stats"] = stats
        return m
    m = combine_parts(out, dali_index=bool(given["dali_index"]), log=log)
    m["build_stats"] = stats
    return m


def build_result(m: dict, out) -> dict:
    """What `ipmix shards build --json` prints after a build or a part of one (docs/shards.md)."""
    return {"out": str(out), "complete": bool(m["complete"]), "config_hash": m["config_hash"],
            "num_epochs": m["num_epochs"], "shards_per_epoch": m["shards_per_epoch"],
            "samples_per_shard": m["samples_per_shard"], "samples_per_epoch": m["samples_per_epoch"],
            "pads_per_epoch": m["pads_per_epoch"], "totals": m["totals"], "bad_samples": m["bad_samples"],
            "stats": m.get("build_stats") or m.get("part_stats")}


def _needs_kernels(recipe: str) -> bool:
    """Whether this build's first augmentation will compile Numba kernels (a cold cache)."""
    import ipmix_cli.augment

    return recipe != "none" and not numba_cache_is_warm(Path(ipmix_cli.augment.__file__).parent,
                                                        ("rng", "ops", "chains"))


def _check_count(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise IpmixError(f"{name} must be a whole number in {low}..{high:,}, not {value!r}")


def _check_out_creatable(out: Path) -> None:
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise IpmixError(f"cannot write to {out}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise IpmixError(f"cannot write to {out}: permission denied on {probe}")


def _dry_run(ctx: BuildContext, plan: Plan, epochs_total: int, todo: int, workers: int, backend: str,
             pilot_samples: int):
    pilot = _pilot(ctx, min(pilot_samples, plan.samples_per_shard))
    per_sample_s = pilot["seconds"] / max(1, pilot["samples"])
    shard_bytes = pilot["bytes_per_sample"] * plan.samples_per_shard + 2 * BLOCK
    total_bytes = shard_bytes * plan.shards * epochs_total
    node_samples = todo * plan.samples_per_shard
    # Local workers share this machine's cores; each starts by loading (on a first run,
    # compiling) the kernels, as the pilot's warm-up did here, all of them at once.
    parallel = min(int(workers), os.cpu_count() or 1) if backend == "joblib" else int(workers)
    startup = pilot["warmup_seconds"] if todo else 0.0
    seconds = startup + per_sample_s * node_samples / parallel
    info = {
        "dry_run": True, "source_samples": plan.n_source, "epochs": epochs_total,
        "shards_per_epoch": plan.shards, "samples_per_shard": plan.samples_per_shard,
        "samples_per_epoch": plan.samples_per_epoch, "pads_per_epoch": plan.pads_per_epoch,
        "format": ctx.fmt, "quality": ctx.quality, "fields": ctx.fields, "views": ctx.views,
        "image_size": ctx.image_size, "bytes_per_sample": pilot["bytes_per_sample"],
        "bytes_per_epoch": shard_bytes * plan.shards, "bytes_total": total_bytes,
        "pilot_samples": pilot["samples"], "pilot_seconds": pilot["seconds"],
        "tasks_this_node": todo, "estimated_seconds": seconds, "startup_seconds": startup,
        "workers": int(workers), "parallel_workers": parallel,
    }
    return info

