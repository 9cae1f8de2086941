"""`ipmix bench build --only s3`: the 32 px JSD build of the epoch32 case (same samples and
epochs, 2 workers) written to an S3 API on this machine (moto's server in a process of its
own, see object_store) against the same build written to local disk, in the same interleaved
rounds. The goal is that uploading costs the build at most 10 % of its samples per second,
since each upload overlaps the worker's next shard.

Each run is timed as a whole process (start-up, listing, every upload, the manifest), and its
CPU seconds are taken apart: the build's own processes (what a store on other machines would
cost this machine) and the server's (which, here, takes the cores the workers need)."""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from ipmix_cli.common.errors import IpmixError

BUCKET = "ipmix-bench"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(cmd: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of the command as a process, its workers included."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    dt, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if res.returncode != 0:
        raise IpmixError(f"{' '.join(cmd[2:])} failed: {res.stderr.strip()[-400:]}")
    return dt, cpu


def measure_s3(tmp: Path, source: str, samples: int, epochs: int, mix: Path, repeats: int, log) -> dict:
    """Medians of samples/s (wall and per CPU-second of the build's processes) of the build to
    local disk and to the local S3 server, their ratios, and the server's CPU seconds per run."""
    from ipmix_cli.bench import object_store
    from ipmix_cli.bench.build import build_command

    if not object_store.available():
        raise IpmixError(f"the s3 case needs {object_store.NEEDS}")
    total = samples * epochs
    local_out = tmp / "o-s3-local"
    args = dict(epochs=epochs, recipe="ipmix", views=3, workers=2)
    cmds = {"local": build_command(source, mix, local_out, **args),
            "s3": build_command(source, mix, f"s3://{BUCKET}/o", **args) + ["--cache-dir", str(tmp / "staging")]}
    runs: dict = {k: [] for k in ("local", "s3", "local_cpu", "s3_cpu", "server_cpu", "load")}
    with object_store.local_s3() as server:  # sets AWS_ENDPOINT_URL and a key pair for the builds
        fs = server.fs
        fs.mkdir(BUCKET)

        def clear():  # the server keeps objects in memory: each build's go before the next
            shutil.rmtree(local_out, ignore_errors=True)
            fs.invalidate_cache()
            if fs.exists(f"{BUCKET}/o"):
                fs.rm(f"{BUCKET}/o", recursive=True)

        clear()
        _timed(cmds["local"])  # loads the compiled kernels once
        shard_bytes = sum(p.stat().st_size for p in local_out.rglob("*.tar"))
        for r in range(repeats):
            log(f"32 px JSD build, 2 workers, local disk vs S3 server: round {r + 1} of {repeats} ...")
            for name in ("local", "s3"):
                clear()
                before = server.cpu_seconds()
                wall, cpu = _timed(cmds[name])
                runs[name].append(total / wall)
                runs[f"{name}_cpu"].append(total / cpu)
                if name == "s3" and before is not None:
                    runs["server_cpu"].append(server.cpu_seconds() - before)
            runs["load"].append(os.getloadavg()[0])
        clear()
    med = {k: statistics.median(v) if v else None for k, v in runs.items()}
    fig = {"s3_build32_jsd_w2_samples": total, "s3_build32_rounds": repeats,
           "s3_build32_shard_bytes": shard_bytes,
           "s3_build32_jsd_w2_local_samples_per_s": round(med["local"], 1),
           "s3_build32_jsd_w2_s3_samples_per_s": round(med["s3"], 1),
           "ratio_s3_to_local_build32_jsd_w2": round(med["s3"] / med["local"], 3),
           # per CPU-second of the build's own processes: the ratio with the server elsewhere
           "s3_build32_jsd_w2_local_cpu_samples_per_s": round(med["local_cpu"], 1),
           "s3_build32_jsd_w2_s3_cpu_samples_per_s": round(med["s3_cpu"], 1),
           "ratio_s3_to_local_build32_jsd_w2_cpu": round(med["s3_cpu"] / med["local_cpu"], 3),
           "s3_load_average_median": round(med["load"], 2)}
    if med["server_cpu"] is not None:
        fig.update({"s3_server_cpu_seconds_per_build": round(med["server_cpu"], 2),
                    "s3_server_cpu_ms_per_mb": round(1e3 * med["server_cpu"] / (shard_bytes / 1e6), 2)})
    return fig
