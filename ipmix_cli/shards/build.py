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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fractalgen.errors import FractalgenError
from fractalgen.files import atomic_write_json, ensure_writable_dir, sha256_file
from ipmix_cli.common import storage
from ipmix_cli.common.errors import IpmixError, OptionError
from ipmix_cli.common.progress import COMPILING, numba_cache_is_warm
from ipmix_cli.shards import limits
from ipmix_cli.shards import manifest as mf
from ipmix_cli.shardformat.fields import FORMATS, LABEL, META
from ipmix_cli.shardformat.formats import encode_column, resolve_format
from ipmix_cli.shardformat.tarwriter import BLOCK, TarWriter
from ipmix_cli.shards.distributed import remove_contexts, run_tasks
from ipmix_cli.shards.plan import Plan, choose_shard_count, node_tasks, sample_keys, shard_name
from ipmix_cli.shards.remote_out import RemoteOut
from ipmix_cli.data.sources import BadSourceImage, Source, open_source
from ipmix_cli.shards.spec import DEFAULTS, BuildRequest, BuildSpec, RunOptions

MAX_REPLACEMENT_TRIES = 64


@dataclass
class BuildContext:
    """Everything a shard task needs. Pickled once per worker (the source and the mixing
    bank refer to files and memory maps, not pixels)."""

    out: str
    spec: BuildSpec
    config_hash: str
    plan: Plan
    source: Source
    bank: object
    remote: object = None  # a RemoteOut when OUT is a URL (out is then its local staging folder)
    worker_inputs: object = None  # a WorkerInputs: the bucket inputs Dask workers fetch for themselves

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.worker_inputs is not None:  # not the client's copies: each worker opens its own
            if self.worker_inputs.source is not None:
                state["source"] = None
            if self.worker_inputs.fractals is not None:
                state["bank"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        inputs = self.worker_inputs
        if inputs is not None and inputs.source is not None:
            self.source = inputs.open_source()
        if inputs is not None and inputs.fractals is not None:
            self.bank = inputs.open_bank()

    @property
    def image_size(self) -> int:
        return self.spec.image_size

    @property
    def seed(self) -> int:
        return self.spec.seed


def peak_rss_mb(maxrss: int | None = None, platform: str = sys.platform) -> float:
    """Peak resident memory of this process in MiB: on Linux the VmHWM of /proc/self/status,
    else getrusage's ru_maxrss (KiB on Linux, bytes on macOS). Linux carries ru_maxrss over
    fork and exec, so a process started from a big one would report the big one's size."""
    if maxrss is None:
        hwm = _vm_hwm_kib() if platform.startswith("linux") else None
        if hwm is not None:
            return hwm / 1024.0
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024.0 * 1024.0 if platform == "darwin" else 1024.0)


def _vm_hwm_kib() -> int | None:
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


# --------------------------------------------------------------------------- one shard

_AUGMENTERS: dict = {}  # per process: one Augmenter per configuration


def _augmenter(ctx: BuildContext):
    from ipmix_cli.augment import Augmenter

    key = ("aug", ctx.config_hash)
    aug = _AUGMENTERS.get(key)
    if aug is None:
        aug = _AUGMENTERS[key] = Augmenter(ctx.spec.augment, ctx.bank)
    return aug


def _kept_record(ctx: BuildContext, epoch: int, shard: int) -> dict | None:
    out = Path(ctx.out)
    if ctx.remote is not None:
        done = ctx.remote.shard_is_done(mf.read_record(out, epoch, shard), ctx.config_hash)
    else:
        done = shard_is_done(out, epoch, shard, ctx.config_hash)
    if done:
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
    per_picture = ctx.spec.crop != "pad"  # crop() takes pictures of any size; pad needs S x S
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
            if not ctx.spec.skip_bad:
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
        views = aug.make_views(images, ctx.seed, epoch, keys, cropped=ctx.spec.crop != "pad")
        t2 = clock()
        spec = ctx.spec
        columns = [(f, encode_column(views[:, v], spec.format, spec.quality)) for v, f in enumerate(spec.fields)]
        columns.append((LABEL, [b"%d" % c for c in labels[src_idx].tolist()]))
        columns.append((META, meta))
        t3 = clock()
        writer.add_samples(sample_keys(epoch, pos[sl]), columns)
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
              "bytes": w.writer.bytes, "sha256": w.writer.sha256,
              "config_hash": ctx.config_hash, "bad_samples": w.bad}
    index = None
    if ctx.spec.dali_index:  # made here, in parallel, from the shard still in the page cache
        from ipmix_cli.shards.indexes import write_dali_index

        index = write_dali_index(w.final)
        record["dali_index"] = True
    mf.write_record(Path(ctx.out), record)
    if ctx.remote is not None:  # the shard's object (and index), then its record's; the local copies go
        w.seconds["upload"] = ctx.remote.upload_shard(w.final, record, index)
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
    """The same document as `indexes.write_wids_index`, from the shards' records instead of
    reading every shard again in the combining process (at 50,000 JSD triples that re-read
    was the only serial second of a build). It lists no `md5sum` (optional in wids, which
    reads it only when asked to check): a build hashes its shards with sha256 only, and the
    index is the same bytes whether OUT is a folder or a bucket. A test holds the two writers
    to identical output."""
    from ipmix_cli.shards.indexes import WIDS_KIND

    out = Path(out)
    index_path = out / entry["index"]
    shardlist = [{"url": os.path.relpath(out / r["path"], index_path.parent).replace(os.sep, "/"),
                  "nsamples": int(r["count"]), "filesize": int(r["bytes"])} for r in records]
    index_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(index_path, {"__kind__": WIDS_KIND, "wids_version": 1, "name": name, "shardlist": shardlist})
    return index_path


def _has_index(out: Path, shard_rel: str, remote) -> bool:
    from ipmix_cli.shards.indexes import dali_index_path

    rel = dali_index_path(Path(shard_rel)).as_posix()
    return (remote.size_of(rel) is not None) if remote is not None else (out / rel).is_file()


def combine_parts(out, *, dali_index: bool | None = None, log=None, remote=None) -> dict:
    """Merge the per-shard records of every part into OUT/manifest.json, write the wids
    (and DALI) indexes and the dataset card, and mark the build complete. With `remote` (a
    RemoteOut), `out` is its staging folder: the records are synced from the bucket first
    and what is written here is uploaded, the manifest last.

    Raises IpmixError naming what is missing when some part has not finished.
    """
    out = Path(out)
    if remote is not None:
        remote.sync_records()
    shown = remote.url if remote is not None else out
    m = mf.load_manifest(out)
    if m is None:
        raise IpmixError(f"{shown} holds no manifest.json: nothing to combine (run ipmix shards build first)")
    chash, shards = m["config_hash"], m["shards_per_epoch"]
    missing, foreign, epochs, epoch_records, bad = [], [], [], [], {}
    for e in range(m["num_epochs"]):
        records = []
        for s in range(shards):
            rec = mf.read_record(out, e, s)
            ok = rec is not None and rec.get("config_hash") == chash \
                and _shard_size(out, shard_name(e, s), remote) == rec["bytes"]
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
    from ipmix_cli.shards.indexes import write_dali_index

    for entry, records in zip(epochs, epoch_records):  # named by content, not by folder
        name = f"ipmix-{chash[:12]}-epoch-{entry['epoch']:04d}"
        write_wids_index_from_records(out, entry, name, records)
    if dali_index is not None:
        m["config"]["dali_index"] = bool(dali_index)
    written = [entry["index"] for entry in epochs]
    if m["config"].get("dali_index", False):  # the indexes the workers did not write with their shards
        for records in epoch_records:
            for r in records:
                if r.get("dali_index") and _has_index(out, r["path"], remote):
                    continue
                shard = out / r["path"] if remote is None else remote.download(r["path"])
                index = write_dali_index(shard)
                if remote is not None:
                    written.append(index.relative_to(out).as_posix())
                    os.unlink(shard)
    m["epochs"] = epochs
    m["bad_samples"] = [bad[k] for k in sorted(bad)]
    m["totals"] = {"shards": sum(len(e["shards"]) for e in epochs),
                   "samples": sum(e["samples"] for e in epochs),
                   "bytes": sum(e["bytes"] for e in epochs)}
    m["complete"] = True
    write_dataset_card(out, m)
    mf.write_manifest(out, m)
    if remote is not None:  # what describes the shards goes up after them, the manifest last
        for rel in written + ["README.md", mf.MANIFEST]:
            remote.put(rel)
        remote.remove_contexts()
    remove_contexts(out)
    if log:
        log(f"complete: {m['totals']['shards']} shards, {m['totals']['samples']} samples, "
            f"{m['totals']['bytes'] / 1e6:.1f} MB in {shown}")
    return m


def combine(out, *, log=None, cache_dir=None, storage_options=None) -> dict:
    """`ipmix shards combine OUT`: combine_parts on a folder or, for a URL, in its bucket."""
    out = storage.require_local(out, "OUT", "the shard folder", remote=True)
    if storage.classify(out).kind != "url":
        return combine_parts(out, log=log)
    remote = RemoteOut(out, cache_dir, storage_options)
    return combine_parts(remote.pull(), log=log, remote=remote)


def _shard_size(out: Path, rel: str, remote=None) -> int | None:
    if remote is not None:
        return remote.size_of(rel)
    path = out / rel
    return path.stat().st_size if path.is_file() else None


# --------------------------------------------------------------------------- the steps of a build

@dataclass
class Build:
    """A resolved build: its spec, what it reads, and where OUT stands."""

    spec: BuildSpec
    plan: Plan
    source: Source
    bank: object
    mixing: dict            # the manifest's "mixing_set"
    epochs: int             # the epochs OUT holds once this run is done
    existing: dict | None   # OUT's manifest; None for a new build or one `overwrite` replaces
    overwrite: bool
    worker_inputs: object = None  # see worker_inputs.WorkerInputs


@dataclass
class Job:
    """A build ready to run: the context the workers get and this node's (epoch, shard) tasks."""

    build: Build
    ctx: BuildContext
    tasks: object


def build_shards(source=None, fractals=None, out=None, epochs=None, preset=None, recipe=None, views=None,
                 seed=None, workers=1, format=None, quality=None, shards=None, dry_run=False, overwrite=False,
                 extend_epochs=None, skip_bad=None, num_nodes=1, node_rank=0, backend="joblib", scheduler=None,
                 dali_index=None, augment=None, progress=True, log=None, pilot_samples=64, cache_dir=None,
                 storage_options=None) -> dict:
    """Build (or resume, or extend) a shard set in `out`; returns the manifest.

    Options left as None are taken from OUT's manifest when one exists (so
    `build_shards(out=OUT, extend_epochs=2)` adds two epochs with the same settings),
    otherwise from the defaults. With `dry_run` nothing is written and the plan is returned.
    `augment` holds overrides of the preset's augmentation options (see `resolve_config`).
    `cache_dir` holds the mixing bank's cache file (default: `default_cache_dir()`; with the
    Dask backend OUT/.cache/mixing-bank, since workers on other machines share OUT, not it).
    `out` may be a URL of an object store (see remote_out); `storage_options` are added to
    fsspec's options for it, and `cache_dir` then also holds the local staging folder.
    """
    if out is None:
        raise OptionError("{out} is required")
    out = storage.require_local(out, "--out", "OUT of 'shards build'", remote=True)
    remote = RemoteOut(out, cache_dir, storage_options) if storage.classify(out).kind == "url" else None
    run = RunOptions(out=Path(out) if remote is None else None, remote=remote, workers=workers,
                     backend=backend, scheduler=scheduler, num_nodes=num_nodes, node_rank=node_rank,
                     progress=progress, log=log, cache_dir=cache_dir, dry_run=dry_run, pilot_samples=pilot_samples)
    request = BuildRequest(source=source, fractals=fractals, preset=preset, recipe=recipe, views=views, seed=seed,
                           format=format, quality=quality, shards=shards, skip_bad=skip_bad, dali_index=dali_index,
                           augment_options=augment, epochs=epochs, extend_epochs=extend_epochs, overwrite=overwrite)
    run.validate()
    request.validate()
    if remote is not None:  # OUT's manifest and records, mirrored into a local staging folder
        run = replace(run, out=remote.pull(overwrite=request.overwrite, dry_run=dry_run))
    job = prepare(resolve(request, run), run)
    return run_dry(job, run) if run.dry_run else execute(job, run)


def resolve(request: BuildRequest, run: RunOptions) -> Build:
    """The request merged with OUT's manifest and the defaults, the source and the mixing set
    opened and the shard count chosen: the spec whose hash names the build. Writes nothing."""
    out = run.out
    existing = _existing_build(out, request.overwrite)
    given, epochs = _merge_options(request, run.shown, existing)
    from ipmix_cli.augment import resolve_config

    cfg = resolve_config(preset=given["preset"], recipe=given["recipe"], views=int(given["views"]),
                         **given["augment_options"])
    source, bank, mixing, worker_inputs = _open_inputs(given, cfg, run)
    fmt, quality = resolve_format(given["format"], given["quality"], cfg.image_size)
    n_shards = _shard_count(given["shards"], len(source), epochs, fmt, cfg)
    spec = BuildSpec(
        source=given["source"], fractals=str(given["fractals"]) if given["fractals"] else None,
        preset=given["preset"], recipe=given["recipe"], views=cfg.views, seed=int(given["seed"]),
        image_size=cfg.image_size, format=fmt, quality=quality, shards=n_shards, skip_bad=bool(given["skip_bad"]),
        dali_index=bool(given["dali_index"]), augment=cfg, augment_options=given["augment_options"],
        source_fingerprint=source.fingerprint, mixing_fingerprint=mixing["fingerprint"])
    if existing is not None and existing["config_hash"] != spec.config_hash:
        diffs = mf.config_differences(existing["config"], spec.config())
        raise OptionError("{path} was built with a different configuration ({diffs}); use {overwrite} to rebuild "
                          "it, or another {out}", path=str(run.shown), diffs="; ".join(diffs[:4]) or "hash")
    return Build(spec=spec, plan=Plan(len(source), n_shards, spec.seed), source=source, bank=bank, mixing=mixing,
                 epochs=epochs, existing=existing, overwrite=request.overwrite, worker_inputs=worker_inputs)


def prepare(build: Build, run: RunOptions) -> Job:
    """The workers' context and this node's tasks. Writes nothing."""
    ctx = BuildContext(out=str(run.out), spec=build.spec, config_hash=build.spec.config_hash, plan=build.plan,
                       source=build.source, bank=build.bank, remote=run.remote, worker_inputs=build.worker_inputs)
    tasks = node_tasks(range(build.epochs), build.spec.shards, int(run.num_nodes), int(run.node_rank))
    if _needs_kernels(build.spec.recipe):
        run.say(COMPILING)
    return Job(build, ctx, tasks)


def run_dry(job: Job, run: RunOptions) -> dict:
    """The plan, the bytes on disk and a time estimate from a timed pilot; writes nothing."""
    build, out = job.build, run.out
    _check_out_creatable(out)  # what the real run would hit first, without creating anything
    if build.existing is not None:
        # Finished shards (record and size match) are only re-hashed by the real run:
        # estimate the ones still to build (extend, resume), not the whole build.
        todo = sum(not (shard_is_done(out, e, s, job.ctx.config_hash, deep=False) if run.remote is None else
                        run.remote.shard_is_done(mf.read_record(out, e, s), job.ctx.config_hash))
                   for e, s in job.tasks)
    else:
        todo = len(job.tasks)
    return _estimate(job.ctx, build, todo, run)


def execute(job: Job, run: RunOptions) -> dict:
    """Run this node's tasks into OUT; the manifest is combined and marked complete when every
    part's shards are recorded. Returns the manifest."""
    build, out, spec = job.build, run.out, job.build.spec
    try:
        ensure_writable_dir(out)
    except FractalgenError as exc:
        raise IpmixError(str(exc)) from None
    if build.overwrite:
        _clear_build(out)
    existing = build.existing
    if existing is None or existing["num_epochs"] != build.epochs:
        base = existing if existing is not None else mf.base_manifest(
            spec.config(), num_epochs=build.epochs, plan=build.plan, classes=build.source.classes,
            fields=spec.fields, source={**build.source.describe(), "spec": spec.source}, mixing=build.mixing)
        mf.write_manifest(out, {**base, "num_epochs": build.epochs, "complete": False})
        if run.remote is not None:
            run.remote.put(mf.MANIFEST)

    nodes = f" (node {run.node_rank} of {run.num_nodes})" if run.num_nodes > 1 else ""
    run.say(f"{len(job.tasks)} shard task(s) with {run.workers} worker(s)" + nodes
            + ("; finished shards are checked and kept" if existing is not None else ""))
    try:
        stats = run_tasks(run_tasks_in_order, job.ctx, job.tasks, run, warm_up=load_kernels)
    except BaseException:
        _remove_temps_of(out, job.tasks)  # the pool is down by now: no worker still writes them
        raise
    if stats["shards_kept"]:
        run.say(f"{stats['shards_kept']} shard(s) were already built and verified; built {stats['shards_built']}")

    if run.remote is not None:
        run.remote.sync_records()
    all_done = all(mf.read_record(out, e, s) is not None for e in range(build.epochs) for s in range(spec.shards))
    if not all_done:
        run.say(f"part {run.node_rank} of {run.num_nodes} is done; when every part has finished, run "
                f"`ipmix shards combine {run.shown}` (or re-run any part) to write the manifest")
        m = mf.load_manifest(out)
        m["part_stats"] = stats
        return m
    m = combine_parts(out, dali_index=spec.dali_index, log=run.log, remote=run.remote)
    m["build_stats"] = stats
    return m


def build_result(m: dict, out) -> dict:
    """What `ipmix shards build --json` prints after a build or a part of one (docs/shards.md)."""
    return {"out": str(out), "complete": bool(m["complete"]), "config_hash": m["config_hash"],
            "num_epochs": m["num_epochs"], "shards_per_epoch": m["shards_per_epoch"],
            "samples_per_shard": m["samples_per_shard"], "samples_per_epoch": m["samples_per_epoch"],
            "pads_per_epoch": m["pads_per_epoch"], "totals": m["totals"], "bad_samples": m["bad_samples"],
            "stats": m.get("build_stats") or m.get("part_stats")}


# --------------------------------------------------------------------------- resolving, in parts

def _merge_options(request: BuildRequest, out, existing: dict | None) -> tuple[dict, int]:
    """The spec's options (those not given taken from OUT's manifest, or the defaults for a new
    build) and the number of epochs OUT will hold."""
    given = request.given()
    epochs, extend = request.epochs, request.extend_epochs
    if existing is not None:
        old = existing["config"]
        given = {k: old.get(k) if v is None else v for k, v in given.items()}
        on_disk = existing["num_epochs"]
        if extend:
            if epochs is not None and epochs != on_disk:
                raise OptionError("give either {epochs} or {extend_epochs}, not both")
            total = on_disk + int(extend)
        else:
            total = on_disk if epochs is None else int(epochs)
            if total > on_disk:
                raise OptionError("{path} holds a build of {on_disk} epoch(s), not {total}; use {extend_epochs} "
                                  "{more} to add epochs", path=str(out), on_disk=on_disk, total=total,
                                  more=total - on_disk)
            if total < on_disk:
                raise OptionError("{path} holds a build of {on_disk} epoch(s), not {total}; use {overwrite} to "
                                  "rebuild with fewer", path=str(out), on_disk=on_disk, total=total)
    else:
        if extend:
            raise OptionError("{extend_epochs} needs an existing build in {path}", path=str(out))
        for k in ("preset", "recipe", "views", "seed"):
            if given[k] is None:
                given[k] = DEFAULTS[k]
        given["skip_bad"] = bool(given["skip_bad"])
        given["dali_index"] = bool(given["dali_index"])
        total = DEFAULTS["epochs"] if epochs is None else int(epochs)
        if given["source"] is None:
            raise OptionError("{source} is required for a new build")
    if not 1 <= total <= limits.MAX_EPOCHS:
        raise IpmixError(f"a build holds 1..{limits.MAX_EPOCHS} epochs; {out} would hold {total}")
    given["augment_options"] = dict(given["augment_options"] or {})
    return given, total


def _open_inputs(given: dict, cfg, run: RunOptions):
    """The source, the mixing bank, the manifest's "mixing_set" entry and the WorkerInputs (or
    None). Sources and mixing sets in object storage are copied to a local folder first; Dask
    workers of a URL OUT fetch their own copies (see worker_inputs)."""
    from ipmix_cli.common.cachedir import default_cache_dir

    out, cache_dir = run.out, run.cache_dir
    if cache_dir:
        copies = Path(cache_dir).expanduser()
    elif run.shares_out_with_workers:
        copies = out / ".cache"
    else:
        copies = default_cache_dir()
    local_source = storage.localize_source(given["source"], copies, kinds=storage.BUILD_SOURCE_KINDS)
    source = open_source(local_source)
    if len(source) == 0:
        raise IpmixError(f"source {given['source']} holds no samples")
    bank_cache = cache_dir
    if bank_cache is None and run.shares_out_with_workers:
        bank_cache = out / ".cache" / "mixing-bank"
    fractals = storage.localize(given["fractals"], copies, "--fractals")
    bank, mixing = _open_bank(fractals, cfg, given["recipe"], bank_cache, run.log)
    bank_from_bucket = bank is not None and fractals != given["fractals"]  # read from a local copy
    if bank_from_bucket:
        mixing["path"] = str(given["fractals"])  # the manifest names the prefix, not this machine's copy
    inputs = None
    if run.backend == "dask" and run.remote is not None and not run.dry_run:  # no disk shared with the workers
        from ipmix_cli.shards.worker_inputs import BucketInput, WorkerInputs

        from_source = BucketInput.of("--source", given["source"], local_source) if local_source != given["source"] \
            else None
        from_fractals = BucketInput.of("--fractals", str(given["fractals"]), str(fractals)) \
            if bank_from_bucket else None
        if from_source or from_fractals:
            inputs = WorkerInputs(from_source, from_fractals, cfg.mixing_size,
                                  str(cache_dir) if cache_dir else None)
        if bank is not None and from_fractals is None:
            bank = type(bank)(np.array(bank.pixels), bank.fingerprint)  # in memory: it travels in the context
    return source, bank, mixing, inputs


def _shard_count(shards, n_source: int, epochs: int, fmt: str, cfg) -> int:
    if shards is None:
        shards = choose_shard_count(n_source, _estimate_bytes_per_sample(fmt, cfg.image_size, cfg.views))
    shards = int(shards)
    if not 1 <= shards <= n_source:
        raise OptionError("{shards} must be in 1..{n} (the source size), not {given}", n=n_source, given=shards)
    if shards * epochs > limits.MAX_BUILD_SHARDS:
        raise OptionError("{epochs_n} epochs x {shards_n} shards is more than {most} shards in one build; use fewer "
                          "epochs or larger shards ({shards})", epochs_n=epochs, shards_n=shards,
                          most=f"{limits.MAX_BUILD_SHARDS:,}")
    return shards


def _needs_bank(recipe: str) -> bool:
    from ipmix_cli.augment.presets import MIXING_RECIPES

    return recipe in MIXING_RECIPES


def _open_bank(fractals, cfg, recipe, cache_dir=None, log=None):
    from ipmix_cli.augment import MixingBank

    if not _needs_bank(recipe):
        return None, {"path": str(fractals) if fractals else None, "fingerprint": None, "size": 0}
    if fractals is None:
        raise OptionError("recipe {recipe_name} mixes with pictures: give the mixing set with {fractals} DIR",
                          recipe_name=recipe)
    if not Path(fractals).exists():
        raise IpmixError(f"fractal folder not found: {fractals}")
    if not Path(fractals).is_dir():
        raise OptionError("{fractals} {path} is a file; give the folder of mixing pictures", path=str(fractals))
    bank = MixingBank.from_folder(fractals, cfg, cache_dir=cache_dir)
    if log:
        log(bank.describe())
    return bank, {"path": str(fractals), "fingerprint": bank.fingerprint, "size": len(bank)}


def _existing_build(out: Path, overwrite: bool):
    """The manifest of the build in OUT (None for a new or overwritten build); refuses to
    touch a folder that holds something else."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise OptionError("{out} {path} exists and is not a folder", path=str(out))
    try:
        existing = mf.load_manifest(out)
    except IpmixError:
        if not overwrite or not _looks_like_ipmix_manifest(out / mf.MANIFEST):
            raise
        existing = None  # an unreadable or older ipmix manifest: `overwrite` replaces it
    is_build = (out / mf.MANIFEST).exists() or (out / mf.RECORDS).exists()
    if not is_build:
        try:
            stray = [p.name for p in out.iterdir() if not p.name.startswith(".")]
        except OSError as exc:
            raise OptionError("cannot read {out} {path}: {why}", path=str(out), why=exc.strerror or exc) from None
        if stray:
            raise OptionError("{out} {path} is not empty and holds no ipmix build (found {name}); choose an empty "
                              "or new folder", path=str(out), name=stray[0])
    return None if overwrite else existing


def _looks_like_ipmix_manifest(path: Path) -> bool:
    try:
        return b'"ipmix-shards"' in path.read_bytes()[:1 << 20] or path.stat().st_size == 0
    except OSError:
        return False


def _clear_build(out: Path) -> None:
    for p in list(out.glob("epoch-[0-9][0-9][0-9][0-9]")) + [out / mf.RECORDS]:
        if p.is_dir():
            shutil.rmtree(p)
    for p in (out / mf.MANIFEST, out / "README.md"):
        if p.exists():
            p.unlink()


def _needs_kernels(recipe: str) -> bool:
    """Whether this build's first augmentation will compile Numba kernels (a cold cache)."""
    import ipmix_cli.augment

    return recipe != "none" and not numba_cache_is_warm(Path(ipmix_cli.augment.__file__).parent,
                                                        ("rng", "ops", "chains"))


def _check_out_creatable(out: Path) -> None:
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise IpmixError(f"cannot write to {out}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise IpmixError(f"cannot write to {out}: permission denied on {probe}")


# --------------------------------------------------------------------------- the dry run's estimate

def _estimate_bytes_per_sample(fmt: str, image_size: int, views: int) -> float:
    raw = image_size * image_size * 3
    member = FORMATS[fmt].raw_ratio * raw + (128 if fmt == "npy" else 0)
    return views * (member + BLOCK + BLOCK / 2) + 2 * (BLOCK + BLOCK)


class _Null:
    def write(self, data):
        return len(data)


def load_kernels(ctx: BuildContext, samples: int = 4) -> None:
    """Make a few samples of the first shard and drop them: loads (or compiles) every kernel a
    shard task calls, and reads the first source pictures."""
    encode_shard(ctx, 0, 0, TarWriter(_Null()), [], limit=max(1, samples))


def _pilot(ctx: BuildContext, samples: int) -> dict:
    """Time a few samples end to end (read, augment, encode, tar) without writing a file."""
    bad: list = []
    t0 = time.perf_counter()
    load_kernels(ctx, min(4, samples))
    warmup = time.perf_counter() - t0
    writer = TarWriter(_Null())
    t0 = time.perf_counter()
    n = encode_shard(ctx, 0, 0, writer, bad, limit=samples)
    dt = time.perf_counter() - t0
    return {"samples": n, "seconds": dt, "warmup_seconds": warmup, "bytes_per_sample": writer.bytes / max(1, n)}


def _estimate(ctx: BuildContext, build: Build, todo: int, run: RunOptions) -> dict:
    plan, spec = build.plan, build.spec
    pilot = _pilot(ctx, min(run.pilot_samples, plan.samples_per_shard))
    per_sample_s = pilot["seconds"] / max(1, pilot["samples"])
    shard_bytes = pilot["bytes_per_sample"] * plan.samples_per_shard + 2 * BLOCK
    total_bytes = shard_bytes * plan.shards * build.epochs
    node_samples = todo * plan.samples_per_shard
    # Local workers share this machine's cores; each starts by loading (on a first run,
    # compiling) the kernels, as the pilot's warm-up did here, all of them at once.
    workers = int(run.workers)
    parallel = min(workers, os.cpu_count() or 1) if run.backend == "joblib" else workers
    startup = pilot["warmup_seconds"] if todo else 0.0
    seconds = startup + per_sample_s * node_samples / parallel
    return {
        "dry_run": True, "source_samples": plan.n_source, "epochs": build.epochs,
        "shards_per_epoch": plan.shards, "samples_per_shard": plan.samples_per_shard,
        "samples_per_epoch": plan.samples_per_epoch, "pads_per_epoch": plan.pads_per_epoch,
        "format": spec.format, "quality": spec.quality, "fields": spec.fields, "views": spec.views,
        "image_size": spec.image_size, "bytes_per_sample": pilot["bytes_per_sample"],
        "bytes_per_epoch": shard_bytes * plan.shards, "bytes_total": total_bytes,
        "pilot_samples": pilot["samples"], "pilot_seconds": pilot["seconds"],
        "tasks_this_node": todo, "estimated_seconds": seconds, "startup_seconds": startup,
        "workers": workers, "parallel_workers": parallel,
    }
