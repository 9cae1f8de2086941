"""`ipmix bench build --only s3`: a 32 px JSD build on 2 workers written to an S3 API on this
machine (moto's server in a process of its own, see object_store) against the same build
written to local disk, in the same interleaved rounds. The goal is that uploading costs the
build at most 10 % of its samples per second, since each upload overlaps the worker's next
shard."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from ipmix_cli.common.errors import IpmixError

BUCKET = "ipmix-bench"
SHARDS = 16  # several per worker, so each upload can overlap the worker's next shard


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if res.returncode != 0:
        raise IpmixError(f"{' '.join(cmd[2:])} failed: {res.stderr.strip()[-400:]}")
    return dt


def measure_s3(tmp: Path, source: str, samples: int, mix: Path, repeats: int, log) -> dict:
    """Medians of samples/s of the build to local disk and to the local S3 server, and their ratio."""
    from ipmix_cli.bench import object_store
    from ipmix_cli.bench.build import build_command

    if not object_store.available():
        raise IpmixError(f"the s3 case needs {object_store.NEEDS}")
    local_out = tmp / "o-s3-local"
    args = dict(epochs=1, recipe="ipmix", views=3, workers=2)
    cmds = {"local": build_command(source, mix, local_out, **args) + ["--shards", str(SHARDS)],
            "s3": build_command(source, mix, f"s3://{BUCKET}/o", **args)
            + ["--shards", str(SHARDS), "--cache-dir", str(tmp / "staging")]}
    rates: dict = {"local": [], "s3": [], "load": []}
    with object_store.local_s3() as fs:  # sets AWS_ENDPOINT_URL and a key pair for the builds
        fs.mkdir(BUCKET)

        def clear():
            shutil.rmtree(local_out, ignore_errors=True)
            fs.invalidate_cache()
            if fs.exists(f"{BUCKET}/o"):
                fs.rm(f"{BUCKET}/o", recursive=True)

        clear()
        _timed(cmds["local"])  # loads the compiled kernels once
        for r in range(repeats):
            log(f"32 px JSD build, 2 workers, local disk vs S3 server: round {r + 1} of {repeats} ...")
            for name in ("local", "s3"):
                clear()
                rates[name].append(samples / _timed(cmds[name]))
            rates["load"].append(os.getloadavg()[0])
        clear()
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"s3_build32_jsd_w2_samples": samples, "s3_build32_rounds": repeats,
            "s3_build32_jsd_w2_local_samples_per_s": round(med["local"], 1),
            "s3_build32_jsd_w2_s3_samples_per_s": round(med["s3"], 1),
            "ratio_s3_to_local_build32_jsd_w2": round(med["s3"] / med["local"], 3),
            "s3_load_average_median": round(med["load"], 2)}
