"""`ipmix demo`: the whole job end to end on scikit-learn's handwritten digits.

Each step is an ordinary `ipmix` command, printed before it runs, so the demo doubles as a
worked example. Re-running the demo resumes: finished steps are skipped.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path

import click

from ipmix_cli.cli.params import LocalPath
from ipmix_cli.common.errors import IpmixError

# Small enough for a few minutes on 2 CPU cores, large enough for the comparison to mean something.
TRAIN_EPOCHS = 30
MATERIALIZED_EPOCHS = 15  # echo factor 2: the spec measured no loss at E/K = 2
# (row name, recipe, views): plain crop+flip, one IPMix view, and the JSD triple the paper used.
VARIANTS = (("none", "none", 1), ("ipmix", "ipmix", 1), ("ipmix-jsd", "ipmix", 3))
FRACTALS_PER_FAMILY = 48
# The packages the table depends on (constraints.txt pins them; torch comes from the Makefile).
VERSIONED = ("numpy", "pillow", "numba", "llvmlite", "scikit-learn", "scipy", "scikit-image", "torch")
# Training on a CPU is bit-for-bit repeatable on one machine, but its float sums depend on the
# number of threads and on the vector instructions torch's kernels pick (AVX-512 or AVX2): the
# same run on an AVX-512 and an AVX2 machine ends with other weights. The demo fixes both, so
# that every x86-64 machine prints the README's table. The variables act only if set before
# torch loads (ipmix demo imports torch only when it trains).
TRAIN_THREADS = 1
CPU_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}


def pin_cpu_kernels() -> None:
    """Ask torch, oneDNN and MKL for their AVX2 code paths (unless the user chose others)."""
    if "torch" not in sys.modules:
        for name, value in CPU_KERNELS.items():
            os.environ.setdefault(name, value)


def versions() -> str:
    """One line: Python, the version of each package the demo's numbers depend on, and the CPU
    kernels torch uses."""
    found = []
    for name in VERSIONED:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    line = f"python {platform.python_version()}, " + ", ".join(found)
    try:
        import torch
    except ImportError:
        return line
    return f"{line}; torch CPU kernels {torch.backends.cpu.get_cpu_capability()}, {TRAIN_THREADS} thread"


def _step(argv: list[str], done: Path | None = None) -> None:
    """Run one ipmix command in this process, unless `done` shows it already finished."""
    from ipmix_cli.cli.main import run

    click.echo(f"\n$ ipmix {shlex.join(argv)}", err=True)
    if done is not None and done.exists():
        click.echo(f"  already done ({done.name} exists), skipped", err=True)
        return
    t0 = time.perf_counter()
    code = run(argv)
    if code != 0:
        raise IpmixError(f"demo step failed with exit code {code}: ipmix {shlex.join(argv)}")
    click.echo(f"  done in {time.perf_counter() - t0:.1f} s", err=True)


def _train_args(shards: Path, run: Path, model: str, seed: int, workers: int, epochs: int) -> list[str]:
    args = ["train", "--shards", str(shards), "--model", model, "--epochs", str(epochs),
            "--out", str(run), "--batch-size", "64", "--lr", "0.05", "--seed", str(seed),
            "--workers", str(min(workers, 1)), "--test", "digits:test", "--log-every", "100",
            "--threads", str(TRAIN_THREADS)]
    if (run / "checkpoint.pt").exists():
        args.append("--resume")
    return args


def comparison_table(results: dict[str, dict], data_wait: dict[str, float]) -> str:
    """Rows: recipes; columns: the figures the paper reports, and the share of training step time
    spent waiting for shards, in percent."""
    head = (f"{'recipe':<11}{'clean err %':>12}{'corr. err %':>12}{'clean RMS %':>12}{'corr. RMS %':>12}"
            f"{'data-wait %':>12}")
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        c, k = r["clean"], r["corruption"]
        lines.append(f"{name:<11}{100 * c['error']:>12.2f}{100 * k['error']:>12.2f}"
                     f"{100 * c['rms_calibration_error']:>12.2f}{100 * k['rms_calibration_error']:>12.2f}"
                     f"{100 * data_wait[name]:>12.1f}")
    return "\n".join(lines)


def mean_data_wait(run: Path) -> float:
    """Mean over the epochs of the share of step time the run waited for data."""
    waits = json.loads((run / "summary.json").read_text()).get("data_wait_per_epoch") or []
    waits = [w for w in waits if w is not None]
    return sum(waits) / len(waits) if waits else float("nan")


def run_demo(out: Path, seed: int = 0, workers: int = 2, model: str = "small-cnn", *,
             train_epochs: int = TRAIN_EPOCHS, materialized_epochs: int = MATERIALIZED_EPOCHS,
             fractals_per_family: int = FRACTALS_PER_FAMILY, test_limit: int | None = None) -> dict[str, dict]:
    """Run every step (skipping finished ones) and return the evaluation of each recipe.
    `test_limit` keeps only the first test samples (for a quick check of the pipeline)."""
    out.mkdir(parents=True, exist_ok=True)
    fractals, corrupted = out / "fractals", out / "digits-c"
    started = time.perf_counter()
    pin_cpu_kernels()
    environment = versions()
    click.echo(f"versions: {environment}", err=True)

    n = str(fractals_per_family)
    _step(["fractals", "render", str(fractals), "--escape", n, "--ifs", n, "--size", "128",
           "--seed", str(seed), "--workers", str(workers)])
    _step(["fractals", "preview", str(fractals), "--out", str(out / "fractals.png")])
    limit = ["--limit", str(test_limit)] if test_limit else []
    _step(["corrupt", "--source", "digits:test", "--out", str(corrupted), "--seed", str(seed), *limit],
          done=corrupted / "labels.npy")

    results, data_wait = {}, {}
    for name, recipe, views in VARIANTS:
        shards, run = out / f"shards-{name}", out / f"run-{name}"
        _step(["shards", "build", "--source", "digits", "--fractals", str(fractals), "--out", str(shards),
               "--epochs", str(materialized_epochs), "--preset", "cifar", "--recipe", recipe,
               "--views", str(views), "--seed", str(seed), "--workers", str(workers), "--quiet"])
        _step(["shards", "preview", str(shards), "--out", str(out / f"shards-{name}.png"), "--n", "24"])
        _step(_train_args(shards, run, model, seed, workers, train_epochs), done=run / "summary.json")
        report = out / f"eval-{name}.json"
        _step(["eval", "--checkpoint", str(run), "--test", "digits:test", "--corrupted", str(corrupted),
               "--out", str(report), *limit], done=report)
        results[name] = json.loads(report.read_text())
        data_wait[name] = mean_data_wait(run)

    table = comparison_table(results, data_wait)
    (out / "comparison.txt").write_text(f"{table}\n\n{environment}\n")
    click.echo(f"\nPlain crop+flip vs IPMix (one view) vs IPMix with the JSD loss on digits ({train_epochs} epochs of {model}, "
               f"{materialized_epochs} materialized epochs, seed {seed}):\n")
    click.echo(table)
    click.echo(f"\n{environment}")
    click.echo(f"\nfinished in {time.perf_counter() - started:.0f} s; outputs in {out}/:\n"
               f"  fractals/ and fractals.png        the mixing set and its contact sheet\n"
               f"  shards-*/                         WebDataset shards (manifest.json, README.md)\n"
               f"  shards-*.png                      what the model saw\n"
               f"  run-*/                            model.pt + model.json, checkpoint, log.jsonl, curves.png, summary.json\n"
               f"  digits-c/                         the corrupted test set (19 corruptions x 5 severities)\n"
               f"  eval-*.json, comparison.txt       the evaluation, this table and the versions")
    return results


@click.command("demo")
@click.option("--out", default="demo-out", show_default=True, type=LocalPath("the demo folder", file_okay=False),
              help="Where every output of the demo goes.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1))
@click.option("--model", default="small-cnn", show_default=True, help="Model trained on both shard sets.")
def demo_command(out, seed, workers, model):
    """Render fractals, build plain, IPMix and IPMix-triple shards of the digits dataset, train
    the same model on each, evaluate them on clean and corrupted digits, and compare."""
    run_demo(Path(out), seed=seed, workers=workers, model=model)
