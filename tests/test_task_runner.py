"""shards.distributed with --workers N: this process and N-1 real loky workers take task groups
from one queue. Every task runs once, records reach the caller as they come, and a failure on
either side stops the other and is raised."""

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ipmix_cli.shards.distributed import run_tasks
from ipmix_cli.shards.spec import RunOptions


@dataclass
class Ctx:
    out: Path
    fail_here: bool = False  # this process's first task raises
    parent: int = 0
    config_hash: str = "0" * 64
    remote: object = None


def note_tasks(ctx, tasks, done=None, tag=""):
    """A task function as shards.build.run_tasks_in_order is one: runs tasks in order, writes a
    file per task named `<epoch>-<shard>.<pid><tag>` (so the test sees what ran, and where) and
    passes each record to `done`."""
    records = []
    for epoch, shard in tasks:
        if ctx.fail_here and os.getpid() == ctx.parent:
            raise OSError(28, "No space left on device")
        (Path(ctx.out) / f"{epoch}-{shard}.{os.getpid()}{tag}").write_text("")
        rec = {"epoch": epoch, "shard": shard, "pid": os.getpid(), "peak_rss_mb": 1.0}
        records.append(rec)
        if done is not None:
            done(rec)
    return records


def ran(out: Path) -> list[tuple[int, int, int]]:
    return sorted(tuple(int(x) for x in p.name.replace("-", ".").split(".")) for p in out.glob("*-*.*"))


@pytest.mark.parametrize("workers,warm_up", [(2, None), (3, None), (2, lambda ctx: None), (3, lambda ctx: None)])
def test_every_task_runs_once_in_this_process_and_the_pool(tmp_path, workers, warm_up):
    # with a warm-up the workers are forked from this process (on Linux), else spawned by loky
    tasks = [(e, s) for e in range(2) for s in range(20)]
    stats = run_tasks(note_tasks, Ctx(tmp_path, parent=os.getpid()), tasks,
                      RunOptions(out=tmp_path, workers=workers, progress=False), warm_up=warm_up)
    done = ran(tmp_path)
    assert [(e, s) for e, s, _ in done] == tasks  # each task exactly once
    pids = {pid for *_, pid in done}
    assert 1 <= len(pids) <= workers and sorted(pids) == stats["worker_pids"]
    assert stats["shards_built"] == len(tasks)


def test_a_failure_in_this_process_stops_the_pool_and_is_raised(tmp_path):
    tasks = [(0, s) for s in range(200)]
    ctx = Ctx(tmp_path, fail_here=True, parent=os.getpid())
    with pytest.raises(OSError, match="No space left"):
        run_tasks(note_tasks, ctx, tasks, RunOptions(out=tmp_path, workers=2, progress=False))
    done = ran(tmp_path)
    assert not [t for t in done if t[2] == os.getpid()]
    # the pool was stopped: it ran the group it had in hand (at most 8 tasks), not the 200
    assert 0 < len(done) <= 8


def test_a_failure_in_a_worker_is_raised_and_this_process_stops(tmp_path):
    tasks = [(0, s) for s in range(400)]
    ctx = Ctx(tmp_path, parent=os.getpid())
    with pytest.raises(OSError, match="No space left"):
        run_tasks(fail_in_workers, ctx, tasks, RunOptions(out=tmp_path, workers=2, progress=False))
    assert all(pid == os.getpid() for *_, pid in ran(tmp_path))  # the worker wrote nothing
    assert not [t for t in threading.enumerate() if t.name == "ipmix-build-here"]  # joined before raising


def fail_in_workers(ctx, tasks, done=None):
    """Fails in a worker (after leaving a mark); in this process, waits for that mark first, so
    the failure comes while this process still has tasks to run."""
    mark = Path(ctx.out) / "worker-failed"
    if os.getpid() != ctx.parent:
        mark.write_text("")
        raise OSError(28, "No space left on device")
    deadline = time.monotonic() + 120
    while not mark.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return note_tasks(ctx, tasks, done)


def test_workers_are_forked_only_from_a_process_with_no_other_thread(tmp_path):
    from ipmix_cli.shards import distributed

    # (other tests of the session may leave threads running: a local S3 server's, fsspec's idle loop)
    others = [t for t in threading.enumerate()
              if t is not threading.current_thread() and not t.name.startswith(distributed._FSSPEC_THREADS)]
    assert (distributed._fork_context() is not None) == (not others)
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert distributed._fork_context() is None  # a lock it holds would stay held in a child
        tasks = [(0, s) for s in range(16)]
        stats = run_tasks(note_tasks, Ctx(tmp_path, parent=os.getpid()), tasks,
                          RunOptions(out=tmp_path, workers=2, progress=False), warm_up=lambda ctx: None)
        assert [(e, s) for e, s, _ in ran(tmp_path)] == tasks and stats["shards_built"] == 16
    finally:
        release.set()
        other.join()


WARMED = []  # set by the warm-up in the process that runs the build


def warm(ctx):
    WARMED.append(True)


def note_warmth(ctx, tasks, done=None):
    """note_tasks, with whether the process running each task saw the warm-up in its file's name."""
    return note_tasks(ctx, tasks, done, tag=f".{int(bool(WARMED))}")


def test_a_fresh_process_forks_its_workers_after_the_warm_up(tmp_path):
    # a process with no other thread (as `ipmix shards build` is): the workers are forked from
    # it once warm_up ran, so they start with what it loaded
    import subprocess
    import sys

    script = ("import os, sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path\n"
              "import test_task_runner as t\n"
              "from ipmix_cli.shards.distributed import run_tasks\n"
              "from ipmix_cli.shards.spec import RunOptions\n"
              "out = Path(sys.argv[2])\n"
              "ctx = t.Ctx(out, parent=os.getpid())\n"
              "tasks = [(0, s) for s in range(64)]\n"
              "run_tasks(t.note_warmth, ctx, tasks, RunOptions(out=out, workers=2, progress=False), warm_up=t.warm)\n"
              "print(os.getpid())\n")
    res = subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent), str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    parent = int(res.stdout.split()[-1])
    seen = [p.name.split(".") for p in tmp_path.glob("0-*")]
    assert len(seen) == 64 and all(warmed == "1" for *_, warmed in seen)  # every task saw the warm-up
    # the worker got the first group before this process's thread started, so it ran tasks
    # too, and saw the warm-up: it was forked after it
    assert len({int(pid) for _, pid, _ in seen} - {parent}) == 1


def note_warmth_in_the_bucket(ctx, tasks, done=None):
    """note_warmth, and an object per task in ctx.remote (a Prefix): the store is reached from
    the process running the task."""
    tasks = list(tasks)
    for epoch, shard in tasks:
        ctx.remote.put_bytes(f"{epoch}-{shard}", b"%d" % os.getpid())
    return note_warmth(ctx, tasks, done)


def test_workers_are_forked_after_the_warm_up_when_the_out_prefix_was_listed_first(s3, tmp_path):
    # an object-store OUT is listed before the tasks run, which leaves fsspec's event loop
    # threads waiting in this process; the workers are still forked (fsspec starts a loop of
    # its own in the child), and reach the store from there
    import subprocess
    import sys
    import uuid

    bucket = f"ipmix-{uuid.uuid4().hex[:12]}"
    s3.mkdir(bucket)
    script = ("import os, sys, threading; sys.path.insert(0, sys.argv[1]); from pathlib import Path\n"
              "import test_task_runner as t\n"
              "from ipmix_cli.common.objstore import Prefix\n"
              "from ipmix_cli.shards.distributed import run_tasks\n"
              "from ipmix_cli.shards.spec import RunOptions\n"
              "out = Path(sys.argv[2])\n"
              "prefix = Prefix(sys.argv[3])\n"
              "assert prefix.listing() == {} and threading.active_count() > 1\n"
              "ctx = t.Ctx(out, parent=os.getpid(), remote=prefix)\n"
              "tasks = [(0, s) for s in range(64)]\n"
              "run_tasks(t.note_warmth_in_the_bucket, ctx, tasks, RunOptions(out=out, workers=2, progress=False),"
              " warm_up=t.warm)\n"
              "print(os.getpid())\n")
    res = subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent), str(tmp_path), f"s3://{bucket}/o"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    parent = int(res.stdout.split()[-1])
    seen = [p.name.split(".") for p in tmp_path.glob("0-*")]
    assert len(seen) == 64 and all(warmed == "1" for *_, warmed in seen)
    workers = {int(pid) for _, pid, _ in seen} - {parent}
    assert len(workers) == 1
    s3.invalidate_cache()
    written = {name.rsplit("/", 1)[1]: int(s3.cat(name)) for name in s3.find(f"{bucket}/o")}
    assert sorted(written) == sorted(f"0-{s}" for s in range(64))
    assert set(written.values()) == workers | {parent}
