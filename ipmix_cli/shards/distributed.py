"""Running the shard tasks: in this process, in this process and local joblib (loky)
workers, or on a Dask cluster through joblib's Dask backend.

With `--workers N` this process is one of the N: it builds shards in a thread beside N-1 loky
workers, all taking tasks from one queue. On Linux the workers are forked from this process
once it has loaded the kernels, so they start building at once; elsewhere (or beside the
caller's own threads) loky starts them, and each spends about a second importing NumPy and
Numba and loading the kernels while this process builds.

Workers get the build context (source handles and the mixing bank, which refers to a
memory-mapped file) once: it is pickled into OUT/.records/contexts/ and each worker loads
it on its first task and keeps it; tasks carry only the task function (by reference), the
context path and (epoch, shard) pairs. The task function comes from the caller
(`shards.build.run_tasks_in_order`), so this module does not import the builder. When OUT
is a URL, Dask workers (which share the bucket, not a disk) read the context from the bucket.
"""

from __future__ import annotations

import itertools
import os
import pickle
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from fractalgen.files import atomic_write_bytes
from ipmix_cli.common.errors import IpmixError, OptionError
from ipmix_cli.shards import manifest as mf
from ipmix_cli.shards.spec import RunOptions

CONTEXT_DIR = "contexts"
_CONTEXTS: dict = {}


@dataclass(frozen=True)
class RemoteContext:
    """A context pickled into the bucket of a URL OUT."""

    prefix: object  # objstore.Prefix
    rel: str


def write_context(ctx, in_bucket: bool = False):
    """Pickle the context once into OUT/.records/contexts/ and return its absolute path (with
    `in_bucket`, for a URL OUT, a RemoteContext naming the object in the bucket)."""
    host = "".join(c if c.isalnum() else "-" for c in socket.gethostname())[:40]
    name = f"{ctx.config_hash[:16]}-{host}-{os.getpid()}.pkl"
    data = pickle.dumps(ctx, protocol=pickle.HIGHEST_PROTOCOL)
    if in_bucket and ctx.remote is not None:
        where = RemoteContext(ctx.remote.prefix, f"{mf.RECORDS}/{CONTEXT_DIR}/{name}")
        where.prefix.put_bytes(where.rel, data)
        return where
    folder = Path(ctx.out) / mf.RECORDS / CONTEXT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    atomic_write_bytes(path, data)
    return str(path.resolve())


def remove_contexts(out) -> None:
    """Delete every context pickle of the build in OUT: called once the build is complete, it
    also clears those a killed run (kill -9, a lost node) could not remove itself."""
    folder = Path(out) / mf.RECORDS / CONTEXT_DIR
    for path in folder.glob("*.pkl"):
        try:
            path.unlink()
        except OSError:
            pass
    try:
        folder.rmdir()
    except OSError:
        pass


def load_context(path):
    if isinstance(path, RemoteContext):
        ctx = _CONTEXTS.get(path.rel)  # the name is unique to the build and the process that wrote it
        if ctx is None:
            ctx = pickle.loads(path.prefix.cat([path.rel])[path.rel])  # written by this build
            _CONTEXTS.clear()
            _CONTEXTS[path.rel] = ctx
        return ctx
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)  # a rewritten file is a new context
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        with open(path, "rb") as f:
            ctx = pickle.load(f)  # written by this build, in OUT/.records
        _CONTEXTS.clear()
        _CONTEXTS[key] = ctx
    return ctx


def run_group_from_file(task_fn, context_path: str, tasks) -> list[dict]:
    """Worker entry point for a group of tasks: `task_fn(context, tasks)` runs them in order
    (one shard's fsync overlaps the next shard's work) and returns their records."""
    return task_fn(load_context(context_path), tasks)


def _run_group_in_pool_worker(task_fn, context_path: str, tasks) -> list[dict]:
    """`run_group_from_file` in a worker process of the build's own pool, which keeps freed
    memory for reuse as the build's main process does (a forked one has it already; a Dask
    worker is somebody else's process and keeps its settings)."""
    from ipmix_cli.common.heap import keep_freed_memory

    keep_freed_memory()
    return run_group_from_file(task_fn, context_path, tasks)


def task_groups(tasks, workers: int, most: int = 8):
    """Consecutive tasks in groups of up to `most`, at least 4 groups per worker where the
    tasks allow (so the last groups still spread over the workers); made one group at a time."""
    size = max(1, min(most, len(tasks) // (4 * max(1, workers))))
    it = iter(tasks)
    while group := list(itertools.islice(it, size)):
        yield group


def dask_client(address):
    try:
        from distributed import Client
    except ImportError:
        raise OptionError("{backend} dask needs the dask extra: pip install 'ipmix[dask]'") from None
    try:
        return Client(address, timeout=30)
    except (OSError, TimeoutError) as exc:
        raise IpmixError(f"cannot reach the Dask scheduler at {address}: {exc}") from None


def run_tasks(task_fn, ctx, tasks, run: RunOptions, warm_up=None) -> dict:
    """Run every (epoch, shard) task with `task_fn(ctx, tasks, done=None)`, which runs tasks in
    order and passes each record to `done`; returns counts, seconds, each worker's peak RSS and
    the seconds spent in each stage of a shard (summed over workers). `warm_up(ctx)`, when
    given, loads what every task needs (the kernels); with local workers on Linux it runs in
    this process before the workers are forked from it, so they start with it loaded."""
    from ipmix_cli.common.progress import Progress

    workers, backend = run.workers, run.backend

    peak, kept, t0 = {}, 0, time.perf_counter()
    stages: dict = {}
    with Progress(len(tasks), "shards", enabled=run.progress) as bar:
        def done(rec):
            nonlocal kept
            kept += bool(rec.get("skipped"))
            for stage, s in rec.get("stage_seconds", {}).items():
                stages[stage] = stages.get(stage, 0.0) + s
            peak[rec["pid"]] = max(peak.get(rec["pid"], 0), rec["peak_rss_mb"])
            bar.update(1)

        if not tasks:
            pass
        elif workers == 1 and backend == "joblib":
            task_fn(ctx, tasks, done)
        else:
            import joblib

            ctx_path = write_context(ctx, in_bucket=backend == "dask")
            try:
                if backend == "dask":
                    calls = (joblib.delayed(run_group_from_file)(task_fn, ctx_path, group)
                             for group in task_groups(tasks, 64))
                    with dask_client(run.scheduler), joblib.parallel_config(backend="dask"):
                        for recs in joblib.Parallel(n_jobs=-1, return_as="generator_unordered")(calls):
                            for rec in recs:
                                done(rec)
                else:
                    _run_here_and_in_pool(task_fn, ctx, ctx_path, tasks, workers, done, warm_up)
            finally:
                try:
                    if isinstance(ctx_path, RemoteContext):
                        ctx_path.prefix.remove([ctx_path.rel])
                    else:
                        os.unlink(ctx_path)
                except (OSError, IpmixError):
                    pass
    return {"shards_built": len(tasks) - kept, "shards_kept": kept, "seconds": time.perf_counter() - t0,
            "peak_rss_mb_per_worker": sorted(peak.values()), "worker_pids": sorted(peak),
            "stage_seconds": stages}


class _Queue:
    """Task groups handed out one at a time to this process's thread and to the pool, until
    they run out or `stopped` is set (after a failure on either side)."""

    def __init__(self, groups):
        self._groups, self._lock, self.stopped = groups, threading.Lock(), threading.Event()

    def take(self):
        with self._lock:
            return None if self.stopped.is_set() else next(self._groups, None)

    def __iter__(self):
        return iter(self.take, None)

    def until_stopped(self, group):
        """The group's tasks, ending early once stopped (the shard in hand is still finished)."""
        for task in group:
            if self.stopped.is_set():
                return
            yield task


# fsspec's event loop thread and its loop's resolver threads: a URL OUT has listed its prefix
# before the workers start, and they wait idle between requests; fsspec gives a forked child a
# loop of its own (os.register_at_fork).
_FSSPEC_THREADS = ("fsspecIO", "asyncio_")


def _fork_context():
    """A fork start method where forking is safe (Linux, and no other thread alive in this
    process but fsspec's idle ones: a lock another thread holds would stay locked in the
    child), else None (loky's own start method)."""
    others = [t for t in threading.enumerate()
              if t is not threading.current_thread() and not t.name.startswith(_FSSPEC_THREADS)]
    if not sys.platform.startswith("linux") or others:
        return None
    from joblib.externals.loky.backend.context import get_context

    with warnings.catch_warnings():  # loky warns on any fork; ours happens before any thread starts
        warnings.simplefilter("ignore", UserWarning)
        return get_context("fork")


def _run_here_and_in_pool(task_fn, ctx, ctx_path, tasks, workers: int, done, warm_up=None) -> None:
    """Run the tasks in N-1 loky workers and in a thread of this process, all taking groups
    from one queue (a worker gets its next group when it returns one, so all end together);
    each record reaches `done` (under a lock) as it is written. A failure on either side
    stops the other (the pool's workers are killed, this process's thread ends after its
    current shard) and is raised here.

    On Linux the workers are forked from this process once `warm_up` has run, before any
    thread is started: a worker then begins at once instead of spending a second importing
    NumPy and Numba and loading the kernels. Elsewhere, or when the calling program already
    runs threads of its own, they are started as loky starts them."""
    from concurrent.futures import FIRST_COMPLETED, wait

    from joblib.externals.loky import ProcessPoolExecutor

    queue = _Queue(task_groups(tasks, workers))
    lock, errors = threading.Lock(), []

    def locked_done(rec):
        with lock:
            done(rec)

    def here():
        try:
            for group in queue:
                task_fn(ctx, queue.until_stopped(group), locked_done)
        except BaseException as exc:  # raised by the main thread once the pool has stopped
            errors.append(exc)
            queue.stopped.set()

    fork = _fork_context() if warm_up is not None else None
    if fork is not None:
        warm_up(ctx)
    executor = ProcessPoolExecutor(max_workers=workers - 1, context=fork)
    running: set = set()
    thread = threading.Thread(target=here, name="ipmix-build-here", daemon=True)

    def give_one():
        group = queue.take()
        if group is not None:
            running.add(executor.submit(_run_group_in_pool_worker, task_fn, ctx_path, group))

    try:
        for _ in range(workers - 1):
            give_one()  # the first submission starts (forks) the workers
        thread.start()
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                running.discard(future)
                for rec in future.result():  # a worker's error is raised here
                    locked_done(rec)
                give_one()
    except BaseException:
        queue.stopped.set()
        executor.shutdown(wait=True, kill_workers=True)  # stopped mid-write: the caller removes their temporaries
        if thread.is_alive():
            thread.join()
        raise
    executor.shutdown(wait=True)
    if thread.ident is not None:
        thread.join()
    if errors:
        raise errors[0]
