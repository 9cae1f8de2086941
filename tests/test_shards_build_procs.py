"""Builds across processes: worker counts, node partitions, a real Dask cluster, kill -9 and
a full disk. Output bytes must not depend on any of them."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ipmix_cli.cli import main as cli
from ipmix_cli.shards import build_shards

from _shards_build_helpers import write_image_folder, write_mixing_folder

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    return write_mixing_folder(tmp_path_factory.mktemp("mix") / "fractals")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("src") / "data", per_class=7, classes=("a", "b", "c"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mix, folder):
    out = tmp_path_factory.mktemp("ref") / "out"
    build_shards(source=str(folder), fractals=mix, out=out, epochs=2, shards=4, seed=11, progress=False)
    return out


def shard_bytes(out):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("epoch-*/*.tar"))}


def manifest(out):
    return json.loads((out / "manifest.json").read_text())


def same_build(out, ref):
    assert shard_bytes(out) == shard_bytes(ref)
    a, b = manifest(out), manifest(ref)
    assert a["complete"] and a["epochs"] == b["epochs"] and a["config_hash"] == b["config_hash"]
    for e in range(2):
        assert (out / f"epoch-{e:04d}/wids-index.json").read_text() == (ref / f"epoch-{e:04d}/wids-index.json").read_text()


def test_two_workers_give_identical_bytes(tmp_path, mix, folder, reference):
    out = tmp_path / "w2"
    m = build_shards(source=str(folder), fractals=mix, out=out, epochs=2, shards=4, seed=11, workers=2,
                     progress=False)
    same_build(out, reference)
    # this process is one of the two (it builds while the pool's worker starts)
    pids = m["build_stats"]["worker_pids"]
    assert 1 <= len(pids) <= 2 and len(m["build_stats"]["peak_rss_mb_per_worker"]) == len(pids)
    assert not list((out / ".records" / "contexts").glob("*"))  # removed once the tasks are done


def test_context_pickles_left_by_a_killed_run_are_removed_when_the_build_completes(tmp_path, mix, folder):
    out = tmp_path / "w2"
    build_shards(source=str(folder), fractals=mix, out=out, epochs=2, shards=4, seed=11, progress=False, workers=2)
    contexts = out / ".records" / "contexts"
    contexts.mkdir(parents=True)
    stale = contexts / "0123456789abcdef-otherhost-4242.pkl"  # what a kill -9 of a 2-worker run leaves
    stale.write_bytes(b"\x80\x05N.")
    (out / ".records" / "epoch-0001" / "shard-00003.json").unlink()  # the killed run had one shard left
    build_shards(out=out, workers=2, progress=False)
    assert manifest(out)["complete"] and not contexts.exists()


def test_node_partitions_combine_to_identical_bytes(tmp_path, mix, folder, reference, capsys):
    out = tmp_path / "nodes"
    common = ["shards", "build", "--quiet", "--source", str(folder), "--fractals", str(mix), "--out", str(out),
              "--epochs", "2", "--shards", "4", "--seed", "11", "--num-nodes", "3"]
    for rank in (2, 0):
        assert cli.run(common + ["--node-rank", str(rank)]) == 0
        assert not manifest(out)["complete"]
    assert len(list(out.glob("epoch-*/*.tar"))) == 8 - len([t for t in range(8) if t % 3 == 1])
    assert cli.run(common + ["--node-rank", "1"]) == 0  # the last part combines
    same_build(out, reference)
    # an explicit combine is idempotent
    assert cli.run(["shards", "combine", str(out)]) == 0
    same_build(out, reference)


def test_dask_backend_on_a_local_cluster(tmp_path, mix, folder, reference):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=40) as cluster:
        out = tmp_path / "dask"
        m = build_shards(source=str(folder), fractals=mix, out=out, epochs=2, shards=4, seed=11,
                         backend="dask", scheduler=cluster.scheduler_address, progress=False)
        pids = m["build_stats"]["worker_pids"]
    same_build(out, reference)
    assert pids and os.getpid() not in pids  # the tasks ran in the cluster's worker processes
    # the workers mapped the mixing bank from OUT, the storage a cluster's machines share
    assert len(list((out / ".cache" / "mixing-bank").glob("bank-*.npy"))) == 1


def test_dask_without_scheduler_is_one_line(tmp_path, capsys):
    assert cli.run(["shards", "build", "--source", "digits", "--out", str(tmp_path / "o"), "--backend", "dask"]) == 1
    assert "--scheduler" in capsys.readouterr().err


def _cmd(folder, mix, out, *extra):
    return [sys.executable, "-m", "ipmix_cli", "shards", "build", "--quiet", "--source", str(folder),
            "--fractals", str(mix), "--out", str(out), "--epochs", "2", "--shards", "4", "--seed", "11", *extra]


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_kill_9_then_rerun_is_byte_identical(tmp_path, mix):
    # digits, 2 epochs x 32 shards: long enough (~64 tasks) to be killed in the middle
    ref = tmp_path / "ref"
    build_shards(source="digits", fractals=mix, out=ref, epochs=2, seed=3, progress=False)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "ipmix_cli", "shards", "build", "--quiet", "--source", "digits",
           "--fractals", str(mix), "--out", str(out), "--epochs", "2", "--seed", "3"]
    interrupted = []
    for wait_for in (2, 20):
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # kill once the build has written `wait_for` shard records (of 64), however long the first
        # run's kernel compile takes; never at a point chosen by the clock
        while proc.poll() is None and len(list((out / ".records").glob("epoch-*/shard-*.json"))) < wait_for:
            time.sleep(0.002)
        assert proc.poll() is None, "the build finished before the test could see its records"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # whatever survived: a shard under its final name is a whole archive
        import tarfile

        for p in out.glob("epoch-*/*.tar"):
            with tarfile.open(p) as tf:
                assert len(tf.getmembers()) == 45 * 3
        interrupted.append(not manifest(out)["complete"])
    assert any(interrupted)
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert shard_bytes(out) == shard_bytes(ref)
    assert manifest(out)["epochs"] == manifest(ref)["epochs"]
    assert not list(out.glob("epoch-*/.*.tmp"))


def _signal_state(pid: int) -> str:
    """SIGINT's mask bits and each thread's wait channel, from /proc (Linux)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            masks = [line.strip() for line in f if line.startswith(("SigBlk", "SigIgn", "SigCgt"))]
        waits = []
        for tid in sorted(os.listdir(f"/proc/{pid}/task")):
            with open(f"/proc/{pid}/task/{tid}/comm") as c, open(f"/proc/{pid}/task/{tid}/wchan") as w:
                waits.append(f"{c.read().strip()}:{w.read()}")
        return f"{', '.join(masks)} (SIGINT is bit 0x2); threads waiting in {waits}"
    except OSError as exc:
        return f"its state could not be read: {exc}"


def test_sigint_exits_130_with_resume_hint(tmp_path, mix, folder):
    import errno
    import shutil

    # One source picture is a named pipe: the build blocks reading it until this test writes.
    # Ctrl-C is sent once the build is seen waiting there, so it always lands mid-build,
    # however slow the machine (a clock-chosen moment could fall after the build had finished).
    src = tmp_path / "src"
    shutil.copytree(folder, src)
    fifo = src / "b" / "zz-pipe.png"
    os.mkfifo(fifo)
    out = tmp_path / "int"
    proc = subprocess.Popen([sys.executable, "-m", "ipmix_cli", "shards", "build", "--quiet", "--source", str(src),
                             "--fractals", str(mix), "--out", str(out), "--shards", "4"],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    writer = None
    while writer is None:
        try:  # succeeds only once the build has the pipe open for reading
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            assert exc.errno == errno.ENXIO and proc.poll() is None, exc
            time.sleep(0.005)
    try:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:  # say why: how the build holds SIGINT, where its threads wait
            state = _signal_state(proc.pid)
            proc.kill()
            proc.communicate()
            pytest.fail(f"the build did not end within 120 s of Ctrl-C; {state}")
    finally:
        os.close(writer)
    assert proc.returncode == 130 and "resume" in err, err
    assert not manifest(out)["complete"]


def test_full_disk_leaves_nothing_that_looks_done(tmp_path, mix, folder):
    out = tmp_path / "full"
    # 120 KiB file size limit: the manifest fits, the first shard (~6 MB of digits) does not
    cmd = [sys.executable, "-m", "ipmix_cli", "shards", "build", "--quiet", "--source", "digits",
           "--fractals", str(mix), "--out", str(out), "--shards", "1"]
    script = "ulimit -f 120; exec " + " ".join(f"'{a}'" for a in cmd)
    res = subprocess.run(["bash", "-c", script], env=_env(), capture_output=True, text=True, timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1, res.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "too large" in lines[0], lines
    assert not list(out.glob("epoch-*/*.tar")) and not list(out.glob("epoch-*/.*tmp"))
    assert not list((out / ".records").glob("epoch-*/*.json"))
    assert not manifest(out)["complete"]


def test_full_disk_with_two_workers_leaves_no_temporary_file(tmp_path, mix):
    # The first worker to hit the limit ends the pool; the other is stopped mid-write. Its
    # temporary shard (often empty) must not survive, nor any temporary record.
    out = tmp_path / "full2"
    cmd = [sys.executable, "-m", "ipmix_cli", "shards", "build", "--quiet", "--source", "digits",
           "--fractals", str(mix), "--out", str(out), "--shards", "8", "--epochs", "2", "--workers", "2"]
    script = "ulimit -f 300; exec " + " ".join(f"'{a}'" for a in cmd)  # 300 KiB: half a shard
    res = subprocess.run(["bash", "-c", script], env=_env(), capture_output=True, text=True, timeout=300)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1 and "too large" in lines[0], res.stderr
    assert "nothing half-written was kept" in lines[0]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not list(out.glob("epoch-*/*.tar")) and not manifest(out)["complete"]
