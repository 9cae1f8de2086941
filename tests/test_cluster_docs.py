"""docs/cluster.md's sbatch array build, run as written (bash, SLURM's array variables set,
two tasks), against a real S3 API (moto's server, conftest.s3), then its combine block."""

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ipmix_cli.cli import main as cli

from _shards_build_helpers import write_mixing_folder

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "cluster.md"


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def run_bash(script: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.kernels
def test_the_sbatch_array_script_builds_into_the_bucket_and_combine_finishes(s3, tmp_path):
    build_script, combine_script = bash_blocks(DOC.read_text())[:2]
    assert "#SBATCH --array=" in build_script and "ipmix shards combine" in combine_script
    mixing = write_mixing_folder(tmp_path / "mixing")
    bucket = f"ipmix-{uuid.uuid4().hex[:12]}"
    s3.mkdir(bucket)
    s3.put(str(mixing), f"{bucket}/fractals", recursive=True)
    out = f"s3://{bucket}/shards"
    settings = {"SOURCE": "digits", "FRACTALS": f"s3://{bucket}/fractals", "OUT": out, "PRESET": "cifar",
                "EPOCHS": "2", "SHARDS": "3", "TMPDIR": str(tmp_path)}
    env = {**os.environ, **settings, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_CPUS_PER_TASK": "1"}

    first = run_bash(build_script, {**env, "SLURM_ARRAY_TASK_ID": "11"})
    assert first.returncode == 0, first.stderr
    assert "--node-rank 1 from SLURM_ARRAY_TASK_ID=11 - SLURM_ARRAY_TASK_MIN=10" in first.stderr
    s3.invalidate_cache()
    assert b'"complete": false' in s3.cat(f"{bucket}/shards/manifest.json")
    second = run_bash(build_script, {**env, "SLURM_ARRAY_TASK_ID": "10"})
    assert second.returncode == 0, second.stderr
    done = run_bash(combine_script, env)
    assert done.returncode == 0, done.stderr
    assert f"{out}: complete, 6 shards" in done.stdout

    reference = tmp_path / "reference"
    assert cli.run(["shards", "build", "--source", "digits", "--fractals", str(mixing), "--out", str(reference),
                    "--preset", "cifar", "--epochs", "2", "--shards", "3", "--quiet"]) == 0
    s3.invalidate_cache()
    compared = 0
    for path in sorted(reference.rglob("*")):
        rel = path.relative_to(reference).as_posix()
        # the card and the manifest name where the mixing set was read from (a folder, a URL)
        if path.is_file() and not rel.startswith(".records/") and rel not in ("README.md", "manifest.json"):
            assert s3.cat(f"{bucket}/shards/{rel}") == path.read_bytes(), rel
            compared += 1
    assert compared == 6 + 2  # shards and wids indexes
    built, local = json.loads(s3.cat(f"{bucket}/shards/manifest.json")), json.loads((reference / "manifest.json").read_text())
    assert built["complete"] and built["config"]["fractals"] == f"s3://{bucket}/fractals"
    for m in (built, local):
        del m["config"]["fractals"], m["mixing_set"]["path"]
    assert built == local
