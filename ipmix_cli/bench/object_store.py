"""A local S3 API for `ipmix bench`: moto's server in a process of its own on 127.0.0.1, reached
the way a user reaches MinIO (AWS_ENDPOINT_URL and a key pair in the environment), so that
object-storage figures can be measured beside local-disk ones in the same run."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time

NEEDS = "s3fs and moto[server] (pip install 'ipmix[s3]' 'moto[server]')"
START_TIMEOUT_S = 60.0


def available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("s3fs", "moto", "flask"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_listening(proc: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the local S3 server did not start on port {port}") from None
            time.sleep(0.05)


class LocalS3:
    """The server's filesystem (`fs`) and its process, whose CPU time `cpu_seconds` reads."""

    def __init__(self, fs, pid: int):
        self.fs, self.pid = fs, pid

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds the server has used so far (None where /proc is missing)."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def local_s3(cores=None):
    """Yield a LocalS3: an s3fs filesystem on a fresh moto server; `cores` pins the server's
    process (so a loader pinned to one core does not share it with the server, as with a
    remote store)."""
    import s3fs

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION")}
    try:
        if cores:
            with contextlib.suppress(AttributeError, OSError):
                os.sched_setaffinity(proc.pid, cores)
        _wait_until_listening(proc, port)
        os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                          AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        s3fs.S3FileSystem.clear_instance_cache()
        yield LocalS3(s3fs.S3FileSystem(), proc.pid)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        s3fs.S3FileSystem.clear_instance_cache()
        proc.terminate()
        proc.wait()


def upload_as_built(folder, url: str) -> None:
    """Upload a local shard set to `url` as `ipmix shards build --out URL` uploads it: each shard
    in one PUT that carries its sha256 as S3's SHA-256 checksum, the manifest last."""
    import json
    from pathlib import Path

    from ipmix_cli.common.objstore import Prefix, without_payload_signing
    from ipmix_cli.shardformat.manifest import MANIFEST

    folder = Path(folder)
    digests = {s["path"]: s["sha256"] for epoch in json.loads((folder / MANIFEST).read_text())["epochs"]
               for s in epoch["shards"]}
    prefix = Prefix(url, "--out", without_payload_signing(url, None))
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel != MANIFEST:
            prefix.put_file(path, rel, sha256=digests.get(rel))
    prefix.put_file(folder / MANIFEST, MANIFEST)
