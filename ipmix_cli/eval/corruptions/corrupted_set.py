"""A corrupted copy of a test set in CIFAR-10-C's layout: `<corruption>.npy` (uint8
[5·N, S, S, 3], severity 1 first), `labels.npy` (int64 [5·N]) and `manifest.json` written last
(a folder with a manifest is complete; an interrupted run resumes)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from fractalgen.files import atomic_write_json, ensure_writable_dir
from ipmix_cli.common.errors import IpmixError, OptionError
from ipmix_cli.data.testset import bad_test_image_error


class _AtomicNpy:
    """An .npy file filled in place through a memory map under a temporary name, then renamed."""

    def __init__(self, path: Path, shape, dtype):
        self.path = path
        fd, self.tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=dtype, shape=shape)

    def __enter__(self):
        return self.array

    def __exit__(self, exc_type, *exc):
        try:
            if exc_type is None:
                self.array.flush()
                with open(self.tmp, "rb+") as f:
                    os.fsync(f.fileno())
        finally:
            del self.array
            if exc_type is None:
                os.replace(self.tmp, self.path)
            else:
                Path(self.tmp).unlink(missing_ok=True)
        return False


PLAN_NAME = ".ipmix-corrupt-plan.json"  # present while a set is being written


def make_corrupted_set(source, out, *, seed: int = 0, corruptions=None, image_size: int | None = None,
                       limit: int | None = None, overwrite: bool = False, progress=None,
                       profile: str | None = None) -> dict:
    """Write a CIFAR-10-C-style folder for `source` (a spec string or an opened source) into `out`.

    `profile` picks the severity table (cifar / imagenet; default by image side). Returns the
    manifest, written last to `out/manifest.json`: a folder with a manifest is complete. It
    counts, per corruption and severity, the images the corruption left unchanged. Running the
    same request again returns at once (complete) or finishes the files still missing
    (interrupted); a folder holding other data is refused unless `overwrite`.
    """
    from ipmix_cli.eval.corruptions import (SEVERITIES, _ops, corrupt_image, parse_corruptions,
                                       resolve_profile)
    from ipmix_cli.data.testset import iter_test_batches, read_test_images

    if not 0 <= int(seed) < 2**63:
        raise IpmixError(f"seed must be in 0..2**63-1, got {seed}")
    names = parse_corruptions(corruptions) if (corruptions is None or isinstance(corruptions, str)) \
        else parse_corruptions(",".join(corruptions))
    if isinstance(source, str):
        from ipmix_cli.data.sources import open_source
        spec, source = source, open_source(source)
    else:
        spec = getattr(source, "spec", type(source).__name__)
    n = len(source) if limit is None else min(len(source), int(limit))
    if n <= 0:
        raise IpmixError("the test set holds no samples")
    with bad_test_image_error():
        size = int(image_size or read_test_images(source, None, 1)[2])
    profile = resolve_profile(profile, size)
    _ops()  # the dependencies, before anything is written
    if "frost" in names:
        from ipmix_cli.eval.corruptions.ops import frost_folder
        frost_folder()
    plan = {"schema": "ipmix-corrupted", "schema_version": 2, "source": spec,
            "source_fingerprint": getattr(source, "fingerprint", None), "seed": int(seed), "samples": n,
            "image_size": size, "profile": profile, "severities": list(SEVERITIES), "corruptions": names}
    out = Path(out)
    resume = _check_output(out, plan, overwrite)
    if isinstance(resume, dict):
        return resume
    ensure_writable_dir(out)
    atomic_write_json(out / PLAN_NAME, plan)
    labels = np.asarray(source.labels[:n], dtype=np.int64)
    todo = [name for name in names if not (resume and (out / f"{name}.npy").exists())]
    with_progress = progress if progress is not None else (lambda total, desc: _NoProgress())
    with with_progress(len(todo) * n, "corrupt") as bar, bad_test_image_error():
        for name in todo:
            with _AtomicNpy(out / f"{name}.npy", (len(SEVERITIES) * n, size, size, 3), np.uint8) as stack:
                for lo, (images, _) in zip(range(0, n, 256), iter_test_batches(source, size, 256, np.arange(n))):
                    for j, image in enumerate(images):
                        for s in SEVERITIES:
                            stack[(s - 1) * n + lo + j] = corrupt_image(image, name, s, seed, lo + j, profile)
                    bar.update(len(images))
    unchanged = _count_unchanged(out, names, n, iter_test_batches(source, size, 256, np.arange(n)))
    with _AtomicNpy(out / "labels.npy", (len(SEVERITIES) * n,), np.int64) as stack:
        stack[:] = np.tile(labels, len(SEVERITIES))
    describe = source.describe() if hasattr(source, "describe") else {}
    manifest = {**plan, "source_description": json.loads(json.dumps(describe, default=str)),
                "unchanged": unchanged,
                "layout": "<corruption>.npy uint8 [5*samples, S, S, 3], severity 1 first; labels.npy int64 [5*samples]"}
    atomic_write_json(out / "manifest.json", manifest)
    (out / PLAN_NAME).unlink(missing_ok=True)
    return manifest


def _count_unchanged(out: Path, names, n: int, clean_batches) -> dict:
    """{corruption: [images identical to the clean one, per severity]}."""
    stacks = {name: np.load(out / f"{name}.npy", mmap_mode="r") for name in names}
    counts = {name: [0] * 5 for name in names}
    lo = 0
    for images, _ in clean_batches:
        for name, stack in stacks.items():
            for k in range(5):
                part = stack[k * n + lo:k * n + lo + len(images)]
                counts[name][k] += int((part == images).all(axis=(1, 2, 3)).sum())
        lo += len(images)
    return counts


def _check_output(out: Path, plan: dict, overwrite: bool):
    """The finished manifest (same request, already done), True (resume an interrupted run of
    the same request), or False (start afresh); IpmixError if `out` holds something else."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise IpmixError(f"{out} is not a folder")

    def same(path):
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        return all(old.get(k) == v for k, v in plan.items())

    from ipmix_cli.eval.corruptions import CORRUPTIONS

    ours = [out / f"{name}.npy" for name in CORRUPTIONS] + [out / "labels.npy", out / "manifest.json", out / PLAN_NAME]
    try:
        foreign_manifest = json.loads((out / "manifest.json").read_text()).get("schema") != "ipmix-corrupted"
    except FileNotFoundError:
        foreign_manifest = False
    except (OSError, ValueError, AttributeError):
        foreign_manifest = True
    if foreign_manifest:  # a shard build, say: --overwrite must not delete its manifest
        raise OptionError("{path} holds a manifest.json that is not a corrupted test set; choose another {out}", path=str(out))
    others = sorted(p.name for p in out.iterdir() if p not in ours and not p.name.startswith(".")
                    and p.suffix != ".npy")
    if others and not overwrite:  # a dataset or other work: do not write into it unasked
        raise OptionError("{path} holds other files (found {found}); choose an empty or new {out} "
                          "or pass {overwrite}", path=str(out), found=str(others[0]))
    if overwrite:
        for path in ours:
            path.unlink(missing_ok=True)
        return False
    if (out / "manifest.json").exists():
        if same(out / "manifest.json") and all((out / f"{n}.npy").exists() for n in plan["corruptions"]):
            return json.loads((out / "manifest.json").read_text())
        raise OptionError("{path} already holds a different corrupted test set; choose another {out} "
                          "or pass {overwrite}", path=str(out))
    if (out / PLAN_NAME).exists() and same(out / PLAN_NAME):
        return True
    if any(p.suffix == ".npy" for p in out.iterdir()):
        raise OptionError("{path} already holds .npy files; choose another {out} or pass {overwrite}", path=str(out))
    return False


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n=1):
        pass
